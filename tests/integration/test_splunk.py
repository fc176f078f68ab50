"""The Splunk HEC exporter through the shared delivery path and in a real agent run.

No Splunk can be installed on this machine: the server is the HEC receiver of tests/servers/hec.py,
which stands in for Splunk's HTTP Event Collector (written from Splunk's HEC documentation: tokens,
codes and texts, channels and indexer acknowledgement, strict event checks, gzip, busy 503s).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.metrics import Metrics
from siemhub.exporters.file import FileConfig, FileExporter
from siemhub.exporters.splunk import SplunkConfig, SplunkExporter
from tests.integration.test_elasticsearch import canonical_events
from tests.servers.hec import HecReceiver, Token

TOKEN = "0b7c6f3e-8d1a-4c2b-9e5f-1a2b3c4d5e6f"


def make_exporter(url: str, name: str = "splunk", token: str = TOKEN, **kw) -> SplunkExporter:
    ex = SplunkExporter(name, SplunkConfig.model_validate({"type": "splunk", "url": url, "token": token, **kw}))
    ex.start()
    return ex


def drain(runner: ExporterRunner, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while runner.finished < runner.accepted and time.monotonic() < deadline:
        time.sleep(0.05)


def test_acknowledged_delivery_through_the_runner(tmp_path):
    with HecReceiver([Token(TOKEN, ack=True)], ack_delay=0.2) as hec:
        ex = make_exporter(hec.url, ack=True, ack_interval=0.1, max_in_flight=4, max_content_length=100_000,
                           batch={"max_events": 500, "max_wait": 0.05},
                           dead_letter={"path": str(tmp_path / "dl.jsonl")})
        runner = ExporterRunner(ex, Metrics(CollectorRegistry()))
        runner.start()
        evs = canonical_events(6000)
        for i in range(0, len(evs), 500):
            runner.put_many(evs[i : i + 500], wait=True)
        drain(runner)
        runner.stop(time.monotonic() + 5)
        assert runner.dropped == {} and runner.sent == 6000
        ids = [e["event"]["event_id"] for e in hec.events]
        assert len(ids) == 6000 and set(ids) == {e.id for e in evs}
        stats = hec.stats()
        assert stats["acks_pending"] == 0 and stats["ack_queries"] >= 1
        assert stats["requests"] < 6000 / 50  # batched: many events per request


def test_rejected_events_are_dead_lettered_with_their_reason(tmp_path):
    # the token may write only to `siemhub`; policy events are routed to an index it may not use
    with HecReceiver([Token(TOKEN, indexes=("siemhub",))], indexes=("siemhub", "alerts")) as hec:
        ex = make_exporter(hec.url, index="siemhub", index_by_type={"agent": "alerts"},
                           batch={"max_events": 300, "max_wait": 0.05},
                           dead_letter={"path": str(tmp_path / "dl.jsonl")})
        runner = ExporterRunner(ex, Metrics(CollectorRegistry()))
        runner.start()
        evs = canonical_events(900)  # exec, exit, agent_status in turn
        runner.put_many(evs, wait=True)
        drain(runner)
        runner.stop(time.monotonic() + 5)
        status_ids = {e.id for e in evs if e.type == "agent_status"}
        assert runner.dropped == {"hec_400_incorrect_index": 300}
        assert {e["event"]["event_id"] for e in hec.events} == {e.id for e in evs} - status_ids
        assert len(hec.events) == 600
        dead = [msgspec.json.decode(x) for x in (tmp_path / "dl.jsonl").read_bytes().splitlines()]
        assert {d["event"]["id"] for d in dead} == status_ids
        assert {d["reason"] for d in dead} == {"hec_400_incorrect_index"}


def test_bad_token_opens_the_breaker_while_a_file_exporter_keeps_running(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with HecReceiver([Token(TOKEN)]) as hec:
        metrics = Metrics(CollectorRegistry())
        bad = make_exporter(hec.url, token="not-the-token", batch={"max_events": 100, "max_wait": 0.05},
                            retry={"initial_interval": 0.05, "max_interval": 0.1, "max_elapsed": 2.0},
                            circuit_breaker={"failure_threshold": 3, "cooldown": 0.5},
                            dead_letter={"path": str(tmp_path / "dl.jsonl")})
        out = tmp_path / "events.jsonl"
        good = FileExporter("file", FileConfig.model_validate({"type": "file", "path": str(out),
                                                               "batch": {"max_events": 100, "max_wait": 0.05}}))
        runners = [ExporterRunner(bad, metrics), ExporterRunner(good, metrics)]
        for r in runners:
            r.start()
        evs = canonical_events(1000)
        for i in range(0, 1000, 100):
            for r in runners:
                r.put_many(evs[i : i + 100])
        drain(runners[1], 10)
        time.sleep(3.0)  # several cool-downs: a probe each, no hot loop
        requests = hec.requests
        bad_runner = runners[0]
        assert bad_runner.breaker.opened >= 1
        assert bad_runner.dropped == {}  # kept for when the token is fixed, not dead-lettered
        assert requests < 25, f"{requests} requests in ~3 s: the breaker should space them"
        for r in runners:
            r.stop(time.monotonic() + 1)
        assert len(out.read_bytes().splitlines()) == 1000  # the file exporter got everything
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "Invalid token" in errors[0] and "`token`" in errors[0]
        assert "not-the-token" not in caplog.text


def _siemhub() -> str:
    return shutil.which("siemhub", path=str(Path(sys.executable).parent)) or "siemhub"


def test_real_agent_events_arrive_batched_acknowledged_cim_mapped(tmp_path):
    """`siemhub run` with the process sensor and three exporters: Splunk with indexer acks, Splunk with a
    wrong token, and a file. /bin/echo's exec arrives at the receiver CIM-mapped and acknowledged; the
    wrong token gives one clear error while the file exporter keeps writing."""
    from tests.conftest import bpf_unavailable

    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        bpf_unavailable("no /sys/kernel/btf/vmlinux")
    with HecReceiver([Token(TOKEN, ack=True)], ack_delay=0.1) as hec:
        out = tmp_path / "events.jsonl"
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(f"""
sensors:
  process: {{poll_interval: 0.05, procfs_scan: false}}
exporters:
  splunk:
    type: splunk
    url: "{hec.url}"
    token: "${{SPLUNK_HEC_TOKEN}}"
    ack: true
    ack_interval: 0.2
    batch: {{max_events: 256, max_wait: 0.3}}
  splunk_bad:
    type: splunk
    url: "{hec.url}"
    token: wrong-token
    batch: {{max_events: 256, max_wait: 0.3}}
    circuit_breaker: {{failure_threshold: 2, cooldown: 5}}
    dead_letter: {{path: "{tmp_path / 'dl.jsonl'}"}}
  file: {{type: file, path: "{out}"}}
routes:
  - {{name: all, to: [splunk, splunk_bad, file]}}
metrics: {{enabled: false}}
status_interval: 0
shutdown_deadline: 5
""")
        marker = f"siemhub-splunk-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "SPLUNK_HEC_TOKEN": TOKEN}
        agent = subprocess.Popen([_siemhub(), "run", "-c", str(cfg), "--duration", "15"],
                                 stderr=subprocess.PIPE, text=True, env=env)
        found: list[dict] = []
        try:
            deadline = time.monotonic() + 25
            while not found and time.monotonic() < deadline and agent.poll() is None:
                subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL, check=True)
                time.sleep(1.0)
                found = [e for e in list(hec.events) if marker in str(e["event"].get("process", ""))]
        finally:
            agent.terminate()
            _, err = agent.communicate(timeout=30)
        if not found and ("eBPF unavailable" in err or "BPFUnavailable" in err):
            bpf_unavailable(err.strip().splitlines()[-1])
        assert found, f"the exec of /bin/echo {marker} did not arrive; agent said:\n{err[-3000:]}"
        e = found[0]
        assert e["sourcetype"] == "siemhub:process" and e["source"] == "siemhub" and e["index"] == "main"
        assert isinstance(e["time"], float) and e["host"]
        ev = e["event"]
        assert ev["process_path"] == "/bin/echo" and ev["process_name"] == "echo"
        assert ev["process"] == f"/bin/echo {marker}" and ev["action"] == "allowed"
        assert ev["process_id"] > 0 and ev["process_guid"] and ev["parent_process_id"] > 0
        assert ev["vendor_product"] == "siemhub" and ev["siemhub_type"] == "process_exec"
        assert e["fields"]["siemhub_severity"] == "info" and "siemhub_type" not in e["fields"]
        stats = hec.stats()
        assert stats["ack_queries"] >= 1  # acknowledged
        ok_requests = stats["answers"].get("0", 0)
        assert ok_requests < stats["events"], "events arrive batched, many per request"
        # the wrong token: one clear error, never the token; the file exporter has the marker too
        assert err.count("Invalid token") >= 1 and "splunk_bad" in err
        assert TOKEN not in err and "wrong-token" not in err
        assert marker in out.read_text()
