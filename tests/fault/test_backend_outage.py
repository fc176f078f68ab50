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

from siemhub.collector.delivery import ExporterRunner
from siemhub.collector.metrics import Metrics
from tests.integration.test_elasticsearch import canonical_events, count, make_exporter
from tests.servers.noida import NoidaServer, noida_binary

pytestmark = pytest.mark.skipif(noida_binary() is None, reason="noida-db not installed (servers extra)")

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
