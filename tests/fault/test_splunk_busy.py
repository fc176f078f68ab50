"""A 503 storm during 50,000 events, with indexer acknowledgement: Splunk's HEC answers "Server is busy"
(503, code 9, Retry-After) in bursts while the events flow, and a few accepted requests are never
indexed (their ack stays false). Every event must arrive exactly once: none lost, none duplicated.

The server is the HEC receiver of tests/servers/hec.py, standing in for Splunk (none can be installed
here); it answers with Splunk's documented codes and acknowledges per channel as Splunk does.
"""

from __future__ import annotations

import collections
import threading
import time

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.metrics import Metrics
from tests.integration.test_elasticsearch import canonical_events
from tests.integration.test_splunk import TOKEN, make_exporter
from tests.servers.hec import HecReceiver, Token

EVENTS = 50_000


def test_503_storm_during_50k_events_none_lost_none_duplicated(tmp_path):
    with HecReceiver([Token(TOKEN, ack=True)], ack_delay=0.05) as hec:
        ex = make_exporter(hec.url, ack=True, ack_interval=0.1, ack_timeout=2.0, max_in_flight=4,
                           batch={"max_events": 1000, "max_wait": 0.1},
                           retry={"initial_interval": 0.2, "max_interval": 1.0, "max_elapsed": 0},
                           circuit_breaker={"failure_threshold": 5, "cooldown": 1.0},
                           queue={"max_events": EVENTS})
        metrics = Metrics()
        runner = ExporterRunner(ex, metrics)
        runner.start()
        evs = canonical_events(EVENTS)
        storm: dict[str, float] = {}

        def weather():
            time.sleep(0.5)
            storm["sent_before"] = runner.sent
            for _ in range(4):  # four bursts of busy answers, 1.5 s each
                hec.set_busy(True, retry_after=1)
                time.sleep(1.5)
                hec.set_busy(False)
                hec.lose_acks(2)  # and two accepted requests whose events are never indexed
                time.sleep(1.0)

        t = threading.Thread(target=weather)
        t.start()
        try:
            for i in range(0, EVENTS, 1000):
                runner.put_many(evs[i : i + 1000], wait=True)
                time.sleep(0.1)
            t.join()
            deadline = time.monotonic() + 120
            while runner.finished < runner.accepted and time.monotonic() < deadline:
                time.sleep(0.2)
            runner.stop(time.monotonic() + 10)
        finally:
            t.join()
        ids = collections.Counter(e["event"]["event_id"] for e in hec.events)
        busy = hec.answers.get(9, 0)
        dupes = sum(1 for n in ids.values() if n > 1)
        print(f"\n503 storm: {EVENTS} offered, {runner.sent} acknowledged, {len(ids)} distinct indexed, "
              f"{dupes} duplicated, {busy} busy answers, {hec.ack_queries} ack queries, "
              f"{storm.get('sent_before')} acknowledged before the first burst, dropped {runner.dropped or 'none'}")
        assert runner.dropped == {}
        assert runner.accepted == EVENTS and runner.sent == EVENTS
        assert set(ids) == {e.id for e in evs}  # none lost
        assert dupes == 0  # none duplicated
        assert busy >= 4 and storm["sent_before"] < EVENTS  # the storm really hit mid-stream
