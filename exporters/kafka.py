"""Kafka exporter on confluent-kafka (librdkafka): one message per event.

- Idempotent producer (enable.idempotence, acks=all) by default: librdkafka's own retries never
  duplicate or reorder messages within a partition.
- Topic from a template (`siemhub.{type}`), key from a template (default `{node}/{exec_id}`, so every
  event of one process lands in one partition, in order), headers with the schema version, event type,
  format and content type.
- `encode(batch)` is pure: a list of (topic, key, value, headers). `send` produces them and serves
  delivery reports until every message has one. The batch is DONE only when all were delivered;
  a retry re-sends only the messages that have not been delivered yet (the payload remembers them).
- Whether a Kafka error is retryable is decided in one place, `outcome_for_kafka_error`.

`KafkaConnection` (brokers, security, properties) and `client_config` live in collector/core/kafka.py,
shared with the aggregator's Kafka source (collector/sources/kafka.py).
"""

from __future__ import annotations

import logging
import string
import time
from collections import deque
from collections.abc import Sequence
from functools import lru_cache
from itertools import repeat
from operator import length_hint
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from siemhub.collector.core.event import SCHEMA_VERSION, Event
from siemhub.collector.core.kafka import KafkaConnection, LibrdkafkaLog, PropertyValue, client_config
from siemhub.exporters.base import DONE, BatchConfig, Exporter, ExporterConfig, Outcome, SendResult, batch_defaults
from siemhub.exporters.formats import FORMATS, get_format

log = logging.getLogger("siemhub.exporters.kafka")


# --- templates: topic and key ----------------------------------------------------------------------

TEMPLATE_FIELDS = ("type", "node", "severity", "exec_id", "pid", "namespace")
_TOPIC_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class Template:
    """`{name}` placeholders from TEMPLATE_FIELDS and literal text; nothing else (no attribute or
    index access, no format specs), so a config file cannot reach into Python objects."""

    __slots__ = ("text", "parts", "fields")

    def __init__(self, text: str) -> None:
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conv in string.Formatter().parse(text):
            if name is not None:
                if name not in TEMPLATE_FIELDS:
                    raise ValueError(f"unknown placeholder {{{name}}} (known: {', '.join(TEMPLATE_FIELDS)})")
                if spec or conv:
                    raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
            parts.append((literal, name))
        self.text = text
        self.parts = parts
        self.fields = {n for _, n in parts if n}

    def render(self, e: Event) -> str:
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_field(e, name))
        return "".join(out)


def _field(e: Event, name: str) -> str:
    p = e.process
    if name == "type":
        return e.type
    if name == "node":
        return e.node.name
    if name == "severity":
        return e.severity
    if name == "exec_id":
        return p.exec_id if p is not None else ""
    if name == "pid":
        return str(p.pid) if p is not None else ""
    if name == "namespace":
        return p.pod.namespace if p is not None and p.pod is not None else ""
    raise KeyError(name)


def safe_topic(name: str) -> str:
    """Kafka topic names allow [a-zA-Z0-9._-], at most 249 characters; anything else becomes '_'."""
    if all(c in _TOPIC_OK for c in name) and 0 < len(name) <= 249:
        return name
    return ("".join(c if c in _TOPIC_OK else "_" for c in name) or "_")[:249]


# --- configuration ------------------------------------------------------------------------------------


BATCH_DEFAULTS = BatchConfig(max_events=2048, max_wait=0.5)


class KafkaConfig(ExporterConfig, KafkaConnection):
    topic: str = Field("siemhub.events", description="topic template; placeholders: " + ", ".join(TEMPLATE_FIELDS))
    key: str = Field("{node}/{exec_id}", description="message key template; empty: no key (round-robin)")
    compression: Literal["none", "lz4", "zstd", "gzip", "snappy"] = "lz4"
    idempotence: bool = True
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: float = Field(20.0, ge=0, description="librdkafka linger.ms: wait this long to fill batches")
    batch_bytes: int = Field(1_000_000, ge=1, description="librdkafka batch.size: bytes per partition batch")
    message_max_bytes: int = Field(1_000_000, ge=1000, description="larger messages are given up (dead letter)")
    delivery_timeout_ms: int = Field(30_000, ge=1000, description="librdkafka message.timeout.ms: a message not "
                                     "delivered by then comes back as a retryable failure")
    batch: BatchConfig = BATCH_DEFAULTS
    # Batches produced and waiting for their delivery reports: while the oldest waits (linger + broker
    # round trip) the next ones are already encoded and produced. Batches still finish in order.
    # 6 x 2048 events cover the ~18 ms a batch takes to come back at 500k events/s on the test VM
    # (4 in flight: the window is the limit, ratio 0.60 in bench/kafka_throughput.py). More in flight
    # costs CPU per event (8 or 10: 0.2-0.35 µs more per event, measured; docs/kafka.md).
    max_in_flight: int = Field(6, ge=1, le=64, description="exporter batches waiting for delivery reports")

    # A partial `batch:` keeps the Kafka defaults for what it leaves out: `batch: {max_wait: 1}` alone
    # would otherwise mean 512-event batches, a quarter of the throughput.
    _batch_defaults = batch_defaults(BATCH_DEFAULTS)

    @field_validator("topic", "key")
    @classmethod
    def _template(cls, v: str) -> str:
        Template(v)
        return v

    @model_validator(mode="after")
    def _acks(self) -> KafkaConfig:
        if self.idempotence and self.acks != "all":
            raise ValueError("idempotence needs acks: all (set idempotence: false to use acks 1 or 0)")
        return self


def producer_config(cfg: KafkaConfig) -> dict[str, PropertyValue]:
    conf = client_config(KafkaConnection(brokers=cfg.brokers, security=cfg.security))
    conf.update({
        "enable.idempotence": cfg.idempotence,
        "acks": cfg.acks,
        "compression.type": cfg.compression,
        "linger.ms": cfg.linger_ms,
        "batch.size": cfg.batch_bytes,
        "message.max.bytes": cfg.message_max_bytes,
        "message.timeout.ms": cfg.delivery_timeout_ms,
        # Outstanding messages are bounded by our own batches; let librdkafka hold plenty.
        "queue.buffering.max.messages": 1_000_000,
    })
    conf.update(cfg.properties)
    return conf


if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Producer

# confluent-kafka (librdkafka, ~9 MB resident) is imported only where it is used, so an agent or a
# config check that does not use Kafka never loads it.


# --- the one place where Kafka errors become retry decisions ------------------------------------------


@lru_cache(maxsize=1)
def _codes() -> tuple[frozenset, frozenset]:
    from confluent_kafka import KafkaError

    give_up = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_EXCEPTION, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError._AUTHENTICATION, KafkaError.INVALID_REQUIRED_ACKS, KafkaError._INVALID_ARG,
    KafkaError.POLICY_VIOLATION,
    })
    retry = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._QUEUE_FULL, KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NETWORK_EXCEPTION, KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError._FATAL, KafkaError.KAFKA_STORAGE_ERROR, KafkaError.BROKER_NOT_AVAILABLE,
    })
    return give_up, retry


def outcome_for_kafka_error(err: KafkaError) -> tuple[Outcome, str]:
    """Delivery-report or produce() error -> (outcome, metric-safe reason). Oversized messages, missing
    topics (auto-create off), authorization and invalid records give up (retrying cannot help; they
    go to the dead-letter destination); timeouts, broker trouble and leadership changes retry. An
    idempotent producer's fatal error retries on a new producer (the exporter rebuilds it)."""
    code = err.code()
    reason = f"kafka_{err.name().lstrip('_').lower()}"
    give_up, retry = _codes()
    if code in give_up:
        return Outcome.GIVE_UP, reason
    if code in retry or err.retriable() or err.fatal():
        return Outcome.RETRY, reason
    return Outcome.GIVE_UP, reason


# --- payload --------------------------------------------------------------------------------------------

PENDING, DELIVERED, FAILED = 0, 1, 2
_DELIVERED = bytes((DELIVERED,))


class KafkaBatch(Sequence):
    """The encoded batch: one message per event, kept as four columns (topics, keys (str or None),
    values, headers) that submit() hands to produce() in one C-level loop; read as a sequence it gives
    (topic, key, value, headers) tuples. It also remembers, across retries of the same payload, which
    messages were already delivered or given up, so a retry re-sends only the rest (no duplicates of
    what Kafka already has).

    A batch built by the exporter also knows how to encode its values again (`source`): once every
    value was handed to librdkafka (which keeps its own copy), `release()` lets them go while they are
    still in the CPU caches, instead of holding 2048 x ~500 bytes until the last delivery report comes
    back. A retry, or a failure that must be matched to its message, encodes them again (the formats
    are deterministic: the same event gives the same bytes)."""

    __slots__ = ("topics", "keys", "_values", "headers", "state", "reasons", "_source")

    def __init__(self, topics: list[str], keys: list[str | None], values: list[bytes], headers: list[list],
                 source: tuple | None = None) -> None:
        if not len(topics) == len(keys) == len(values) == len(headers):
            raise ValueError("columns of different lengths")
        self.topics, self.keys, self._values, self.headers = topics, keys, values, headers
        self.state = bytearray(len(values))  # PENDING / DELIVERED / FAILED per message
        self.reasons: dict[int, str] = {}
        self._source = source  # (encode values, events) or None: the values are kept

    @property
    def values(self) -> list[bytes]:
        values = self._values
        if values is None:
            encode, events = self._source  # type: ignore[misc]
            values = self._values = encode(events)
            if len(values) != len(self.state):
                raise RuntimeError("re-encoding changed the number of messages")
        return values

    def release(self) -> None:
        """Let the values go (they can be encoded again); a no-op for a batch built from messages."""
        if self._source is not None:
            self._values = None

    @classmethod
    def of(cls, messages: Sequence[tuple]) -> KafkaBatch:
        """From (topic, key, value, headers) tuples."""
        columns = [list(c) for c in zip(*messages, strict=True)] if messages else [[], [], [], []]
        return cls(*columns)

    def __len__(self) -> int:
        return len(self.state)

    def __getitem__(self, i: int) -> tuple:
        return self.topics[i], self.keys[i], self.values[i], self.headers[i]

    def __iter__(self):
        return zip(self.topics, self.keys, self.values, self.headers)


class _Round:
    """One send attempt of a batch (the exporter's ticket): its delivery reports only, so a late report
    of an earlier attempt cannot count here."""

    __slots__ = ("payload", "producer", "deadline", "produced", "reports", "errors")

    def __init__(self, payload: KafkaBatch, producer: Producer, deadline: float) -> None:
        self.payload, self.producer, self.deadline = payload, producer, deadline
        self.produced: Sequence[int] = ()  # indices in the payload, set by submit()
        self.reports = 0
        self.errors: list[tuple[KafkaError, bytes | None]] = []

    def on_delivery(self, err: KafkaError | None, msg) -> None:
        self.reports += 1
        if err is not None:
            self.errors.append((err, msg.value()))


class KafkaExporter(Exporter):
    config_model = KafkaConfig
    formats = tuple(f for f in ("native", "ocsf", "ecs") if f in FORMATS)

    def __init__(self, name: str, config: KafkaConfig) -> None:
        super().__init__(name, config)
        self._format = get_format(config.format)
        self._topic = Template(config.topic)
        self._key = Template(config.key)
        content_type = b"application/json"
        self._base_headers = [("siemhub.format", config.format.encode()), ("content-type", content_type)]
        self._headers: dict[tuple[str, str], list] = {}
        self._headers_now: dict[str, list] = {}  # by event type, for the current schema version
        self._producer: Producer | None = None
        self.max_in_flight = config.max_in_flight
        self._stalled = 0  # send rounds in a row in which nothing was delivered
        self.send_timeout = config.delivery_timeout_ms / 1000 + 5

    # --- lifecycle ---

    def start(self) -> None:
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        from confluent_kafka import Producer

        return Producer(producer_config(self.config), logger=LibrdkafkaLog(log), error_cb=self._on_error)

    def _on_error(self, err: KafkaError) -> None:
        from confluent_kafka import KafkaError

        # Client-level errors (brokers down, auth). Messages keep their own delivery reports; this is
        # only for the operator. A fatal error (idempotence state lost) is handled in send().
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            log.debug("exporter %s: %s", self.name, err.str())
        else:
            log.warning("exporter %s: %s", self.name, err.str())

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()  # whatever it still holds is re-sent by the next attempt
            producer.flush(0)

    def flush(self, timeout: float = 5.0) -> None:
        if self._producer is not None:
            self._producer.poll(0)

    def close(self) -> None:
        if self._producer is not None:
            left = self._producer.flush(10)
            if left:
                log.warning("exporter %s: %d messages had no delivery report at close", self.name, left)
            self._producer = None

    # --- encode (pure) ---

    def _headers_for(self, e: Event) -> list:
        key = (e.type, e.schema_version)
        h = self._headers.get(key)
        if h is None:
            h = [("siemhub.schema_version", e.schema_version.encode()), ("siemhub.type", e.type.encode()),
                 *self._base_headers]
            self._headers[key] = h
            if e.schema_version == SCHEMA_VERSION:
                self._headers_now[e.type] = h
        return h

    def _encode_values(self, batch: Sequence[Event]) -> list[bytes]:
        each = self._format.encode_each
        if each is not None:
            return each(batch)
        # one C call encodes the batch; JSON lines never contain a raw newline inside a value
        values = self._format.encode_lines(batch).split(b"\n")
        values.pop()  # the b"" after the last newline
        return values

    def encode(self, batch: Sequence[Event]) -> KafkaBatch:
        values = self._encode_values(batch)
        topic_t, key_t = self._topic, self._key
        if topic_t.fields:
            topics = [safe_topic(topic_t.render(e)) for e in batch]
        else:
            topics = [safe_topic(topic_t.text)] * len(batch)
        # Keys stay str: librdkafka takes their UTF-8 bytes without a bytes object per message.
        if key_t.text == "{node}/{exec_id}":  # the default, without the template walk
            keys = [f"{e.node.name}/{e.process.exec_id if e.process is not None else ''}" for e in batch]
        else:
            keys = [key_t.render(e) or None for e in batch]
        # Header lists are built once per event type and shared by its messages.
        now, cur, slow = self._headers_now.get, SCHEMA_VERSION, self._headers_for
        headers = [(now(e.type) if e.schema_version == cur else None) or slow(e) for e in batch]
        return KafkaBatch(topics, keys, values, headers, source=(self._encode_values, batch))

    # --- send (I/O) ---

    def send(self, payload: KafkaBatch) -> SendResult:
        ticket = self.submit(payload)
        while True:
            result = self.poll(ticket, 1.0)
            if result is not None:
                return result

    def submit(self, payload: KafkaBatch) -> _Round:
        """Produce the messages of `payload` not delivered yet; their reports are served by poll()."""
        if not isinstance(payload, KafkaBatch):
            payload = KafkaBatch.of(payload)
        producer = self._producer
        if producer is None:
            producer = self._producer = self._new_producer()
        state = payload.state
        # message.timeout.ms bounds how long librdkafka keeps a message; send_timeout is a safety net.
        rnd = _Round(payload, producer, time.monotonic() + self.send_timeout)
        columns = payload.topics, payload.values, payload.keys, payload.headers
        n = len(state)
        if state.count(PENDING) == n:  # the first attempt: every message, no index list
            todo = None
        else:  # a retry: only what has no outcome yet
            todo = [i for i in range(n) if state[i] == PENDING]
            columns = tuple([col[i] for i in todo] for col in columns)
        refused = _produce_all(producer, rnd.on_delivery, *columns)
        del columns
        payload.release()  # librdkafka holds its own copies now
        if not refused:
            rnd.produced = range(n) if todo is None else todo
            return rnd
        # Refused before sending (too large, unknown topic...): given up now, or left pending for the
        # next attempt (retryable).
        out = set()
        for pos, (outcome, reason) in refused.items():
            i = pos if todo is None else todo[pos]
            out.add(i)
            if outcome is Outcome.GIVE_UP:
                state[i] = FAILED
                payload.reasons[i] = reason
        rnd.produced = [i for i in (range(n) if todo is None else todo) if i not in out]
        return rnd

    def poll(self, rnd: _Round, timeout: float, idle: bool = False) -> SendResult | None:
        """Serve delivery reports (of every round in flight) for up to `timeout`; the result of `rnd`
        once each of its messages has a report, or its deadline passed, or its producer was replaced
        (the purge reported what it could).

        `idle`: the runner has nothing more to send for now. librdkafka's linger then only delays what
        it holds (nothing will join those messages), so they go out at once: flush() tells librdkafka
        to treat linger as expired for as long as it waits, serving the reports meanwhile. This is what
        a burst's last batch and an agent's quiet periods get: linger_ms is spent only while more is
        being produced."""
        if rnd.reports < len(rnd.produced) and rnd.producer is self._producer:
            # Past the deadline, still serve what is queued: while an older batch was being retried
            # nobody polled, and reports that came meanwhile must count (not be re-sent).
            left = rnd.deadline - time.monotonic()
            wait = min(timeout, left) if left > 0 else 0
            if idle and wait > 0:
                rnd.producer.flush(wait)  # returns once nothing is outstanding, or after `wait`
            else:
                rnd.producer.poll(wait)
            if rnd.reports < len(rnd.produced) and time.monotonic() < rnd.deadline:
                return None
        return self._settle(rnd.payload, rnd)

    def _settle(self, payload: KafkaBatch, rnd: _Round) -> SendResult:
        state = payload.state
        produced = rnd.produced
        if not rnd.errors and rnd.reports >= len(produced):
            # Every message produced has a report and none failed: the common case, in bulk.
            if len(produced) == len(state):  # the whole batch, at its first attempt
                state[:] = _DELIVERED * len(state)
            else:
                for i in produced:
                    state[i] = DELIVERED
            self._stalled = 0
            return self._result(payload)
        failed: dict[int, tuple[Outcome, str]] = {}
        fatal = unmatched = False
        if rnd.errors:
            # Only failures carry their value back; values are unique (each holds its event id).
            values = payload.values
            by_value = {values[i]: i for i in produced}
            for err, value in rnd.errors:
                i = by_value.get(value)
                if i is None:  # cannot happen (encodings are deterministic); if it did, nothing of
                    unmatched = True  # this round counts as delivered: re-sent rather than lost
                    continue
                failed[i] = outcome_for_kafka_error(err)
                fatal = fatal or err.fatal()
        missing = rnd.reports < len(produced) or unmatched
        retry_reason = ""
        for i in produced:
            if i in failed:
                outcome, reason = failed[i]
                if outcome is Outcome.GIVE_UP:
                    state[i] = FAILED
                    payload.reasons[i] = reason
                else:
                    retry_reason = retry_reason or reason
            elif not missing:
                state[i] = DELIVERED
        stalled = bool(produced) and not any(state[i] == DELIVERED for i in produced) and bool(retry_reason)
        self._stalled = self._stalled + 1 if stalled else 0
        if fatal or (self.config.idempotence and self._stalled >= 2):
            # The idempotent producer lost its state, or made no progress for two rounds: after a broker
            # lost its log (a restart with memory storage, a rebuilt cluster) librdkafka's idempotence
            # state can wait forever for sequence numbers the broker no longer knows. A fresh producer
            # gets a new producer id; the messages not yet delivered are re-sent on the next attempt.
            log.warning("exporter %s: %s, recreating the producer", self.name,
                        "producer fatal error" if fatal else f"no delivery in two rounds ({retry_reason})")
            self._stalled = 0
            self._drop_producer()
        if missing:
            return SendResult(Outcome.RETRY, "kafka_unmatched_report" if unmatched else "kafka_no_delivery_report")
        return self._result(payload, retry_reason)

    @staticmethod
    def _result(payload: KafkaBatch, retry_reason: str = "") -> SendResult:
        if PENDING in payload.state:
            return SendResult(Outcome.RETRY, retry_reason or "kafka_not_produced")
        if payload.reasons:
            return SendResult(Outcome.DONE, items=[(i, Outcome.GIVE_UP, r) for i, r in sorted(payload.reasons.items())])
        return DONE


def _produce_all(producer: Producer, on_delivery, topics: list, values: list, keys: list,
                 headers: list) -> dict[int, tuple[Outcome, str]]:
    """produce() each message of the columns, in order; returns the positions produce() refused, with
    their outcome. The loop runs in C (map over the columns, consumed by a zero-length deque) and the
    arguments are positional: produce(topic, value, key, partition, callback, on_delivery, timestamp,
    headers), partition -1 for the configured partitioner, timestamp 0 for now. A refusal stops the
    map after it took message i from every column; `length_hint` of the values' iterator says which
    i it was, and the map resumes with the next message."""
    from confluent_kafka import KafkaException

    n = len(values)
    left = iter(values)
    calls = map(producer.produce, topics, left, keys, repeat(-1), repeat(on_delivery), repeat(None), repeat(0),
                headers)
    refused: dict[int, tuple[Outcome, str]] = {}
    while True:
        try:
            deque(calls, 0)
            return refused
        except BufferError:  # librdkafka's queue is full: serve reports, then try this message again
            i = n - length_hint(left) - 1
            while True:
                producer.poll(0.05)
                try:
                    producer.produce(topics[i], values[i], keys[i], -1, on_delivery, None, 0, headers[i])
                    break
                except BufferError:
                    continue
                except KafkaException as exc:
                    refused[i] = outcome_for_kafka_error(exc.args[0])
                    break
        except KafkaException as exc:  # refused before sending (too large, unknown topic...)
            refused[n - length_hint(left) - 1] = outcome_for_kafka_error(exc.args[0])
