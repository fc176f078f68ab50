"""Collector outage: rotel (a real OpenTelemetry collector) goes away for 30 s while 50,000 events flow
to it over OTLP/gRPC or OTLP/HTTP, then comes back on the same ports. Every event must reach rotel's
Kafka export exactly once: nothing lost (the memory buffer holds what waits meanwhile, within its
bound) and nothing duplicated (counted by log.record.uid, the event id).

rotel is stopped with SIGTERM, which drains its pipeline to Kafka first; SIGKILL would lose what rotel
had acknowledged and not yet exported, which tests rotel, not siemhub. The Tansu broker stays up.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process
from siemhub.collector.metrics import Metrics
from tests.integration.test_otlp import exporter_config
from tests.servers.rotel import Rotel, read_log_records, rotel_binary
from tests.servers.tansu import Tansu, tansu_binary

EVENTS = 50_000
OUTAGE_S = 30.0
pytestmark = pytest.mark.timeout(400)


def _events(tag: str, n: int) -> list[Event]:
    out = []
    for i in range(n):
        p = Process(exec_id=f"{tag}-exec-{i}", pid=1000 + i % 30000, ppid=1, uid=0, euid=0, binary="/usr/bin/curl",
                    args=["curl", "-s", f"https://example.com/{i % 50}"], cwd="/root",
                    start_time="2026-01-01T00:00:00.000000000Z")
        out.append(Event(id=f"{tag}-{i}", time="2026-01-01T00:00:00.000000000Z", type="process_exec",
                         node=Node(name="node-a"), process=p, **EVENT_BASE))
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rotel_down_30s_while_50k_events_flow(tmp_path, protocol):
    from tests.conftest import server_unavailable

    if tansu_binary() is None or rotel_binary() is None:
        server_unavailable("tansu or rotel missing (install the 'servers' extra; rotel needs libpython3.11)")
    broker = Tansu(log_path=tmp_path / "tansu.log").start()
    topic = f"otlp_outage_{protocol}"
    broker.create_topic(topic)
    rotel = Rotel(tmp_path / "rotel", kafka=broker.bootstrap, topic=topic).start()
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    cls, cfg = exporter_config(endpoint, f"""    protocol: {protocol}
    insecure: true
    timeout: 5
    queue: {{max_events: 100000}}
    batch: {{max_events: 512, max_wait: 0.2}}
    retry: {{initial_interval: 0.5, max_interval: 2.0, max_elapsed: 0}}
    circuit_breaker: {{failure_threshold: 5, cooldown: 2.0}}""")
    metrics = Metrics(CollectorRegistry())
    runner = ExporterRunner(cls("o", cfg), metrics)
    runner.start()
    tag = f"outage-{protocol}"
    evs = _events(tag, EVENTS)
    outage: dict = {}

    def take_rotel_down():
        time.sleep(2.0)  # some events first
        outage["sent_before"] = runner.sent
        rotel.stop()
        outage["down_at"] = time.monotonic()
        time.sleep(OUTAGE_S)
        rotel.start()
        outage["up_at"] = time.monotonic()

    t = threading.Thread(target=take_rotel_down)
    t.start()
    try:
        for i in range(0, EVENTS, 500):  # ~20 s of events: most of them while rotel is down
            runner.put_many(evs[i : i + 500], wait=True)
            time.sleep(0.2)
        t.join()
        deadline = time.monotonic() + 120
        while runner.finished < runner.accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        delivered_in = time.monotonic() - outage["up_at"]
        runner.stop(time.monotonic() + 10)
        prefix = tag + "-"

        def uids(recs):
            return [v.value.string_value for _, _, r in recs for v in r.attributes
                    if v.key == "log.record.uid" and v.value.string_value.startswith(prefix)]

        got = uids(read_log_records(broker.bootstrap, topic, 0, timeout=120,
                                    stop_when=lambda recs: len(set(uids(recs))) >= EVENTS))
    finally:
        t.join()
        rotel.stop()
        broker.stop()
    assert not rotel.export_errors(), rotel.export_errors()[:3]  # rotel itself lost nothing to Kafka
    counts = Counter(got)
    dups = sum(c - 1 for c in counts.values() if c > 1)
    retries = sum(s.value for fam in metrics.registry.collect() for s in fam.samples
                  if s.name == "siemhub_exporter_retries_total")
    print(f"\notlp/{protocol} outage: {EVENTS} offered, {runner.accepted} accepted, {runner.sent} acknowledged, "
          f"{len(counts)} distinct at rotel's Kafka export, {dups} duplicates, {outage['sent_before']} sent before "
          f"the outage, rotel down {outage['up_at'] - outage['down_at']:.0f}s, all delivered {delivered_in:.1f}s "
          f"after it came back, {retries:.0f} retried sends, breaker opened {runner.breaker.opened}x")
    assert runner.dropped == {} and runner.dead_lettered == {}
    assert runner.accepted == EVENTS and runner.sent == EVENTS
    assert outage["sent_before"] < EVENTS / 2  # the outage really happened mid-stream
    assert len(counts) == EVENTS, f"{EVENTS - len(counts)} events lost"
    assert dups == 0, f"{dups} duplicates"
