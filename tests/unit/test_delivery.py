"""Tests for siemhub.collector.delivery: batching, the queue bound, retries with backoff, drop
accounting, shutdown and isolation, with a fake exporter that exists only in this file."""
from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable

import pytest

from siemhub.collector import delivery
from siemhub.collector.delivery import Backoff, ExporterRunner
from siemhub.collector.event import SCHEMA_VERSION, Event, Node
from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import (
    DONE,
    BatchConfig,
    Exporter,
    ExporterConfig,
    Outcome,
    QueueConfig,
    RetryConfig,
    SendResult,
)

_ids = itertools.count(1)


def events(n: int) -> list[Event]:
    return [Event(id=f"e{next(_ids)}", time="2024-05-01T12:00:00.000000000Z", type="process_exec",
                  node=Node(name="n1"), schema_version=SCHEMA_VERSION, severity="info") for _ in range(n)]


def ids(evs: list[Event]) -> list[str]:
    return [e.id for e in evs]


def wait_until(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


RETRY_503 = SendResult(Outcome.RETRY, "http_503")


class FakeExporter(Exporter):
    """encode -> list of ids; send -> whatever `on_send(ids, attempt)` returns or raises."""

    def __init__(self, name: str = "fake", *, batch: int = 100, max_wait: float = 0.02, queue: int = 10_000,
                 retry: tuple[float, float, float, float] = (0.01, 0.02, 2.0, 5.0),
                 on_send: Callable[[list[str], int], SendResult] | None = None,
                 on_encode: Callable[[list[Event]], None] | None = None) -> None:
        initial, maximum, multiplier, max_elapsed = retry
        super().__init__(name, ExporterConfig(
            type="fake",
            queue=QueueConfig(max_events=queue),
            batch=BatchConfig(max_events=batch, max_wait=max_wait),
            retry=RetryConfig(initial_interval=initial, max_interval=maximum, multiplier=multiplier,
                              max_elapsed=max_elapsed),
        ))
        self.on_send = on_send or (lambda _ids, _n: DONE)
        self.on_encode = on_encode
        self.lock = threading.Lock()
        self.attempts: list[list[str]] = []  # every send, in order
        self.attempt_times: list[float] = []
        self.delivered: list[str] = []  # ids the "backend" acknowledged
        self.sending = False
        self.closed = False
        self.send_while_closed = False

    @property
    def batches(self) -> list[list[str]]:
        return list(self.attempts)

    def encode(self, batch):
        if self.on_encode is not None:
            self.on_encode(list(batch))
        return [e.id for e in batch]

    def send(self, payload):
        with self.lock:
            if self.closed:
                self.send_while_closed = True
            self.attempts.append(list(payload))
            self.attempt_times.append(time.monotonic())
            attempt = len(self.attempts)
        self.sending = True
        try:
            result = self.on_send(list(payload), attempt)
        finally:
            self.sending = False
        if result.outcome is Outcome.DONE:
            failed = {i for i, o, _ in result.items if o is not Outcome.DONE}
            with self.lock:
                self.delivered += [x for i, x in enumerate(payload) if i not in failed]
        return result

    def close(self):
        self.closed = True


@pytest.fixture
def make_runner():
    """Build and start runners; stop whatever a test left running."""
    made: list[ExporterRunner] = []

    def make(exporter: FakeExporter, metrics: Metrics | None = None, start: bool = True) -> ExporterRunner:
        r = ExporterRunner(exporter, metrics or Metrics())
        if start:
            r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        if r._thread.is_alive():
            r.stop(time.monotonic() + 0.2)


def dropped_metric(r: ExporterRunner, reason: str) -> float:
    return r._metrics.value("siemhub_exporter_events_dropped_total", exporter=r.name, reason=reason)


def retries_metric(r: ExporterRunner, reason: str) -> float:
    return r._metrics.value("siemhub_exporter_retries_total", exporter=r.name, reason=reason)


def sent_metric(r: ExporterRunner) -> float:
    return r._metrics.value("siemhub_exporter_events_sent_total", exporter=r.name)


def accounted(r: ExporterRunner) -> int:
    return r.sent + sum(r.dropped.values())


def assert_metrics_match_counts(r: ExporterRunner) -> None:
    assert sent_metric(r) == r.sent
    for reason, n in r.dropped.items():
        assert dropped_metric(r, reason) == n, reason


# --- batching ------------------------------------------------------------------------------------


def test_batch_flushes_on_size(make_runner):
    exp = FakeExporter(batch=5, max_wait=30)  # the timer never fires during this test
    r = make_runner(exp)
    evs = events(12)
    r.put_many(evs)
    wait_until(lambda: len(exp.delivered) == 10)
    assert exp.batches == [ids(evs[:5]), ids(evs[5:10])]
    time.sleep(0.05)
    assert len(exp.delivered) == 10  # 2 left: below the batch size, the timer has not fired
    r.stop(time.monotonic() + 2)
    assert exp.batches[-1] == ids(evs[10:])
    assert exp.delivered == ids(evs) and r.sent == 12 and r.dropped == {}


def test_batch_flushes_on_time(make_runner):
    exp = FakeExporter(batch=1000, max_wait=0.05)
    r = make_runner(exp)
    evs = events(3)
    t0 = time.monotonic()
    r.put_many(evs)
    wait_until(lambda: exp.delivered == ids(evs), timeout=1.0)
    assert time.monotonic() - t0 < 0.5
    assert exp.batches == [ids(evs)]
    assert sent_metric(r) == 3


# --- the queue bound -----------------------------------------------------------------------------


def test_queue_full_drops_and_counts(make_runner):
    exp = FakeExporter(batch=1000, max_wait=30, queue=10)  # the worker sits idle until stop
    r = make_runner(exp)
    first, second = events(7), events(7)
    r.put_many(first)
    r.put_many(second)
    assert r.dropped == {"queue_full": 4}
    assert dropped_metric(r, "queue_full") == 4
    assert r._metrics.value("siemhub_events_routed_total", exporter="fake") == 10
    r.put_many(events(3))  # still full: all three dropped
    assert dropped_metric(r, "queue_full") == 7
    r.stop(time.monotonic() + 2)
    assert exp.delivered == ids(first) + ids(second[:3])  # the oldest are kept, the newest dropped
    assert accounted(r) == 17
    assert_metrics_match_counts(r)


def test_put_many_wait_never_drops(make_runner):
    def slow(_ids, _n):
        time.sleep(0.001)
        return DONE

    exp = FakeExporter(batch=4, max_wait=0.01, queue=10, on_send=slow)
    r = make_runner(exp)
    evs = events(60)
    for i in range(0, 35, 7):
        r.put_many(evs[i:i + 7], wait=True)
    r.put_many(evs[35:], wait=True)  # 25 events in one call: more than the whole queue
    r.stop(time.monotonic() + 2)
    assert r.dropped == {} and dropped_metric(r, "queue_full") == 0
    assert exp.delivered == ids(evs)
    assert r.sent == 60


# --- retries -------------------------------------------------------------------------------------


def test_retry_with_backoff_then_success(make_runner):
    times: list[float] = []

    def flaky(_ids, attempt):
        times.append(time.monotonic())
        return RETRY_503 if attempt <= 3 else DONE

    exp = FakeExporter(batch=5, max_wait=0.01, retry=(0.02, 0.08, 2.0, 5.0), on_send=flaky)
    r = make_runner(exp)
    evs = events(5)
    r.put_many(evs)
    wait_until(lambda: r.sent == 5)
    assert len(exp.attempts) == 4 and all(a == ids(evs) for a in exp.attempts)  # the same payload again
    assert exp.delivered == ids(evs)  # each event acknowledged once
    assert retries_metric(r, "http_503") == 3
    assert r.dropped == {}
    gaps = [b - a for a, b in zip(times, times[1:])]
    # jittered in [interval/2, interval] with interval 0.02, 0.04, 0.08 (and a little scheduling slack)
    for gap, interval in zip(gaps, (0.02, 0.04, 0.08)):
        assert interval / 2 - 0.002 <= gap <= interval + 0.05, gaps
    assert_metrics_match_counts(r)


def test_exception_from_send_is_classified_by_outcome_for_exception(make_runner):
    # A transient exception raised by send (timeout, refused connection) is retried, not given up.
    def flaky(_ids, attempt):
        if attempt == 1:
            raise TimeoutError("read timed out")
        if attempt == 2:
            raise ConnectionRefusedError(111, "refused")
        return DONE

    exp = FakeExporter(batch=3, max_wait=0.01, on_send=flaky)
    r = make_runner(exp)
    evs = events(3)
    r.put_many(evs)
    wait_until(lambda: r.sent == 3)
    assert retries_metric(r, "TimeoutError") == 1
    assert retries_metric(r, "ConnectionRefusedError") == 1
    assert exp.delivered == ids(evs) and r.dropped == {}


def test_give_up_drops_the_batch_with_its_reason(make_runner):
    def bad_request(batch_ids, _n):
        return SendResult(Outcome.GIVE_UP, "http_400") if batch_ids[0] == first_id else DONE

    exp = FakeExporter(batch=4, max_wait=0.01, on_send=bad_request)
    r = make_runner(exp)
    evs = events(8)
    first_id = evs[0].id
    r.put_many(evs)
    wait_until(lambda: accounted(r) == 8)
    assert len(exp.attempts) == 2  # no retry for a permanent failure
    assert r.dropped == {"http_400": 4} and dropped_metric(r, "http_400") == 4
    assert exp.delivered == ids(evs[4:])
    assert retries_metric(r, "http_400") == 0


def test_retries_exhausted_after_max_elapsed(make_runner):
    exp = FakeExporter(batch=10, max_wait=0.01, retry=(0.01, 0.02, 2.0, 0.08),
                       on_send=lambda _i, _n: RETRY_503)
    r = make_runner(exp)
    t0 = time.monotonic()
    r.put_many(events(6))
    wait_until(lambda: accounted(r) == 6, timeout=2.0)
    assert time.monotonic() - t0 < 1.0
    assert r.dropped == {"retries_exhausted_http_503": 6}
    assert dropped_metric(r, "retries_exhausted_http_503") == 6
    assert len(exp.attempts) >= 3  # it did retry before giving up
    assert retries_metric(r, "http_503") == len(exp.attempts) - 1
    assert r.sent == 0 and exp.delivered == []


# --- failures inside the exporter never kill the worker ------------------------------------------------


def test_encode_exception_costs_only_that_batch(make_runner):
    calls = itertools.count()

    def encode(_batch):
        if next(calls) == 0:
            raise ValueError("encoder bug")

    exp = FakeExporter(batch=3, max_wait=0.01, on_encode=encode)
    r = make_runner(exp)
    evs = events(3)
    r.put_many(evs)
    wait_until(lambda: accounted(r) == 3)
    later = events(4)
    r.put_many(later)
    wait_until(lambda: accounted(r) == 7)
    assert r.dropped == {"encode_ValueError": 3} and dropped_metric(r, "encode_ValueError") == 3
    assert exp.delivered == ids(later)
    assert r._thread.is_alive()


def test_send_exception_costs_only_that_batch(make_runner):
    def send(_ids, attempt):
        if attempt == 1:
            raise RuntimeError("plugin bug")
        return DONE

    exp = FakeExporter(batch=3, max_wait=0.01, on_send=send)
    r = make_runner(exp)
    r.put_many(events(3))
    wait_until(lambda: accounted(r) == 3)
    later = events(5)
    r.put_many(later)
    wait_until(lambda: accounted(r) == 8)
    assert r.dropped == {"RuntimeError": 3}
    assert exp.delivered == ids(later)
    assert r._thread.is_alive()


def test_partial_failures_count_only_the_failed_items(make_runner):
    def bulk(_ids, _n):
        return SendResult(Outcome.DONE, items=[(0, Outcome.DONE, ""), (1, Outcome.GIVE_UP, "mapper_parsing"),
                                               (3, Outcome.RETRY, ""), (4, Outcome.GIVE_UP, "mapper_parsing")])

    exp = FakeExporter(batch=5, max_wait=0.01, on_send=bulk)
    r = make_runner(exp)
    evs = events(5)
    r.put_many(evs)
    wait_until(lambda: accounted(r) == 5)
    assert r.sent == 2 and sent_metric(r) == 2
    assert exp.delivered == [evs[0].id, evs[2].id]
    assert r.dropped == {"mapper_parsing": 2, "item_failed": 1}
    assert_metrics_match_counts(r)


# --- shutdown ------------------------------------------------------------------------------------


def test_stop_drains_the_queue(make_runner):
    exp = FakeExporter(batch=10, max_wait=30)
    r = make_runner(exp)
    evs = events(35)
    r.put_many(evs)
    t0 = time.monotonic()
    r.stop(t0 + 5)
    assert time.monotonic() - t0 < 1.0  # draining does not wait for the deadline
    assert exp.delivered == ids(evs) and r.sent == 35 and r.dropped == {}
    assert exp.closed
    assert r._metrics.value("siemhub_exporter_queue_depth", exporter="fake") == 0


def test_stop_returns_by_the_deadline_when_the_backend_never_recovers(make_runner):
    # max_elapsed 0: retry forever; only the shutdown deadline ends it.
    exp = FakeExporter(batch=10, max_wait=0.01, retry=(0.02, 0.05, 2.0, 0), on_send=lambda _i, _n: RETRY_503)
    r = make_runner(exp)
    r.put_many(events(50))
    wait_until(lambda: len(exp.attempts) >= 2)
    t0 = time.monotonic()
    deadline = t0 + 0.3
    r.stop(deadline)
    took = time.monotonic() - t0
    assert took < 0.3 + 0.25, took
    assert r.sent == 0 and exp.delivered == []
    assert accounted(r) == 50
    assert set(r.dropped) <= {"shutdown_deadline", "retries_exhausted_http_503"}
    assert r.dropped.get("retries_exhausted_http_503", 0) >= 10  # the batch being retried at stop
    assert max(exp.attempt_times) <= deadline + 0.02  # nothing is tried after the deadline
    assert not r._thread.is_alive()
    assert_metrics_match_counts(r)


def test_stop_with_a_hung_send_accounts_for_everything(make_runner):
    release = threading.Event()

    def hang(_ids, _n):
        release.wait(5)
        return DONE

    exp = FakeExporter(batch=5, max_wait=0.01, on_send=hang)
    r = make_runner(exp)
    r.put_many(events(20))
    wait_until(lambda: exp.sending)
    t0 = time.monotonic()
    try:
        r.stop(t0 + 0.1)
        took = time.monotonic() - t0
        assert took < 0.1 + 1.0 + 0.3, took  # the deadline plus stop's one-second grace for a running send
        assert r.dropped == {"shutdown_deadline": 15}  # everything still queued
        assert not exp.closed  # never closed under a send that is still running
    finally:
        release.set()
    wait_until(lambda: not r._thread.is_alive())
    assert r.sent == 5 and accounted(r) == 20  # the batch in flight is counted when its send returns
    assert len(exp.attempts) == 1  # nothing sent after the deadline
    assert not exp.send_while_closed


@pytest.mark.parametrize("seed", range(6))
def test_sent_plus_dropped_equals_offered(make_runner, seed):
    rnd = random.Random(seed)
    choices = [DONE, RETRY_503, SendResult(Outcome.GIVE_UP, "http_413"), "raise", "partial"]

    def chaotic(batch_ids, _n):
        c = rnd.choice(choices)
        if c == "raise":
            raise (TimeoutError() if rnd.random() < 0.5 else ValueError())
        if c == "partial":
            return SendResult(Outcome.DONE, items=[(i, Outcome.GIVE_UP, "item") for i in range(len(batch_ids))
                                                   if rnd.random() < 0.3])
        return c

    exp = FakeExporter(batch=rnd.randint(1, 16), max_wait=0.005, queue=rnd.randint(20, 200),
                       retry=(0.002, 0.01, 2.0, rnd.choice([0, 0.03])), on_send=chaotic)
    r = make_runner(exp)
    offered = 0
    for _ in range(rnd.randint(10, 40)):
        n = rnd.randint(1, 30)
        r.put_many(events(n), wait=rnd.random() < 0.3)
        offered += n
        if rnd.random() < 0.3:
            time.sleep(0.001)
    r.stop(time.monotonic() + rnd.choice([0.0, 0.05, 0.1]))
    assert accounted(r) == offered, (r.sent, r.dropped)
    assert r.sent == len(exp.delivered)
    assert_metrics_match_counts(r)


# --- Backoff -------------------------------------------------------------------------------------


def test_backoff_grows_by_the_multiplier_and_is_capped(monkeypatch):
    picks: list[tuple[float, float]] = []

    def record(a, b):
        picks.append((a, b))
        return b

    monkeypatch.setattr(delivery.random, "uniform", record)
    got = list(itertools.islice(Backoff(0.1, 1.0, 2.0, 0).delays(), 7))
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    lows, highs = zip(*picks)
    assert lows == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert highs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_delays_stay_in_half_to_full_interval():
    delays = Backoff(0.05, 2.0, 1.5, 0).delays()
    interval = 0.05
    seen = []
    for _ in range(40):
        d = next(delays)
        assert interval / 2 <= d <= interval
        seen.append(d / interval)
        interval = min(interval * 1.5, 2.0)
    assert max(seen) - min(seen) > 0.1  # jittered, not constant


def test_backoff_initial_above_maximum_is_capped():
    delays = list(itertools.islice(Backoff(5.0, 1.0, 1.5, 0).delays(), 5))
    assert all(0.5 <= d <= 1.0 for d in delays), delays


# --- isolation -----------------------------------------------------------------------------------


def test_a_blocked_exporter_does_not_slow_another(make_runner):
    release = threading.Event()
    metrics = Metrics()

    def stuck(_ids, _n):
        release.wait(5)
        return DONE

    slow = FakeExporter("slow", batch=2, max_wait=0.01, on_send=stuck)
    fast = FakeExporter("fast", batch=2, max_wait=0.01)
    rs, rf = make_runner(slow, metrics), make_runner(fast, metrics)
    try:
        rs.put_many(events(10))
        wait_until(lambda: slow.sending)
        t0 = time.monotonic()
        for _ in range(5):
            rf.put_many(events(4))
        wait_until(lambda: rf.sent == 20, timeout=1.0)
        assert time.monotonic() - t0 < 0.5
        assert rs.sent == 0 and len(slow.attempts) == 1
        assert metrics.value("siemhub_exporter_events_sent_total", exporter="fast") == 20
    finally:
        release.set()
    rs.stop(time.monotonic() + 2)
    assert rs.sent == 10
