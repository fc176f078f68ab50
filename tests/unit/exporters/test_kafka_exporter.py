"""Kafka exporter without a broker: config checks, templates, encode() (pure), the error table, and
send() bookkeeping against a stand-in producer that reports deliveries the way librdkafka does."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from siemhub.collector import config
from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process
from siemhub.exporters.base import Outcome
from siemhub.exporters.formats import FORMATS
from siemhub.exporters.kafka import (
    DELIVERED,
    FAILED,
    KafkaBatch,
    KafkaExporter,
    Template,
    outcome_for_kafka_error,
    producer_config,
    safe_topic,
)


def _cfg(extra: str = "", env: dict | None = None, monkeypatch=None):
    text = f"""
exporters:
  k:
    type: kafka
    brokers: ["127.0.0.1:9092"]
{extra}
routes: [{{name: all, to: [k]}}]
"""
    return config.parse(text, "k.yaml").exporters["k"]


def _event(i: int, etype: str = "process_exec", exec_id: str = "ex1") -> Event:
    return Event(id=f"id-{i}", time="2026-01-01T00:00:00.000000001Z", type=etype, node=Node(name="n1"),
                 process=Process(exec_id=exec_id, pid=10 + i, binary="/bin/true", args=["/bin/true"]), **EVENT_BASE)


def test_defaults_are_idempotent_and_compressed():
    cls, cfg = _cfg()
    conf = producer_config(cfg)
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    assert conf["compression.type"] == "lz4" and conf["linger.ms"] == 20.0
    assert conf["bootstrap.servers"] == "127.0.0.1:9092" and conf["security.protocol"] == "PLAINTEXT"
    assert cls is KafkaExporter


def test_security_sasl_tls_and_properties(monkeypatch):
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    _, cfg = _cfg("""    compression: zstd
    security:
      protocol: sasl_ssl
      sasl: {mechanism: SCRAM-SHA-256, username: agent, password: "${KAFKA_PW}"}
      tls: {ca_file: /etc/ca.pem, cert_file: /etc/c.pem, key_file: /etc/k.pem}
    properties: {"client.id": siemhub-a, "socket.keepalive.enable": true}""")
    conf = producer_config(cfg)
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert conf["sasl.password"] == "s3cret" and conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.certificate.location"] == "/etc/c.pem" and conf["ssl.key.location"] == "/etc/k.pem"
    assert conf["client.id"] == "siemhub-a" and conf["compression.type"] == "zstd"
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)  # never in logs or errors


@pytest.mark.parametrize("extra, problem", [
    ("    topic: 'siemhub.{type.__class__}'", "unknown placeholder"),
    ("    topic: 'siemhub.{type!r}'", "format spec"),
    ("    key: '{secret}'", "unknown placeholder"),
    ("    acks: '1'", "idempotence needs acks: all"),
    ("    compression: brotli", "compression"),
    ("    security: {protocol: sasl_plaintext}", "needs a 'sasl' section"),
    ("    security: {protocol: plaintext, tls: {ca_file: /x}}", "'tls' needs protocol ssl"),
    ("    security: {protocol: ssl, tls: {cert_file: /x}}", "cert_file and key_file go together"),
    ("    format: tetragon", "not supported by kafka"),
])
def test_config_errors(extra, problem):
    with pytest.raises(config.ConfigError) as err:
        _cfg(extra)
    assert problem in str(err.value) and "k.yaml:" in str(err.value)


def test_a_partial_batch_section_keeps_the_kafka_defaults():
    _, cfg = _cfg()
    assert (cfg.batch.max_events, cfg.batch.max_wait) == (2048, 0.5)
    _, cfg = _cfg("    batch: {max_wait: 1.5}")
    assert (cfg.batch.max_events, cfg.batch.max_wait) == (2048, 1.5)
    _, cfg = _cfg("    batch: {max_events: 100}")
    assert (cfg.batch.max_events, cfg.batch.max_wait) == (100, 0.5)
    with pytest.raises(Exception, match="max_event"):
        _cfg("    batch: {max_event: 100}")  # unknown keys are still refused


def test_template_and_topic_names():
    t = Template("siemhub.{type}.{node}")
    assert t.render(_event(1)) == "siemhub.process_exec.n1"
    assert safe_topic("siemhub.a b/c") == "siemhub.a_b_c"
    assert safe_topic("x" * 300) == "x" * 249


def test_encode_topic_key_headers():
    cls, cfg = _cfg("    topic: 'siemhub.{type}'")
    ex = cls("k", cfg)
    batch = ex.encode([_event(1), _event(2, "process_exit", "ex2")])
    assert [m[0] for m in batch] == ["siemhub.process_exec", "siemhub.process_exit"]
    assert [m[1] for m in batch] == ["n1/ex1", "n1/ex2"]  # librdkafka sends their UTF-8 bytes
    assert b'"id":"id-1"' in batch[0][2] and b"\n" not in batch[0][2]
    headers = dict(batch[1][3])
    assert headers["siemhub.type"] == b"process_exit" and headers["content-type"] == b"application/json"
    assert headers["siemhub.schema_version"] == EVENT_BASE["schema_version"].encode()
    assert headers["siemhub.format"] == b"native"
    # an empty key template means no key (librdkafka spreads the messages over partitions)
    cls, cfg = _cfg("    key: ''\n    format: ocsf")
    batch = cls("k", cfg).encode([_event(1)])
    assert batch[0][1] is None and b'"class_uid":1007' in batch[0][2]


@pytest.mark.parametrize("fmt", ["native", "ocsf"])  # native encodes each event, ocsf splits its lines
def test_message_values_are_the_formats_json_lines(fmt):
    cls, cfg = _cfg(f"    format: {fmt}")
    events = [_event(1), _event(2, "process_exit", "ex2"), _event(3)]
    lines = FORMATS[fmt].encode_lines(events).split(b"\n")
    assert [m[2] for m in cls("k", cfg).encode(events)] == lines[:-1] and lines[-1] == b""
    assert len(cls("k", cfg).encode([])) == 0


@pytest.mark.parametrize("code, outcome", [
    (KafkaError.MSG_SIZE_TOO_LARGE, Outcome.GIVE_UP),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, Outcome.GIVE_UP),
    (KafkaError._UNKNOWN_TOPIC, Outcome.GIVE_UP),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, Outcome.GIVE_UP),
    (KafkaError.SASL_AUTHENTICATION_FAILED, Outcome.GIVE_UP),
    (KafkaError.INVALID_RECORD, Outcome.GIVE_UP),
    (KafkaError._MSG_TIMED_OUT, Outcome.RETRY),
    (KafkaError._TRANSPORT, Outcome.RETRY),
    (KafkaError._ALL_BROKERS_DOWN, Outcome.RETRY),
    (KafkaError.NOT_LEADER_FOR_PARTITION, Outcome.RETRY),
    (KafkaError.NOT_ENOUGH_REPLICAS, Outcome.RETRY),
    (KafkaError.REQUEST_TIMED_OUT, Outcome.RETRY),
    (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, Outcome.RETRY),
])
def test_error_table(code, outcome):
    got, reason = outcome_for_kafka_error(KafkaError(code))
    assert got is outcome and reason.startswith("kafka_") and " " not in reason


class _Msg:
    def __init__(self, value):
        self._value = value

    def value(self):
        return self._value


class FakeProducer:
    """Accepts produce() and answers each message at poll() or flush() with the error `fate(value)`
    returns (like librdkafka, which serves delivery reports from both)."""

    def __init__(self, fate, refuse=None):
        self.fate, self.refuse = fate, refuse or (lambda v: None)
        self.pending, self.produced = [], []

    def produce(self, topic, value=None, key=None, partition=-1, callback=None, on_delivery=None, timestamp=0,
                headers=None):  # confluent-kafka's signature: the exporter passes every argument by position
        on_delivery = callback or on_delivery
        err = self.refuse(value)
        if err is not None:
            raise KafkaException(KafkaError(err))
        self.produced.append(value)
        self.pending.append((value, on_delivery))

    def flush(self, timeout=None):
        pending, self.pending = self.pending, []
        for value, cb in pending:
            code = self.fate(value)
            cb(KafkaError(code) if code is not None else None, _Msg(value))
        return 0

    def poll(self, timeout=None):
        return self.flush(timeout)


def test_send_retries_only_undelivered_messages():
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(i) for i in range(4)])
    first = {b'"id":"id-1"': KafkaError._MSG_TIMED_OUT, b'"id":"id-2"': KafkaError.MSG_SIZE_TOO_LARGE}

    def fate(value):
        return next((code for needle, code in first.items() if needle in value), None)

    ex._producer = FakeProducer(fate)
    r = ex.send(payload)
    assert r.outcome is Outcome.RETRY and r.reason == "kafka_msg_timed_out"
    assert list(payload.state) == [DELIVERED, 0, FAILED, DELIVERED]
    first.clear()  # the broker is back
    ex._producer = again = FakeProducer(fate)
    r = ex.send(payload)
    assert len(again.produced) == 1 and b'"id":"id-1"' in again.produced[0]  # no duplicates
    assert r.outcome is Outcome.DONE and r.items == [(2, Outcome.GIVE_UP, "kafka_msg_size_too_large")]


def test_send_refused_at_produce_is_given_up():
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(0), _event(1)])
    ex._producer = FakeProducer(lambda v: None,
                                refuse=lambda v: KafkaError.MSG_SIZE_TOO_LARGE if b"id-0" in v else None)
    r = ex.send(payload)
    assert r.outcome is Outcome.DONE and r.items == [(0, Outcome.GIVE_UP, "kafka_msg_size_too_large")]


class FullOnceProducer(FakeProducer):
    """Raises BufferError (librdkafka's queue is full) the first time it is given each value in `full`;
    counts the polls that made room."""

    def __init__(self, fate, refuse=None, full=()):
        super().__init__(fate, refuse)
        self.full, self.polls = set(full), 0

    def produce(self, topic, value=None, key=None, partition=-1, callback=None, on_delivery=None, timestamp=0,
                headers=None):
        if value in self.full:
            self.full.discard(value)
            raise BufferError("Local: Queue full")
        super().produce(topic, value, key, partition, callback, on_delivery, timestamp, headers)

    def poll(self, timeout=None):
        self.polls += 1
        return super().poll(timeout)


def test_refusals_and_a_full_queue_mid_batch_cost_only_their_own_message():
    # produce() runs over the whole batch in one C loop; a refusal or a full queue in the middle must
    # not skip, repeat or reorder the other messages, and each refusal lands on its own index.
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(i) for i in range(6)])
    refuse = {b'"id":"id-1"': KafkaError.MSG_SIZE_TOO_LARGE, b'"id":"id-4"': KafkaError._TRANSPORT}
    ex._producer = p = FullOnceProducer(
        lambda v: None, refuse=lambda v: next((c for k, c in refuse.items() if k in v), None),
        full=[payload[2][2], payload[5][2]])
    r = ex.send(payload)
    assert p.produced == [payload[i][2] for i in (0, 2, 3, 5)]  # in order, once each
    assert p.polls >= 2  # a full queue is served before the same message is tried again
    assert r.outcome is Outcome.RETRY and r.reason == "kafka_not_produced"  # id-4: retryable, still pending
    assert list(payload.state) == [DELIVERED, FAILED, DELIVERED, DELIVERED, 0, DELIVERED]
    # the retry sends only id-4; refused again, for good this time, it is given up under its own index
    refuse[b'"id":"id-4"'] = KafkaError.TOPIC_AUTHORIZATION_FAILED
    ex._producer = again = FakeProducer(lambda v: None, refuse=lambda v: next((c for k, c in refuse.items() if k in v), None))
    r = ex.send(payload)
    assert again.produced == []
    assert r.outcome is Outcome.DONE and r.items == [(1, Outcome.GIVE_UP, "kafka_msg_size_too_large"),
                                                      (4, Outcome.GIVE_UP, "kafka_topic_authorization_failed")]


def test_payload_reads_as_messages_and_builds_from_them():
    cls, cfg = _cfg()
    payload = cls("k", cfg).encode([_event(0), _event(1)])
    messages = list(payload)
    assert len(payload) == 2 and messages[1] == payload[1] == payload[-1]
    copy = KafkaBatch.of(messages)
    assert list(copy) == messages and list(copy.state) == [0, 0]
    assert len(KafkaBatch.of([])) == 0


def test_values_are_let_go_once_produced_and_encoded_again_for_a_retry():
    # librdkafka copies each value at produce(): the batch drops its own right away (cache-hot) and
    # encodes them again only for a retry or to match a failure report, byte for byte.
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(i) for i in range(3)])
    original = list(payload)
    ex._producer = FakeProducer(lambda v: KafkaError._MSG_TIMED_OUT if b'"id":"id-1"' in v else None)
    t = ex.submit(payload)
    assert payload._values is None and len(payload) == 3
    r = ex.poll(t, 0)
    assert r.outcome is Outcome.RETRY and list(payload.state) == [DELIVERED, 0, DELIVERED]
    payload.release()
    ex._producer = again = FakeProducer(lambda v: None)
    assert ex.send(payload) is not None and again.produced == [original[1][2]]  # the same bytes, once
    assert list(payload) == original
    built = KafkaBatch.of(original)  # no events to encode from: it keeps its values
    built.release()
    assert list(built) == original


class FlushOrPollProducer(FakeProducer):
    def __init__(self):
        super().__init__(lambda v: None)
        self.calls: list[tuple[str, float]] = []

    def flush(self, timeout=None):
        self.calls.append(("flush", timeout))
        return super().flush(timeout)

    def poll(self, timeout=None):
        self.calls.append(("poll", timeout))
        return FakeProducer.flush(self, timeout)


def test_an_idle_poll_flushes_so_linger_does_not_delay_the_last_batch():
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    ex._producer = p = FlushOrPollProducer()
    t = ex.submit(ex.encode([_event(0)]))
    assert ex.poll(t, 0.05, idle=True).outcome is Outcome.DONE
    t = ex.submit(ex.encode([_event(1)]))
    assert ex.poll(t, 0.05).outcome is Outcome.DONE
    assert p.calls == [("flush", 0.05), ("poll", 0.05)]


def test_a_failure_report_matching_no_message_counts_nothing_as_delivered():
    # A failure is matched to its message by value; one that matches none must not let the round's
    # other messages count as delivered by elimination: the round is re-sent (at least once).
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(0), _event(1)])

    class Garbled(FakeProducer):
        def flush(self, timeout=None):
            pending, self.pending = self.pending, []
            for i, (value, cb) in enumerate(pending):
                cb(KafkaError(KafkaError._MSG_TIMED_OUT) if i == 0 else None, _Msg(value + b" "))
            return 0

    ex._producer = Garbled(lambda v: None)
    r = ex.send(payload)
    assert r.outcome is Outcome.RETRY and r.reason == "kafka_unmatched_report"
    assert list(payload.state) == [0, 0]


def test_tls_verification_is_on_by_default_and_turning_it_off_is_logged(caplog):
    _, cfg = _cfg("""    security:
      protocol: ssl
      tls: {ca_file: /etc/ca.pem}""")
    conf = producer_config(cfg)
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf.get("enable.ssl.certificate.verification", True) is True
    caplog.set_level("WARNING")
    _, cfg = _cfg("""    security:
      protocol: ssl
      tls: {insecure: true}""")
    conf = producer_config(cfg)
    assert conf["enable.ssl.certificate.verification"] is False
    assert "verification is OFF" in caplog.text


class HeldProducer(FakeProducer):
    """Reports only the messages the test released (as delivered), or purged ones (as purged)."""

    def __init__(self):
        super().__init__(lambda v: None)
        self.released: set[bytes] = set()
        self.purged = False

    def poll(self, timeout=None):
        keep = []
        for value, cb in self.pending:
            if self.purged:
                cb(KafkaError(KafkaError._PURGE_QUEUE), _Msg(value))
            elif value in self.released:
                cb(None, _Msg(value))
            else:
                keep.append((value, cb))
        self.pending = keep
        return 0

    flush = poll

    def purge(self):
        self.purged = True


def test_rounds_in_flight_are_answered_independently():
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    assert ex.max_in_flight == 6  # the default: the runner keeps up to 6 batches in flight
    first, second = ex.encode([_event(0), _event(1)]), ex.encode([_event(2), _event(3)])
    ex._producer = held = HeldProducer()
    t1, t2 = ex.submit(first), ex.submit(second)
    assert len(held.produced) == 4  # both produced before any report
    held.released.update(m[2] for m in second)
    assert ex.poll(t2, 0).outcome is Outcome.DONE
    assert ex.poll(t1, 0) is None  # the first one's reports are not in yet
    held.released.update(m[2] for m in first)
    assert ex.poll(t1, 0).outcome is Outcome.DONE
    assert list(first.state) == list(second.state) == [DELIVERED, DELIVERED]


def test_rounds_of_a_replaced_producer_are_answered_at_once_and_resent():
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    first, second = ex.encode([_event(0)]), ex.encode([_event(1)])
    ex._producer = HeldProducer()
    t1, t2 = ex.submit(first), ex.submit(second)
    ex._drop_producer()  # what _settle does after a fatal error: purge, serve the purge reports
    for t in (t1, t2):
        r = ex.poll(t, 0)
        assert r.outcome is Outcome.RETRY and r.reason == "kafka_purge_queue"
    # a round whose reports never came (its producer is gone) does not wait for its deadline
    ex._producer = HeldProducer()
    t3 = ex.submit(first)
    ex._producer = again = HeldProducer()
    r3 = ex.poll(t3, 0)
    assert r3.outcome is Outcome.RETRY and r3.reason == "kafka_no_delivery_report"
    again.released.update(m[2] for m in first)
    t4 = ex.submit(first)  # the retry re-sends what is not delivered, on the new producer
    assert again.produced == [first[0][2]] and ex.poll(t4, 0).outcome is Outcome.DONE


def test_reports_queued_past_the_deadline_still_count():
    # While an older batch is retried nobody polls; a later batch's reports wait in librdkafka's
    # queue past its deadline. They must count as delivered, not be re-sent.
    cls, cfg = _cfg()
    ex = cls("k", cfg)
    payload = ex.encode([_event(0), _event(1)])
    ex._producer = held = HeldProducer()
    t = ex.submit(payload)
    held.released.update(m[2] for m in payload)
    t.deadline = 0.0  # long past
    r = ex.poll(t, 0)
    assert r.outcome is Outcome.DONE and list(payload.state) == [DELIVERED, DELIVERED]
