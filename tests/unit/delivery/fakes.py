"""A fake exporter and helpers shared by the delivery tests (the exporter exists only in tests)."""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.delivery.settings import (BatchConfig, BufferConfig, CircuitBreakerConfig, QueueConfig,
                                                RetryConfig)
from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node
from siemhub.exporters.base import DONE, Exporter, ExporterConfig, Outcome, SendResult

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
                 on_encode: Callable[[list[Event]], None] | None = None,
                 breaker: tuple[int, float] = (0, 30.0), **extra) -> None:
        initial, maximum, multiplier, max_elapsed = retry
        super().__init__(name, ExporterConfig(
            type="fake",
            queue=QueueConfig(max_events=queue),
            batch=BatchConfig(max_events=batch, max_wait=max_wait),
            retry=RetryConfig(initial_interval=initial, max_interval=maximum, multiplier=multiplier,
                              max_elapsed=max_elapsed),
            # off unless a test turns it on: the retry tests count attempts
            circuit_breaker=CircuitBreakerConfig(failure_threshold=breaker[0], cooldown=breaker[1]),
            **extra,
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


def disk(tmp_path, **kw) -> BufferConfig:
    return BufferConfig(type="disk", path=str(tmp_path / "buf"), **{"segment_bytes": 4096, "max_bytes": 1 << 20, **kw})
