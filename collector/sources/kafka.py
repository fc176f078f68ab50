"""Kafka source: the aggregator (`siemhub aggregate`). Consumes native events with a consumer group and
feeds them to the same router and exporters as the agent, at least once end to end.

Offsets are committed only after every exporter an event was routed to has finished it
(`Pipeline.delivered(marks)`): per partition, the source keeps the marks of each consumed batch in
offset order and commits the highest offset whose batch, and every batch before it, is delivered (+1).
On a rebalance the revoked partitions get `revoke_timeout` seconds to finish, then what is delivered is
committed; the next owner re-reads the rest (duplicates, never loss). Messages that are not native
events are counted, logged and written to the dead-letter file, never fatal. A SIGTERM stops
consuming, waits for deliveries (shutdown_deadline), commits and leaves the group.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from pydantic import Field

from siemhub.collector.core.decode import EventDecoder
from siemhub.collector.core.kafka import KafkaConnection, LibrdkafkaLog, client_config

log = logging.getLogger("siemhub.sources.kafka")


class KafkaSourceConfig(KafkaConnection):
    topics: list[str] = Field(min_length=1, description="topics to read; '^regex' subscribes by pattern")
    group_id: str = Field("siemhub-aggregators", min_length=1, description="consumer group of the replicas")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a group without a committed offset starts")
    session_timeout_ms: int = Field(10_000, ge=1000, description="a replica silent this long leaves the group")
    max_poll_messages: int = Field(2000, ge=1, description="messages taken per consume() call")
    poll_timeout: float = Field(0.2, gt=0, le=5)
    commit_interval: float = Field(1.0, gt=0, description="seconds between offset commits")
    revoke_timeout: float = Field(10.0, ge=0, description="seconds a revoked partition gets to finish deliveries")
    lag_interval: float = Field(5.0, gt=0, description="seconds between consumer lag updates")
    dead_letter_path: str | None = Field(None, description="JSON-lines file for messages that are not events")


@dataclass
class _Partition:
    # (last offset of a consumed batch, acknowledgement marks of that batch), in offset order
    pending: deque = field(default_factory=deque)
    commit_at: int = -1  # next offset to commit (last delivered + 1); -1: nothing delivered yet
    committed: int = -1
    start: int = -1  # offset of the first message read since the assignment: the group's committed
    # offset (or the reset point) then, which is where the lag counts from until we commit


class KafkaSource:
    def __init__(self, cfg: KafkaSourceConfig, pipeline, shutdown_deadline: float = 10.0) -> None:
        from prometheus_client import Counter, Gauge

        self.cfg = cfg
        self.pipeline = pipeline
        self.shutdown_deadline = shutdown_deadline
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._stop = threading.Event()
        self._consumer = None
        self._dead_letter = None
        self._decoder = EventDecoder()
        r = pipeline.metrics.registry
        self.m_consumed = Counter("siemhub_kafka_consumed_messages", "Messages read from Kafka", ["topic"], registry=r)
        self.m_bad = Counter("siemhub_kafka_bad_messages", "Messages that are not native events", ["topic", "reason"],
                             registry=r)
        self.m_commits = Counter("siemhub_kafka_commits", "Offset commits, by result", ["result"], registry=r)
        self.m_rebalances = Counter("siemhub_kafka_rebalances", "Partitions assigned/revoked/lost", ["kind"],
                                    registry=r)
        self.m_lag = Gauge("siemhub_kafka_consumer_lag", "Messages in the partition after the committed offset",
                           ["topic", "partition"], registry=r)
        self.consumed = 0
        self.bad: dict[str, int] = {}

    # --- lifecycle ---

    def consumer_config(self) -> dict:
        c = self.cfg
        conf = client_config(KafkaConnection(brokers=c.brokers, security=c.security))
        conf.update({
            "group.id": c.group_id,
            "enable.auto.commit": False,  # commits follow deliveries, see _commit
            "enable.auto.offset.store": False,
            "auto.offset.reset": c.auto_offset_reset,
            "session.timeout.ms": c.session_timeout_ms,
            "heartbeat.interval.ms": max(100, c.session_timeout_ms // 3),
            "enable.partition.eof": False,
            # librdkafka stops fetching a partition whose local queue is over its thresholds for
            # fetch.queue.backoff.ms (1000 by default); a replica that drains the queue faster than
            # that then sits idle waiting for the next fetch (measured: 60% of its time with a
            # backlog, 106k -> 258k events/s with 20 ms in a consumer doing ~4 µs of work per event).
            "fetch.queue.backoff.ms": 20,
        })
        conf.update(c.properties)
        return conf

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def run(self, duration: float | None = None) -> None:
        from confluent_kafka import Consumer

        if self.cfg.dead_letter_path:
            path = self.cfg.dead_letter_path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._dead_letter = open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")  # noqa: SIM115
        consumer = self._consumer = Consumer(self.consumer_config(), logger=LibrdkafkaLog(log))
        consumer.subscribe(self.cfg.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        end = time.monotonic() + duration if duration else float("inf")
        next_commit = time.monotonic() + self.cfg.commit_interval
        next_lag = time.monotonic() + self.cfg.lag_interval
        try:
            while not self._stop.is_set() and time.monotonic() < end:
                msgs = consumer.consume(num_messages=self.cfg.max_poll_messages, timeout=self.cfg.poll_timeout)
                if msgs:
                    self._handle(msgs)
                now = time.monotonic()
                if now >= next_commit:
                    self._commit()
                    next_commit = now + self.cfg.commit_interval
                if now >= next_lag:
                    self._update_lag()
                    next_lag = now + self.cfg.lag_interval
            self._wait_delivered(list(self._parts), time.monotonic() + self.shutdown_deadline)
            self._commit()
        finally:
            consumer.close()  # leaves the group; on_revoke commits what is delivered
            self._consumer = None
            if self._dead_letter is not None:
                self._dead_letter.close()

    # --- messages ---

    def _handle(self, msgs: list) -> None:
        # the values of one consume() are decoded in one parse, repeated process/parent objects once
        # (collector/core/decode.py); a batch with a bad value is decoded value by value
        values: list[bytes] = []
        taken: list = []
        last: dict[tuple[str, int], int] = {}
        first: dict[tuple[str, int], int] = {}
        counts: dict[tuple[str, int], int] = {}
        tp, run = None, 0  # messages come in runs of one partition: count a run, not each message
        empty = False
        for m in msgs:
            if m.error() is not None:
                log.warning("consume error: %s", m.error().str())
                continue
            here = (m.topic(), m.partition())
            if here != tp:
                if tp is not None:
                    counts[tp] = counts.get(tp, 0) + run
                tp, run = here, 0
                first.setdefault(here, m.offset())
            run += 1
            last[here] = m.offset()
            value = m.value()
            taken.append(m)
            values.append(value)
            if value is None:
                empty = True
        events: list = []
        if values and not empty:
            try:  # the common case: every value an event, one parse, nothing to look at per message
                events = self._decoder.decode_many(values)
            except msgspec.MsgspecError:
                pass
        if not events and values:
            decoded = iter(self._decoder.decode_each([v for v in values if v is not None]))
            for m, value in zip(taken, values):  # rejects in offset order
                if value is None:
                    self._reject(m, "empty")
                    continue
                e = next(decoded)
                if type(e) is msgspec.ValidationError:
                    self._reject(m, "invalid_event")
                elif isinstance(e, msgspec.MsgspecError):
                    self._reject(m, "invalid_json")
                else:
                    events.append(e)
        if tp is not None:
            counts[tp] = counts.get(tp, 0) + run
        consumed: dict[str, int] = {}
        for (topic, _), n in counts.items():
            consumed[topic] = consumed.get(topic, 0) + n
        for topic, n in consumed.items():
            self.m_consumed.labels(topic).inc(n)
            self.consumed += n
        marks = self.pipeline.emit(events, wait=True) if events else {}
        for tp, offset in last.items():
            part = self._parts.get(tp)
            if part is None:  # assigned before our callback saw it (should not happen); track anyway
                part = self._parts[tp] = _Partition()
            if part.start < 0:
                part.start = first[tp]
            part.pending.append((offset, marks))

    def _reject(self, m, reason: str) -> None:
        self.bad[reason] = self.bad.get(reason, 0) + 1
        self.m_bad.labels(m.topic(), reason).inc()
        if self.bad[reason] <= 5 or self.bad[reason] % 1000 == 0:
            log.warning("skipping %s message at %s[%d]@%d (%d so far)", reason, m.topic(), m.partition(),
                        m.offset(), self.bad[reason])
        if self._dead_letter is not None:
            value = m.value() or b""
            key = m.key()
            rec = {"time": time.time(), "source": "kafka", "reason": reason, "topic": m.topic(),
                   "partition": m.partition(), "offset": m.offset(),
                   "key_b64": base64.b64encode(key).decode() if key is not None else None,
                   "value_b64": base64.b64encode(value).decode()}
            self._dead_letter.write(json.dumps(rec).encode() + b"\n")
            self._dead_letter.flush()

    # --- offsets ---

    def _advance(self, part: _Partition) -> None:
        delivered = self.pipeline.delivered
        while part.pending and delivered(part.pending[0][1]):
            offset, _ = part.pending.popleft()
            part.commit_at = offset + 1

    def _commit(self, tps: list[tuple[str, int]] | None = None) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._consumer
        if consumer is None:
            return
        todo = []
        for tp in tps if tps is not None else list(self._parts):
            part = self._parts.get(tp)
            if part is None:
                continue
            self._advance(part)
            if part.commit_at > part.committed:
                todo.append((tp, part))
        if not todo:
            return
        try:
            consumer.commit(offsets=[TopicPartition(t, p, part.commit_at) for (t, p), part in todo],
                            asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance is in progress: the next commit tries again
            self.m_commits.labels("failed").inc()
            log.warning("offset commit failed: %s", exc.args[0].str() if exc.args else exc)
            return
        for _, part in todo:
            part.committed = part.commit_at
        self.m_commits.labels("ok").inc()

    def _wait_delivered(self, tps: list[tuple[str, int]], deadline: float) -> bool:
        while True:
            waiting = False
            for tp in tps:
                part = self._parts.get(tp)
                if part is not None:
                    self._advance(part)
                    waiting = waiting or bool(part.pending)
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _update_lag(self) -> None:
        """Lag = the partition's log end - our committed offset (before our first commit: where we started
        reading, i.e. the group's committed offset or the reset point). Only local state: the log end
        comes from librdkafka's cache, which every fetch response updates. Asking the broker
        (`get_watermark_offsets` without `cached`) blocks this thread, the one that consumes, for a
        round trip per partition behind the fetches in flight: measured, 40% of a replica's time with
        a backlog (bench/aggregator_scaling.py)."""
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._consumer
        for (topic, partition), part in list(self._parts.items()):
            tp = TopicPartition(topic, partition)
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                base = part.committed if part.committed >= 0 else part.start
                if base < 0:  # nothing read since the assignment: where the consumer stands
                    base = consumer.position([tp])[0].offset
            except KafkaException:
                continue
            if high >= 0 and base >= 0:
                self.m_lag.labels(topic, str(partition)).set(max(0, high - base))

    # --- rebalance callbacks (run inside consume(), on this thread) ---

    def _on_assign(self, consumer, partitions) -> None:
        self.m_rebalances.labels("assigned").inc(len(partitions))
        for p in partitions:
            self._parts[(p.topic, p.partition)] = _Partition()
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing")

    def _on_revoke(self, consumer, partitions) -> None:
        self.m_rebalances.labels("revoked").inc(len(partitions))
        tps = [(p.topic, p.partition) for p in partitions]
        if not self._wait_delivered(tps, time.monotonic() + self.cfg.revoke_timeout):
            log.warning("revoked partitions still had undelivered events after %.1fs; the next owner re-reads them",
                        self.cfg.revoke_timeout)
        self._commit(tps)
        self._forget(tps)

    def _on_lost(self, consumer, partitions) -> None:
        # The group moved on without us (session timeout): committing now would fail or be stale.
        self.m_rebalances.labels("lost").inc(len(partitions))
        self._forget([(p.topic, p.partition) for p in partitions])

    def _forget(self, tps) -> None:
        for tp in tps:
            self._parts.pop(tp, None)
            try:
                self.m_lag.remove(tp[0], str(tp[1]))
            except KeyError:
                pass

    def stats(self) -> dict:
        return {"consumed": self.consumed, "bad": dict(self.bad)}
