"""Events whose process is not known yet wait (bounded), then go out enriched or flagged."""

from __future__ import annotations

from siemhub.collector.sensors.process import ProcessSensorConfig
from siemhub.collector.pending import PendingEvents
from tests.unit.kmsg import Harness, exec_msg, exit_msg

S = 10**9


def test_exit_before_exec_waits_and_is_enriched(tmp_path):
    h = Harness(tmp_path)
    h.sensor.pending = PendingEvents(lambda pid, start: h.cache.get(pid, start), max_age=5.0)
    h.sensor.config = ProcessSensorConfig()
    # The exit arrives first (e.g. from another ring buffer): nothing is emitted yet...
    assert h.sensor.decode([exit_msg(500, ktime=3 * S, code=2 << 8, start=1 * S)]) == []
    assert len(h.sensor.pending) == 1
    # ...then the exec shows up: the exit goes out with the full process.
    events = h.sensor.decode([exec_msg(500, ktime=1 * S + 5, start=1 * S, filename=b"/bin/late")])
    events += h.sensor.pending.drain()
    kinds = {e.type: e for e in events}
    assert kinds["process_exit"].process.binary == "/bin/late"
    assert "missing_process" not in kinds["process_exit"].process.flags
    assert kinds["process_exit"].exit.code == 2
    assert h.sensor.pending.resolved == 1 and h.sensor.pending.expired == 0


def test_unknown_process_expires_flagged():
    built = []
    q = PendingEvents(lambda pid, start: None, max_age=0.5)
    q.add(1, None, lambda entry: built.append(entry) or "flagged", now=100.0)
    assert q.drain(now=100.2) == [] and len(q) == 1
    assert q.drain(now=100.6) == ["flagged"] and built == [None]
    assert q.expired == 1 and len(q) == 0


def test_bound_pushes_out_the_oldest_flagged():
    q = PendingEvents(lambda pid, start: None, max_items=2, max_age=10)
    assert q.add(1, None, lambda e: ("one", e), now=0) == []
    assert q.add(2, None, lambda e: ("two", e), now=0) == []
    assert q.add(3, None, lambda e: ("three", e), now=0) == [("one", None)]
    assert q.overflow == 1 and len(q) == 2
    assert sorted(q.flush()) == [("three", None), ("two", None)]
