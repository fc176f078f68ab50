"""End-to-end, real kernel: /readyz turns ready only after every configured sensor attached.

A real agent (process and network sensors, a file exporter) starts in a thread with /metrics (behind
basic auth) on a free port; the test polls /readyz and /healthz throughout the start. The sensors'
load() is timed: the first 200 of /readyz must come after the last sensor finished attaching, 503s
before it must name what is still awaited, and an exec right after readiness must be reported (the
sensor really is attached). /healthz and /readyz answer without the metrics credentials; /metrics
does not. On shutdown /readyz turns 503 again.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import bpf_unavailable
from tests.servers.tansu import free_port

pytestmark = pytest.mark.bpf


def _get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = r.read().decode()
            return r.status, json.loads(body) if body.startswith("{") else body
    except urllib.error.HTTPError as exc:
        body = exc.read().decode()
        return exc.code, json.loads(body) if body.startswith("{") else body
    except OSError:
        return 0, ""  # not listening yet


def test_readyz_turns_ready_only_after_the_sensors_attached(tmp_path):
    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    from siemhub.collector import config
    from siemhub.collector.agent import Agent
    from siemhub.collector.sensors import BPFUnavailable

    port = free_port()
    out = tmp_path / "events.jsonl"
    agent = Agent(config.parse(f"""
sensors:
  process: {{poll_interval: 0.05}}
  network: {{}}
exporters:
  out: {{type: file, path: "{out}", format: native, fsync: never, batch: {{max_events: 16, max_wait: 0.05}}}}
routes: [{{name: all, to: [out]}}]
metrics: {{listen: "127.0.0.1:{port}", auth: {{username: prom, password: s3cret}}}}
status_interval: 0
""", "<health test>"))
    attached: dict[str, float] = {}
    build = agent._build_sensors

    def build_timed():
        build()
        for s in agent.sensors:
            def load(s=s, load=s.load):
                load()
                attached[s.name] = time.monotonic()
            s.load = load

    agent._build_sensors = build_timed
    seen: list[tuple[float, int, dict | str]] = []
    failure: list[BaseException] = []

    def start():
        try:
            agent.start()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)

    t = threading.Thread(target=start)
    t.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not failure:
            code, body = _get(base + "/readyz")
            seen.append((time.monotonic(), code, body))
            if code == 200:
                break
            time.sleep(0.02)
        t.join(60)
        if failure and isinstance(failure[0], BPFUnavailable):
            bpf_unavailable(str(failure[0]))
        assert not failure, failure
        ready_at = next((ts for ts, code, _ in seen if code == 200), None)
        assert ready_at is not None, f"/readyz never answered 200: last {seen[-1:]}"
        assert set(attached) == {"process", "network"}
        assert ready_at > max(attached.values()), "ready before every sensor attached"
        waiting = [body for _, code, body in seen if code == 503]
        assert waiting, "no 503 seen while the sensors compiled and attached"
        assert any("sensor process" in b["waiting_for"] for b in waiting)
        assert all(b["status"] == "not ready" for b in waiting)
        # ready means attached: an exec now is reported
        mark = f"ready-{os.getpid()}-{time.monotonic_ns()}"
        subprocess.run(["/bin/true", mark], check=True)
        deadline = time.monotonic() + 10
        found = False
        while time.monotonic() < deadline and not found:
            found = out.exists() and mark in out.read_text()
            time.sleep(0.05)
        assert found, "an exec right after readiness was not reported"
        # health needs no credentials, /metrics does
        assert _get(base + "/healthz") == (200, {"status": "alive"})
        assert _get(base + "/metrics")[0] == 401
    finally:
        t.join(60)
        agent.shutdown() if not failure else None
    assert _get(base + "/readyz")[0] in (0, 503)  # stopping (or already closed)


def test_readyz_is_503_while_stopping(tmp_path):
    """The Health object itself: stopping turns ready off even with everything up."""
    from siemhub.collector.health import Health

    h = Health(stall_after=0.05)
    h.expect("exporter out", "sensor process")
    assert h.ready() == (False, {"status": "not ready", "waiting_for": ["exporter out", "sensor process"]})
    h.up("exporter out")
    h.up("sensor process")
    assert h.ready()[0]
    h.beat("sensor process")
    assert h.live() == (True, {"status": "alive"})
    time.sleep(0.1)  # the reader loop stopped coming round
    assert h.live() == (False, {"status": "stalled", "stalled": ["sensor process"]})
    h.stopping()
    assert h.ready() == (False, {"status": "not ready", "stopping": True})
