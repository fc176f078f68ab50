"""The aggregator's offset bookkeeping without a broker: commits follow deliveries, in offset order per
partition; bad messages are counted, dead-lettered and committed past; revoke commits what is delivered."""

from __future__ import annotations

import json

from siemhub.collector.core.event import EVENT_BASE, Event, Node, encode_json
from siemhub.collector.metrics import Metrics
from siemhub.collector.sources.kafka import KafkaSource, KafkaSourceConfig


class FakePipeline:
    """emit() hands out one mark per call; `finish(n)` marks the first n calls delivered."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.emitted: list[list[Event]] = []
        self.done = 0

    def emit(self, events, wait=False):
        self.emitted.append(events)
        return {"out": len(self.emitted)}

    def delivered(self, marks):
        return all(self.done >= seq for seq in marks.values())


class Msg:
    def __init__(self, topic, partition, offset, value):
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self):
        return None

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def key(self):
        return b"k"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []

    def commit(self, offsets, asynchronous=True):
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})


class TP:
    def __init__(self, topic, partition):
        self.topic, self.partition = topic, partition


def _event(i: int) -> bytes:
    return encode_json(Event(id=f"e{i}", time="2026-01-01T00:00:00Z", type="process_exec", node=Node(name="n"),
                             **EVENT_BASE))


def _source(tmp_path=None):
    cfg = KafkaSourceConfig(brokers=["127.0.0.1:1"], topics=["t"], revoke_timeout=0.05,
                            dead_letter_path=str(tmp_path / "dead.jsonl") if tmp_path else None)
    pipe = FakePipeline()
    src = KafkaSource(cfg, pipe)
    src._consumer = FakeConsumer()
    src._on_assign(None, [TP("t", 0), TP("t", 1)])
    return src, pipe


def test_commit_follows_delivery_in_offset_order():
    src, pipe = _source()
    src._handle([Msg("t", 0, 0, _event(0)), Msg("t", 0, 1, _event(1)), Msg("t", 1, 0, _event(2))])  # mark 1
    src._handle([Msg("t", 0, 2, _event(3))])  # mark 2
    src._commit()
    assert src._consumer.commits == []  # nothing delivered yet: nothing committed
    pipe.done = 1
    src._commit()
    assert src._consumer.commits == [{("t", 0): 2, ("t", 1): 1}]  # last delivered offset + 1
    src._commit()
    assert len(src._consumer.commits) == 1  # nothing new: no commit
    pipe.done = 2
    src._commit()
    assert src._consumer.commits[-1] == {("t", 0): 3}


def test_bad_messages_are_counted_dead_lettered_and_committed_past(tmp_path):
    src, pipe = _source(tmp_path)
    src._dead_letter = open(tmp_path / "dead.jsonl", "ab")  # noqa: SIM115 - run() opens it in production
    src._handle([Msg("t", 0, 0, b"garbage"), Msg("t", 0, 1, b'{"id": "x"}'), Msg("t", 0, 2, None)])
    src._dead_letter.close()
    assert pipe.emitted == []  # nothing to deliver
    assert src.bad == {"invalid_json": 1, "invalid_event": 1, "empty": 1}
    src._commit()
    assert src._consumer.commits == [{("t", 0): 3}]
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["offset"], d["reason"]) for d in dead] == [(0, "invalid_json"), (1, "invalid_event"), (2, "empty")]
    assert src.pipeline.metrics.value("siemhub_kafka_bad_messages_total", topic="t", reason="invalid_json") == 1


def test_revoke_commits_what_is_delivered_and_forgets_the_partition():
    src, pipe = _source()
    src._handle([Msg("t", 0, 5, _event(0))])
    src._handle([Msg("t", 0, 6, _event(1))])
    pipe.done = 1  # the second batch is still in flight when the partition is revoked
    src._on_revoke(None, [TP("t", 0)])
    assert src._consumer.commits == [{("t", 0): 6}]  # offset 6 is re-read by the next owner
    assert ("t", 0) not in src._parts and ("t", 1) in src._parts
    src._on_lost(None, [TP("t", 1)])
    assert not src._parts and len(src._consumer.commits) == 1


def test_consumer_refetches_soon_after_its_queue_drains():
    # librdkafka's default fetch.queue.backoff.ms (1 s) left a replica with a backlog idle most of
    # the time; the aggregator sets a short one, and properties still win.
    src, _ = _source()
    conf = src.consumer_config()
    assert conf["fetch.queue.backoff.ms"] == 20 and conf["enable.auto.commit"] is False
    cfg = KafkaSourceConfig(brokers=["b:1"], topics=["t"], properties={"fetch.queue.backoff.ms": 500})
    assert KafkaSource(cfg, FakePipeline()).consumer_config()["fetch.queue.backoff.ms"] == 500
