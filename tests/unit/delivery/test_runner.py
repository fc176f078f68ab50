"""Tests for siemhub.collector.delivery.runner: batching, the queue bound, retries with backoff, drop
accounting, shutdown, isolation and batches in flight, with a fake exporter that exists only in tests."""
from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import DONE, Outcome, SendResult
from tests.unit.delivery.fakes import events, ids, wait_until, RETRY_503, FakeExporter, dropped_metric, retries_metric, sent_metric, accounted, assert_metrics_match_counts, disk


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


def test_a_dead_exporter_with_a_disk_buffer_does_not_slow_another(make_runner, tmp_path):
    metrics = Metrics()
    dead = FakeExporter("dead", batch=10, max_wait=0.005, retry=(0.005, 0.01, 2.0, 0), breaker=(3, 60),
                        on_send=lambda _i, _n: (time.sleep(0.01), RETRY_503)[1], buffer=disk(tmp_path))
    live = FakeExporter("live", batch=10, max_wait=0.005)
    rd, rl = make_runner(dead, metrics), make_runner(live, metrics)
    t0 = time.monotonic()
    for _ in range(50):
        evs = events(20)
        rd.put_many(evs)
        rl.put_many(evs)
    wait_until(lambda: rl.sent == 1000, timeout=2)
    took = time.monotonic() - t0
    assert took < 1.0, took
    wait_until(lambda: rd.breaker.state == rd.breaker.OPEN)
    time.sleep(0.05)
    assert rd.breaker.state == rd.breaker.OPEN and len(dead.attempts) == 3  # the breaker saves the sends
    assert rd.buffered == 1000 and rd.dropped == {}
    rd.stop(time.monotonic() + 0.05)
    assert rd.buffered == 1000


# --- batches in flight (max_in_flight > 1) ---------------------------------------------------------


class Ticket:
    def __init__(self, ids: list[str], attempt: int) -> None:
        self.ids, self.attempt = ids, attempt
        self.answered = threading.Event()
        self.result: SendResult | None = None


class PipelinedExporter(FakeExporter):
    """submit() returns at once; the test answers each ticket when it likes (`answer`), like delivery
    reports arriving in any order."""

    def __init__(self, name: str = "piped", *, in_flight: int = 3, auto=None, **kw) -> None:
        super().__init__(name, **kw)
        self.max_in_flight = in_flight
        self.auto = auto  # (ids, attempt) -> SendResult answered at once, or None: the test answers
        self.tickets: list[Ticket] = []
        self.most_unanswered = 0

    def submit(self, payload):
        with self.lock:
            if self.closed:
                self.send_while_closed = True
            self.attempts.append(list(payload))
            t = Ticket(list(payload), len(self.attempts))
            self.tickets.append(t)
            self.most_unanswered = max(self.most_unanswered, sum(not x.answered.is_set() for x in self.tickets))
        if self.auto is not None:
            result = self.auto(t.ids, t.attempt)
            if result is not None:
                self.answer(t, result)
        return t

    def answer(self, t: Ticket, result: SendResult) -> None:
        if result.outcome is Outcome.DONE:
            with self.lock:
                self.delivered += t.ids
        t.result = result
        t.answered.set()

    def poll(self, ticket, timeout):
        return ticket.result if ticket.answered.wait(timeout) else None

    def ticket(self, first_id: str, attempt: int = 1) -> Ticket:
        """The ticket of the `attempt`-th submit of the batch starting with `first_id`."""
        wait_until(lambda: sum(t.ids[0] == first_id for t in self.tickets) >= attempt)
        return [t for t in self.tickets if t.ids[0] == first_id][attempt - 1]


def test_batches_in_flight_finish_strictly_in_order(make_runner):
    exp = PipelinedExporter(in_flight=3, batch=2, max_wait=0.01)
    r = make_runner(exp)
    evs = events(6)
    mark = r.put_many(evs)
    b1, b2, b3 = (exp.ticket(evs[i].id) for i in (0, 2, 4))  # all three out before any answer
    exp.answer(b3, DONE)
    exp.answer(b2, DONE)
    time.sleep(0.05)
    assert r.finished == 0 and r.sent == 0  # the oldest batch is not answered: nothing counts
    exp.answer(b1, DONE)
    wait_until(lambda: r.finished == mark == 6)
    assert r.sent == 6 and exp.most_unanswered == 3


def test_window_bounds_the_batches_in_flight(make_runner):
    exp = PipelinedExporter(in_flight=2, batch=2, max_wait=0.01)
    r = make_runner(exp)
    evs = events(8)
    r.put_many(evs)
    b1, b2 = exp.ticket(evs[0].id), exp.ticket(evs[2].id)
    time.sleep(0.05)
    assert len(exp.tickets) == 2  # the third batch waits for room
    exp.answer(b2, DONE)
    time.sleep(0.05)
    assert len(exp.tickets) == 2  # room comes only when the oldest finishes
    exp.answer(b1, DONE)
    exp.answer(exp.ticket(evs[4].id), DONE)
    exp.answer(exp.ticket(evs[6].id), DONE)
    wait_until(lambda: r.finished == 8)
    assert exp.most_unanswered == 2 and exp.delivered == ids(evs[2:4] + evs[:2] + evs[4:])


class IdleRecordingExporter(PipelinedExporter):
    """Records, for each poll, whether the runner said it had nothing more to send (`idle`)."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.idle_polls: dict[str, set[bool]] = {}  # first event id of the polled batch -> idle values seen

    def poll(self, ticket, timeout, idle=False):
        self.idle_polls.setdefault(ticket.ids[0], set()).add(idle)
        return super().poll(ticket, min(timeout, 0.005))


def test_polls_say_idle_only_when_nothing_waits_to_be_sent(make_runner):
    # Kafka's exporter sends what librdkafka lingers on when the runner is idle; while a full window
    # holds events back in the buffer, linger still has a use (they will follow) and idle must be False.
    exp = IdleRecordingExporter(in_flight=2, batch=2, max_wait=0.01)
    r = make_runner(exp)
    assert r._poll_idle
    evs = events(6)
    r.put_many(evs)
    b1, b2 = exp.ticket(evs[0].id), exp.ticket(evs[2].id)
    wait_until(lambda: evs[0].id in exp.idle_polls)
    time.sleep(0.03)
    assert exp.idle_polls[evs[0].id] == {False}  # two events wait in the buffer for room
    exp.answer(b1, DONE)
    b3 = exp.ticket(evs[4].id)
    wait_until(lambda: True in exp.idle_polls.get(evs[2].id, ()))  # the buffer is empty now
    exp.answer(b2, DONE)
    exp.answer(b3, DONE)
    wait_until(lambda: r.finished == 6)


def test_exporters_whose_poll_takes_no_idle_still_work(make_runner):
    exp = PipelinedExporter(in_flight=2, batch=2, max_wait=0.01, auto=lambda ids, attempt: DONE)
    r = make_runner(exp)
    assert not r._poll_idle  # poll(ticket, timeout): the runner does not pass idle
    r.put_many(events(4))
    wait_until(lambda: r.finished == 4)
    assert r.sent == 4


def test_failing_middle_batch_is_retried_while_later_ones_succeed(make_runner):
    exp = PipelinedExporter(in_flight=3, batch=2, max_wait=0.01, retry=(0.05, 0.05, 1.0, 5.0))
    r = make_runner(exp)
    evs = events(6)
    r.put_many(evs)
    b1, b2, b3 = (exp.ticket(evs[i].id) for i in (0, 2, 4))
    exp.answer(b1, DONE)
    exp.answer(b3, DONE)
    exp.answer(b2, RETRY_503)
    wait_until(lambda: r.finished == 2)
    retry = exp.ticket(evs[2].id, attempt=2)  # only the failed batch is sent again
    time.sleep(0.05)
    assert r.finished == 2  # the third batch is delivered, but the watermark waits for the second
    exp.answer(retry, DONE)
    wait_until(lambda: r.finished == 6)
    assert r.sent == 6 and r.dropped == {}
    assert [t.ids[0] for t in exp.tickets] == [evs[0].id, evs[2].id, evs[4].id, evs[2].id]
    assert sorted(exp.delivered) == sorted(ids(evs))


def test_watermark_never_passes_an_undelivered_event_with_answers_in_any_order(make_runner):
    rnd = random.Random(7)
    exp = PipelinedExporter(in_flight=4, batch=5, max_wait=0.002, retry=(0.002, 0.01, 2.0, 0.2))
    r = make_runner(exp)
    evs = events(400)
    pos = {e.id: i + 1 for i, e in enumerate(evs)}
    given_up: set[int] = set()
    samples: list[tuple[int, list[int]]] = []
    stop = threading.Event()

    def answerer():  # answers the open tickets in random order with random outcomes
        while not stop.is_set():
            with exp.lock:
                open_ = [t for t in exp.tickets if not t.answered.is_set()]
            if not open_:
                time.sleep(0.001)
                continue
            t = rnd.choice(open_)
            roll = rnd.random()
            if roll < 0.2:
                exp.answer(t, RETRY_503)
            elif roll < 0.25:
                with exp.lock:
                    given_up.update(pos[x] for x in t.ids)
                exp.answer(t, SendResult(Outcome.GIVE_UP, "http_400"))
            else:
                exp.answer(t, DONE)

    def watch():
        while not stop.is_set():
            f = r.finished
            with exp.lock:
                ok = {pos[x] for x in exp.delivered} | given_up
            samples.append((f, [s for s in range(1, f + 1) if s not in ok]))
            time.sleep(0.002)

    threads = [threading.Thread(target=answerer, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    try:
        for i in range(0, 400, 40):
            r.put_many(evs[i:i + 40])
        wait_until(lambda: r.finished == 400, timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert samples and all(not missing for _, missing in samples)  # nothing counted before delivery
    assert accounted(r) == 400 and exp.most_unanswered <= 4
    assert set(pos[x] for x in exp.delivered) | given_up == set(range(1, 401))


def test_default_exporters_keep_one_batch_in_flight(make_runner):
    concurrent, most = [0], [0]
    lock = threading.Lock()

    def slow(_ids, _n):
        with lock:
            concurrent[0] += 1
            most[0] = max(most[0], concurrent[0])
        time.sleep(0.01)
        with lock:
            concurrent[0] -= 1
        return DONE

    exp = FakeExporter(batch=2, max_wait=0.005, on_send=slow)
    assert exp.max_in_flight == 1
    r = make_runner(exp)
    r.put_many(events(20))
    wait_until(lambda: r.finished == 20)
    assert most[0] == 1


def test_a_disk_buffer_keeps_one_batch_in_flight(make_runner, tmp_path):
    # DiskQueue.ack() acknowledges everything read: two batches out would be acknowledged together.
    exp = PipelinedExporter(in_flight=4, batch=2, max_wait=0.005, buffer=disk(tmp_path),
                            auto=lambda _ids, _n: None)
    r = make_runner(exp)
    evs = events(6)
    r.put_many(evs)
    b1 = exp.ticket(evs[0].id)
    time.sleep(0.05)
    assert len(exp.tickets) == 1
    exp.answer(b1, DONE)
    exp.answer(exp.ticket(evs[2].id), DONE)
    exp.answer(exp.ticket(evs[4].id), DONE)
    wait_until(lambda: r.finished == 6)
    assert exp.most_unanswered == 1


def test_stop_gives_up_on_batches_still_unanswered_at_the_deadline(make_runner):
    exp = PipelinedExporter(in_flight=3, batch=2, max_wait=0.005)
    r = make_runner(exp)
    evs = events(6)
    r.put_many(evs)
    b1 = exp.ticket(evs[0].id)
    exp.ticket(evs[4].id)
    exp.answer(b1, DONE)
    r.stop(time.monotonic() + 0.1)
    assert r.sent == 2 and r.dropped == {"shutdown_deadline": 4} and r.finished == 6
    assert exp.closed and not exp.send_while_closed
