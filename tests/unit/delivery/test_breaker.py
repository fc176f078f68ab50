"""Tests for siemhub.collector.delivery.breaker through a runner: open, probe, close; time open
does not use up the retry budget."""
from __future__ import annotations

import threading
import time

from siemhub.exporters.base import DONE
from tests.unit.delivery.fakes import events, wait_until, RETRY_503, FakeExporter


# --- circuit breaker and isolation ------------------------------------------------------------------


def test_circuit_breaker_opens_then_probes_and_closes(make_runner):
    up = threading.Event()
    exp = FakeExporter(batch=5, max_wait=0.01, retry=(0.005, 0.005, 1.0, 0), breaker=(3, 0.15),
                       on_send=lambda _i, _n: DONE if up.is_set() else RETRY_503)
    r = make_runner(exp)
    r.put_many(events(5))
    wait_until(lambda: r.breaker.state == r.breaker.OPEN)
    n = len(exp.attempts)
    assert n == 3
    assert r._metrics.value("siemhub_exporter_circuit_state", exporter="fake") == 1
    time.sleep(0.1)
    assert len(exp.attempts) == n  # open: no sends at all
    wait_until(lambda: len(exp.attempts) == n + 1, timeout=1)  # one probe after the cool-down
    assert r.breaker.state == r.breaker.OPEN  # the probe failed: open again
    up.set()
    wait_until(lambda: r.sent == 5, timeout=1)
    assert r.breaker.state == r.breaker.CLOSED and r.dropped == {}
    assert r._metrics.value("siemhub_exporter_circuit_state", exporter="fake") == 0


def test_time_open_does_not_use_up_the_retry_budget(make_runner):
    up = threading.Event()
    exp = FakeExporter(batch=5, max_wait=0.01, retry=(0.005, 0.005, 1.0, 0.05), breaker=(2, 0.1),
                       on_send=lambda _i, _n: DONE if up.is_set() else RETRY_503)
    r = make_runner(exp)
    r.put_many(events(5))
    time.sleep(0.3)  # far beyond max_elapsed, but mostly open
    up.set()
    wait_until(lambda: r.sent == 5, timeout=1)
    assert r.dropped == {}
