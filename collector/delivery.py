"""One delivery path for every exporter: bounded queue -> batch -> encode -> send -> retry -> count.

Each exporter gets its own queue and worker thread, so one slow or dead backend never slows another.
Every event that leaves without being acknowledged is counted in
siemhub_exporter_events_dropped{exporter, reason}; nothing is lost silently.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque

from siemhub.collector.event import Event
from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import Exporter, Outcome, outcome_for_exception

log = logging.getLogger("siemhub.delivery")


class Backoff:
    """Exponential backoff with full jitter in [interval/2, interval], capped, with a total budget."""

    def __init__(self, initial: float, maximum: float, multiplier: float, max_elapsed: float) -> None:
        self.initial, self.maximum, self.multiplier, self.max_elapsed = initial, maximum, multiplier, max_elapsed

    def delays(self):
        interval = min(self.initial, self.maximum)
        while True:
            yield random.uniform(interval / 2, interval)
            interval = min(interval * self.multiplier, self.maximum)


class ExporterRunner:
    def __init__(self, exporter: Exporter, metrics: Metrics) -> None:
        cfg = exporter.config
        self.exporter = exporter
        self.name = exporter.name
        self.max_queue = cfg.queue.max_events
        self.batch_size = cfg.batch.max_events
        self.max_wait = cfg.batch.max_wait
        self.backoff = Backoff(cfg.retry.initial_interval, cfg.retry.max_interval, cfg.retry.multiplier,
                               cfg.retry.max_elapsed)
        self._queue: deque[Event] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline = float("inf")  # monotonic time after which shutdown stops retrying
        self._drop_lock = threading.Lock()  # producers, the worker and stop() all count drops
        self._thread = threading.Thread(target=self._run, name=f"exporter-{self.name}", daemon=True)
        m = metrics
        self._m_routed = m.events_routed.labels(self.name)
        self._m_sent = m.events_sent.labels(self.name)
        self._m_depth = m.queue_depth.labels(self.name)
        self._m_batch = m.batch_seconds.labels(self.name)
        self._metrics = m
        self.sent = 0
        self.dropped: dict[str, int] = {}
        # Acknowledgement watermarks for sources that commit only what was delivered (the Kafka
        # aggregator): every accepted event gets the next sequence number; the queue is FIFO and
        # batches finish in order, so `finished >= seq` means that event was sent or accounted for
        # (dropped with a counted reason, or dead-lettered).
        self.accepted = 0
        self.finished = 0

    # --- producer side (sensor threads) ---

    def put_many(self, events: list[Event], wait: bool = False) -> int:
        """Queue events; when the queue is full, drop and count (wait=False, sensors: never stall the
        kernel reader) or wait for room (wait=True, replay and Kafka: the source can slow down).
        Returns the sequence number of the last accepted event (see `finished`)."""
        while wait and self.max_queue - len(self._queue) < len(events) and self._thread.is_alive():
            if len(events) > self.max_queue:
                self.put_many(events[: self.max_queue], wait=True)
                events = events[self.max_queue :]
                continue
            self._wake.set()
            time.sleep(0.005)
        room = self.max_queue - len(self._queue)
        if room < len(events):
            self._drop("queue_full", len(events) - max(room, 0))
            events = events[: max(room, 0)]
        self._queue.extend(events)
        self.accepted += len(events)
        self._m_routed.inc(len(events))
        if len(self._queue) >= self.batch_size:
            self._wake.set()
        return self.accepted

    # --- lifecycle ---

    def start(self) -> None:
        self.exporter.start()
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Drain what is queued until `deadline` (monotonic), then count the rest as dropped."""
        self._deadline = deadline
        self._stopping.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        left = 0
        while True:  # one popleft at a time: a producer may still be adding
            try:
                self._queue.popleft()
            except IndexError:
                break
            left += 1
        self._drop("shutdown_deadline", left)
        self.finished += left
        if self._thread.is_alive():
            # Still inside send(): closing now would pull the file or socket from under it.
            log.warning("exporter %s: a send is still running after the deadline; not closing", self.name)
            return
        try:
            self.exporter.close()
        except Exception:  # noqa: BLE001 - close trouble must not hide the drop counts
            log.exception("exporter %s: close failed", self.name)

    # --- worker ---

    def _run(self) -> None:
        q = self._queue
        while True:
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                break  # past the shutdown deadline: stop() counts what is left
            if len(q) < self.batch_size and not self._stopping.is_set():
                self._wake.wait(self.max_wait)
                self._wake.clear()
            self._m_depth.set(len(q))
            if not q:
                if self._stopping.is_set():
                    break
                self._flush()
                continue
            n = min(len(q), self.batch_size)
            batch = [q.popleft() for _ in range(n)]
            self._deliver(batch)
            self.finished += n
        self._flush()
        self._m_depth.set(len(q))

    def _flush(self) -> None:
        try:
            self.exporter.flush()
        except Exception:  # noqa: BLE001
            log.exception("exporter %s: flush failed", self.name)

    def _deliver(self, batch: list[Event]) -> None:
        started = time.monotonic()
        try:
            payload = self.exporter.encode(batch)
        except Exception as exc:  # noqa: BLE001 - an encoder bug must cost this batch, not the agent
            log.exception("exporter %s: encode failed", self.name)
            self._drop(f"encode_{type(exc).__name__}", len(batch))
            return
        delays = self.backoff.delays()
        budget = self.backoff.max_elapsed
        while True:
            try:
                result = self.exporter.send(payload)
            except Exception as exc:  # noqa: BLE001 - send must never kill the worker
                log.warning("exporter %s: send raised %s", self.name, type(exc).__name__)
                result = outcome_for_exception(exc)  # the one place that decides retry vs give up
            if result.outcome is Outcome.DONE:
                failed = sum(1 for _, o, _ in result.items if o is not Outcome.DONE)
                for _, outcome, reason in result.items:
                    if outcome is not Outcome.DONE:
                        self._drop(reason or "item_failed", 1)
                self.sent += len(batch) - failed
                self._m_sent.inc(len(batch) - failed)
                break
            if result.outcome is Outcome.GIVE_UP:
                log.warning("exporter %s: giving up on %d events: %s", self.name, len(batch), result.reason)
                self._drop(result.reason or "give_up", len(batch))
                break
            delay = next(delays)
            now = time.monotonic()
            if (budget and now + delay - started > budget) or now + delay > self._deadline:
                self._drop(f"retries_exhausted_{result.reason or 'retry'}", len(batch))
                break
            self._metrics.send_retries.labels(self.name, result.reason or "retry").inc()
            log.info("exporter %s: %s, retrying in %.1fs", self.name, result.reason, delay)
            self._sleep(delay)
        self._m_batch.observe(time.monotonic() - started)

    def _sleep(self, delay: float) -> None:
        # Before shutdown a stop request cuts the wait short; during the drain, sleep for real.
        if not self._stopping.wait(delay):
            return
        time.sleep(max(0.0, min(delay, self._deadline - time.monotonic())))

    def _drop(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        with self._drop_lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._metrics.events_dropped.labels(self.name, reason).inc(n)
