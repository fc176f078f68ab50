"""The worker that drives one exporter: buffer -> batch -> encode -> send -> retry -> count.

The design (buffers, dead letters, batches in flight, the breaker) is described in
collector/delivery/__init__.py.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence

from siemhub.collector.delivery.breaker import CircuitBreaker
from siemhub.collector.delivery.buffers import DiskBuffer, MemoryBuffer
from siemhub.collector.delivery.deadletter import DeadLetterFile, DeadLetterForward
from siemhub.collector.delivery.retry import Backoff
from siemhub.collector.core.event import Event
from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import Exporter, Outcome, SendResult, outcome_for_exception

log = logging.getLogger("siemhub.delivery")


class _Flight:
    """One batch between its take from the buffer and its end (sent, or accounted for)."""

    __slots__ = ("batch", "bad", "skipped_after", "payload", "ticket", "result", "submitted", "done",
                 "attempts", "started")

    def __init__(self, batch: list[Event], bad: int) -> None:
        self.batch, self.bad = batch, bad
        self.skipped_after = 0  # events dropped from the buffer after this batch was taken
        self.payload = self.ticket = None
        self.result: SendResult | None = None  # answer of the current attempt
        self.submitted = False
        self.done = False
        self.attempts = 0
        self.started = time.monotonic()


# --- the runner ----------------------------------------------------------------------------------


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
        bcfg = cfg.buffer
        self.when_full = bcfg.when_full
        # A disk buffer is opened by start(), where trouble is a start-up error naming the exporter.
        self._buf: MemoryBuffer | DiskBuffer = MemoryBuffer(cfg.queue.max_events)
        self._wake = threading.Event()
        self._room = threading.Event()  # set by the worker whenever it frees buffer space (blocking puts)
        self._stopping = threading.Event()
        self._deadline = float("inf")  # monotonic time after which shutdown stops retrying
        self._drop_lock = threading.Lock()  # producers, the worker and stop() all count drops
        self._put_lock = threading.Lock()  # sources and dead-letter forwarding may put concurrently
        self._thread = threading.Thread(target=self._run, name=f"exporter-{self.name}", daemon=True)
        # Exporter plugins written before poll() took `idle` keep working.
        self._poll_idle = "idle" in inspect.signature(exporter.poll).parameters
        m = metrics
        self._m_routed = m.events_routed.labels(self.name)
        self._m_sent = m.events_sent.labels(self.name)
        self._m_depth = m.queue_depth.labels(self.name)
        self._m_batch = m.batch_seconds.labels(self.name)
        self._metrics = m
        self.breaker = CircuitBreaker(cfg.circuit_breaker.failure_threshold, cfg.circuit_breaker.cooldown,
                                      m.circuit_state.labels(self.name))
        m.circuit_state.labels(self.name).set(0)
        dl = cfg.dead_letter
        self.dead_letters: DeadLetterFile | DeadLetterForward | None = None
        if dl.enabled and dl.exporter is None:
            path = dl.path or os.path.join("var", "dead-letter", f"{self.name}.jsonl")
            self.dead_letters = DeadLetterFile(path, self.name, dl.max_bytes)
        self.sent = 0
        self.dropped: dict[str, int] = {}
        self.dead_lettered: dict[str, int] = {}
        # Acknowledgement watermarks for sources that commit only what was delivered (the Kafka
        # aggregator): every accepted event gets the next sequence number; the buffer is FIFO and
        # batches finish in order, so `finished >= seq` means that event was sent or accounted for
        # (dropped with a counted reason, or dead-lettered). Events recovered from a disk buffer
        # take the first numbers (see start): they are delivered first.
        self.recovered = 0
        self.accepted = 0
        self.finished = 0
        self._corrupt_seen = 0

    def link(self, runners: dict[str, ExporterRunner]) -> None:
        """Resolve `dead_letter.exporter` once every runner exists (the config checked the name)."""
        target = self.exporter.config.dead_letter.exporter
        if self.exporter.config.dead_letter.enabled and target is not None:
            self.dead_letters = DeadLetterForward(runners[target], self.name)

    @property
    def buffered(self) -> int:
        """Events accepted and not yet finished (in memory, or on disk for the next start)."""
        return len(self._buf)

    # --- producer side (sensor threads) ---

    def put_many(self, events: list[Event], wait: bool = False) -> int:
        """Queue events. When the buffer is full: with wait=True (replay, Kafka: the source can slow
        down) or `when_full: block`, wait for room; else drop the newest (`drop_newest`, counted) or
        the oldest (`drop_oldest`). Returns the sequence number of the last accepted event (see
        `finished`)."""
        self._put(events, wait or self.when_full == "block")
        return self.accepted

    def offer(self, events: Sequence[Event]) -> int:
        """Queue without ever waiting (dead letters from another exporter); returns how many were taken."""
        return self._put(events, False)

    def _put(self, events: Sequence[Event], block: bool) -> int:
        buf = self._buf
        taken = 0
        with self._put_lock:
            while events:
                err: OSError | None = None
                try:
                    n = buf.put(events)
                except OSError as exc:
                    n, err = 0, exc
                if n:
                    self.accepted += n
                    taken += n
                    self._m_routed.inc(n)
                    events = events[n:]
                    continue
                if err is None and len(buf) == 0:
                    self._drop("too_large", len(events))  # can never fit, even in an empty buffer
                    break
                if block and self._thread.is_alive() and not self._stopping.is_set():
                    self._wake.set()
                    self._room.wait(0.05)  # woken when the worker takes or acknowledges a batch
                    self._room.clear()  # then the put is tried again: a wake-up after it is not lost
                    continue
                if self.when_full == "drop_oldest":
                    k = buf.drop_oldest(len(events), err is not None)
                    if k:
                        self._drop(f"{buf.full_reason}_oldest", k)
                        continue
                if err is not None:
                    reason = f"buffer_{errno.errorcode.get(err.errno, 'error') if err.errno else 'error'}"
                    log.warning("exporter %s: disk buffer: %s", self.name, err)
                else:
                    reason = buf.full_reason
                self._drop(reason, len(events))
                break
        if buf.unread >= self.batch_size:
            self._wake.set()
        return taken

    # --- lifecycle ---

    def start(self) -> None:
        bcfg = self.exporter.config.buffer
        if bcfg.type == "disk":
            self._buf = DiskBuffer(bcfg, self.name)
            self.recovered = len(self._buf)
            self.accepted += self.recovered
            if self.recovered:
                log.info("exporter %s: %d events recovered from the disk buffer", self.name, self.recovered)
        self.exporter.start()
        self._thread.start()

    def stop(self, deadline: float) -> None:
        """Drain until `deadline` (monotonic). What is left in memory is dropped and dead-lettered;
        what is left in a disk buffer stays there and is delivered first on the next start."""
        self._deadline = deadline
        self._stopping.set()
        self._wake.set()
        self._room.set()  # a producer blocked for room re-checks and gives up waiting
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        left = self._buf.drain()
        if left:
            self._drop("shutdown_deadline", len(left))
            self._dead_letter(left, "shutdown_deadline", 0)
            self.finished += len(left)
        if self._buf.durable and len(self._buf):
            log.info("exporter %s: %d events stay in the disk buffer for the next start", self.name,
                     len(self._buf))
        if self._thread.is_alive():
            # Still inside send(): closing now would pull the file or socket from under it.
            log.warning("exporter %s: a send is still running after the deadline; not closing", self.name)
            return
        for what, close in (("close", self.exporter.close), ("buffer close", self._buf.close),
                            ("dead letters close", self.dead_letters.close if self.dead_letters else None)):
            if close is None:
                continue
            try:
                close()
            except Exception:  # noqa: BLE001 - close trouble must not hide the drop counts
                log.exception("exporter %s: %s failed", self.name, what)

    # --- worker ---

    def _run(self) -> None:
        buf = self._buf
        batch_sync = buf.durable and self.exporter.config.buffer.fsync == "batch"
        # DiskQueue.ack() acknowledges everything read so far, so a disk buffer keeps one batch in
        # flight: acknowledging the first of two would also acknowledge the second.
        window = 1 if buf.durable else max(1, int(self.exporter.max_in_flight))
        flights: deque[_Flight] = deque()
        low_water = self.max_queue // 2 if not buf.durable else float("inf")
        last_take = 0.0
        interrupted = False
        while True:
            if self._stopping.is_set() and time.monotonic() >= self._deadline:
                break  # past the shutdown deadline: what is in flight is settled below, stop() counts the rest
            # 1. Take the next batch while the window has room. Pipelining only while the circuit is
            #    closed: a failing backend gets one batch at a time (retries, probes) as without it.
            if len(flights) < window and (not flights or self.breaker.state == CircuitBreaker.CLOSED):
                if not flights:
                    if buf.unread < self.batch_size and not self._stopping.is_set():
                        self._wake.wait(self.max_wait)
                        self._wake.clear()
                    ready = True
                else:  # a full batch, or a partial one that waited max_wait, or the shutdown drain
                    ready = buf.unread >= self.batch_size or (buf.unread > 0 and (
                        self._stopping.is_set() or time.monotonic() - last_take >= self.max_wait))
                if ready:
                    # Events dropped from the front of the buffer follow every batch taken before.
                    skipped = buf.take_skipped()
                    if flights:
                        flights[-1].skipped_after += skipped
                    else:
                        self.finished += skipped
                    self._gauges()
                    try:
                        batch, bad = buf.take(self.batch_size)
                        if len(buf) <= low_water:  # wake a blocked producer once half the queue is free:
                            self._room.set()  # a wake-up per batch would ping-pong the two threads
                    except OSError as exc:  # the disk buffer cannot be read: retry later, never die
                        log.warning("exporter %s: disk buffer read failed: %s", self.name, exc)
                        batch, bad = [], 0
                        if not flights:
                            self._stopping.wait(self.max_wait)
                            continue
                    if bad:
                        self._drop("buffer_undecodable", bad)
                    if batch or bad:
                        last_take = time.monotonic()
                        flights.append(self._launch(batch, bad))
                        continue
                    if not flights:
                        if batch_sync:
                            self._sync(buf)
                        if self._stopping.is_set():
                            break
                        self._flush()
                        continue
            # 2. Finish the oldest batch (strictly in order: the watermark never passes an undelivered
            #    event). Later batches keep going meanwhile; their answers wait for their turn.
            head = flights[0]
            if not head.done:
                if head.submitted and head.result is None:
                    room = len(flights) < window and self.breaker.state == CircuitBreaker.CLOSED
                    if not self._poll(head, 0.005 if room else 0.05):
                        continue
                if not self._drive(head):
                    interrupted = True  # the deadline cut a retry short: it stays on disk for the next start
                    break
            flights.popleft()
            self._finish(head, batch_sync)
        if interrupted:
            buf.rewind()
        elif flights:
            if buf.durable:
                buf.rewind()  # unanswered at the deadline: delivered first on the next start
            else:
                for f in flights:
                    if not f.done and f.submitted:
                        self._poll(f, 0)  # a send that returned after the deadline has its answer
                    if not f.done and (f.result is None or f.result.outcome is Outcome.RETRY):
                        self._give_up(f.batch, "shutdown_deadline", f.attempts)
                        f.done = True
                    elif not f.done:
                        self._account(f, f.result)
                    self._finish(f, batch_sync)
        self._flush()
        self.finished += buf.take_skipped()
        self._gauges()

    def _finish(self, f: _Flight, batch_sync: bool) -> None:
        self._buf.ack()
        if self._buf.durable:
            self._room.set()  # a disk buffer frees its space here
        self.finished += len(f.batch) + f.bad + f.skipped_after
        if batch_sync:
            self._sync(self._buf)
        self._m_batch.observe(time.monotonic() - f.started)

    def _gauges(self) -> None:
        self._m_depth.set(len(self._buf))
        if isinstance(self._buf, DiskBuffer):
            q = self._buf.q
            self._metrics.buffer_bytes.labels(self.name).set(q.bytes)
            if q.corrupt != self._corrupt_seen:
                self._metrics.buffer_corrupt.labels(self.name).inc(q.corrupt - self._corrupt_seen)
                self._corrupt_seen = q.corrupt
            if q.corrupt_dropped > self.dropped.get("buffer_corrupt", 0):
                self._drop("buffer_corrupt", q.corrupt_dropped - self.dropped.get("buffer_corrupt", 0))

    def _sync(self, buf) -> None:
        try:
            buf.sync()
        except OSError as exc:
            log.warning("exporter %s: disk buffer fsync failed: %s", self.name, exc)

    def _flush(self) -> None:
        try:
            self.exporter.flush()
        except Exception:  # noqa: BLE001
            log.exception("exporter %s: flush failed", self.name)

    # --- one batch: encode, submit, poll, retry ---

    def _launch(self, batch: list[Event], bad: int) -> _Flight:
        """Encode a batch and, while the circuit is closed, submit it without waiting for the answer."""
        f = _Flight(batch, bad)
        if not batch:
            f.done = True  # only undecodable records: counted already
            return f
        try:
            f.payload = self.exporter.encode(batch)
        except Exception as exc:  # noqa: BLE001 - an encoder bug must cost this batch, not the agent
            log.exception("exporter %s: encode failed", self.name)
            self._give_up(batch, f"encode_{type(exc).__name__}", 0)
            f.done = True
            return f
        if self.breaker.state == CircuitBreaker.CLOSED:
            self._submit(f)
        return f  # circuit open or probing: _drive waits for the breaker, then sends

    def _submit(self, f: _Flight) -> None:
        f.attempts += 1
        f.submitted = True
        f.result = None
        try:
            f.ticket = self.exporter.submit(f.payload)
        except Exception as exc:  # noqa: BLE001 - send must never kill the worker
            log.warning("exporter %s: send raised %s", self.name, type(exc).__name__)
            self._answer(f, outcome_for_exception(exc))  # the one place that decides retry vs give up

    def _poll(self, f: _Flight, timeout: float) -> bool:
        """True once f's current attempt has its answer (in f.result)."""
        if f.result is not None:
            return True
        try:
            if self._poll_idle:  # idle: nothing waits in the buffer to join what the client holds
                result = self.exporter.poll(f.ticket, timeout, self._buf.unread == 0)
            else:
                result = self.exporter.poll(f.ticket, timeout)
        except Exception as exc:  # noqa: BLE001
            log.warning("exporter %s: send raised %s", self.name, type(exc).__name__)
            result = outcome_for_exception(exc)
        if result is None:
            return False
        self._answer(f, result)
        return True

    def _answer(self, f: _Flight, result: SendResult) -> None:
        f.result = result
        self.breaker.record(result.outcome is not Outcome.RETRY, time.monotonic())

    def _send_now(self, f: _Flight) -> SendResult:
        self._submit(f)
        while not self._poll(f, 0.1):
            pass
        return f.result  # type: ignore[return-value]

    def _drive(self, f: _Flight) -> bool:
        """Take f to its end: account for its answer, or retry it (with backoff, the breaker and the
        retry budget) until it is done or accounted for (True), or until the shutdown deadline
        interrupts the retries of a durable buffer (False: the batch stays in the buffer)."""
        delays = self.backoff.delays()
        budget = self.backoff.max_elapsed
        paused = 0.0  # time the breaker held sends back: not counted against the retry budget
        last = "circuit_open"
        result = f.result if f.submitted else None
        while True:
            if result is None:
                now = time.monotonic()
                hold = self.breaker.wait_time(now)
                if hold > 0:
                    if now + hold > self._deadline:
                        return self._interrupted(f, f"retries_exhausted_{last}")
                    self._sleep(hold)
                    paused += time.monotonic() - now
                    continue
                result = self._send_now(f)
            now = time.monotonic()
            if result.outcome is not Outcome.RETRY:
                self._account(f, result)
                return True
            last = result.reason or "retry"
            delay = next(delays)
            if result.retry_after is not None:  # the backend said when (Retry-After, RetryInfo)
                delay = max(delay, result.retry_after)
            result = None
            if self.breaker.state == CircuitBreaker.OPEN:
                if self.breaker.failures == self.breaker.threshold:  # once per outage, not per probe
                    log.warning("exporter %s: %d failures in a row (%s): circuit open, one probe every %gs",
                                self.name, self.breaker.failures, last, self.breaker.cooldown)
                self._metrics.send_retries.labels(self.name, last).inc()
                continue  # the breaker's cool-down is the wait
            elapsed = now - f.started - paused
            if budget and elapsed + delay > budget:
                self._give_up(f.batch, f"retries_exhausted_{last}", f.attempts)
                f.done = True
                return True
            if now + delay > self._deadline:
                return self._interrupted(f, f"retries_exhausted_{last}")
            self._metrics.send_retries.labels(self.name, last).inc()
            log.info("exporter %s: %s, retrying in %.1fs", self.name, last, delay)
            self._sleep(delay)

    def _account(self, f: _Flight, result: SendResult) -> None:
        """Count a final answer (DONE, possibly with failed items, or GIVE_UP)."""
        batch = f.batch
        f.done = True
        if result.outcome is Outcome.GIVE_UP:
            log.warning("exporter %s: giving up on %d events: %s", self.name, len(batch), result.reason)
            self._give_up(batch, result.reason or "give_up", f.attempts)
            return
        failed: dict[str, list[Event]] = {}
        for i, outcome, reason in result.items:
            if outcome is not Outcome.DONE and 0 <= i < len(batch):
                failed.setdefault(reason or "item_failed", []).append(batch[i])
        for reason, evs in failed.items():
            self._give_up(evs, reason, f.attempts)
        ok = len(batch) - sum(len(v) for v in failed.values())
        self.sent += ok
        self._m_sent.inc(ok)

    def _interrupted(self, f: _Flight, reason: str) -> bool:
        if self._buf.durable:
            return False
        self._give_up(f.batch, reason, f.attempts)
        f.done = True
        return True

    def _sleep(self, delay: float) -> None:
        # Before shutdown a stop request cuts the wait short; during the drain, sleep for real.
        if not self._stopping.wait(delay):
            return
        time.sleep(max(0.0, min(delay, self._deadline - time.monotonic())))

    def _give_up(self, events: list[Event], reason: str, attempts: int) -> None:
        # Dead letter first, count second: once a drop is visible its record is already written.
        self._dead_letter(events, reason, attempts)
        self._drop(reason, len(events))

    def _dead_letter(self, events: list[Event], reason: str, attempts: int) -> None:
        if self.dead_letters is None or not events:
            return
        try:
            n = self.dead_letters.write(events, reason, attempts)
        except Exception:  # noqa: BLE001 - dead letters must never take the worker down
            log.exception("exporter %s: dead letter failed", self.name)
            n = 0
        if n:
            with self._drop_lock:
                self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + n
            self._metrics.dead_lettered.labels(self.name, reason).inc(n)
        if n < len(events):
            log.warning("exporter %s: %d events could not be dead-lettered (%s); counted as dropped",
                        self.name, len(events) - n, self.dead_letters.describe())

    def _drop(self, reason: str, n: int) -> None:
        if n <= 0:
            return
        with self._drop_lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        self._metrics.events_dropped.labels(self.name, reason).inc(n)
