"""OTLP exporter against rotel, a real OpenTelemetry collector, on 127.0.0.1 (OTLP/gRPC and OTLP/HTTP
receivers). rotel exports what it receives to a Kafka topic of the Tansu test broker as OTLP protobuf;
the tests read it back and compare what arrived with what siemhub meant to send, field by field.

Each test tags its events (ids, or a `resource` attribute naming the exporter) and reads back only
its own records: the module shares one broker and one rotel."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from siemhub.collector import config
from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.core.event import decode_json
from siemhub.collector.metrics import Metrics
from siemhub.exporters.formats import otel
from tests.servers.rotel import Rotel, read_log_records, rotel_binary
from tests.servers.tansu import Tansu, tansu_binary

pytestmark = pytest.mark.timeout(180)
TOPIC = "otlp_logs"


@pytest.fixture(scope="module")
def tansu(tmp_path_factory):
    from tests.conftest import server_unavailable

    if tansu_binary() is None or rotel_binary() is None:
        server_unavailable("tansu or rotel missing (install the 'servers' extra; rotel needs libpython3.11)")
    broker = Tansu(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log").start()
    broker.create_topic(TOPIC)
    broker.create_topic(f"{TOPIC}_metrics")  # rotel's metrics export (test_otlp_metrics.py)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def rotel(tansu, tmp_path_factory):
    r = Rotel(tmp_path_factory.mktemp("rotel"), kafka=tansu.bootstrap, topic=TOPIC).start()
    yield r
    r.stop()


def exporter_config(endpoint: str, extra: str = ""):
    text = f"""
exporters:
  o:
    type: otlp
    endpoint: "{endpoint}"
{extra}
routes: [{{name: all, to: [o]}}]
"""
    return config.parse(text, "otlp.yaml").exporters["o"]


def deliver(cls, cfg, events, timeout: float = 30.0, metrics: Metrics | None = None) -> ExporterRunner:
    runner = ExporterRunner(cls("o", cfg), metrics or Metrics(CollectorRegistry()))
    runner.start()
    runner.put_many(list(events), wait=True)
    deadline = time.monotonic() + timeout
    while runner.finished < runner.accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop(time.monotonic() + 5)
    return runner


def _value(v):
    """An AnyValue as the Python value the mapping produced."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind)


def _attrs(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


def _sample_events(tag: str):
    from tests.unit.exporters.formats.test_ecs_format import EVENTS, EXTRA

    out = []
    for i, text in enumerate((*EVENTS.values(), *EXTRA)):
        e = decode_json(text)
        e.id = f"{tag}-{i}"
        out.append(e)
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_field_arrives(rotel, tansu, protocol):
    """Every event type, over gRPC and over HTTP (gzip): each record rotel passed on equals, field by
    field, the mapping of its event (time, severity, event name, body, every attribute and its type),
    under the resource siemhub describes."""
    tag = f"fields-{protocol}-{uuid.uuid4().hex[:6]}"
    events = _sample_events(tag)
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    cls, cfg = exporter_config(endpoint, f"    protocol: {protocol}\n    insecure: true\n    compression: gzip\n"
                                         f"    resource: {{deployment.environment.name: test, siemhub.test: {tag}}}\n"
                                         "    batch: {max_events: 5, max_wait: 0.05}")
    runner = deliver(cls, cfg, events)
    assert runner.dropped == {} and runner.sent == len(events)

    def ours(recs):
        return [r for r in recs if _attrs(r[0].attributes).get("siemhub.test") == tag]

    got = ours(read_log_records(tansu.bootstrap, TOPIC, 0, stop_when=lambda recs: len(ours(recs)) >= len(events)))
    assert len(got) == len(events), f"{len(got)} of {len(events)} records arrived"
    by_uid = {_attrs(r.attributes)["log.record.uid"]: (res, scope, r) for res, scope, r in got}
    assert len(by_uid) == len(events)  # no duplicate
    for e in events:
        res, scope, r = by_uid[e.id]
        want = otel.to_otel(e, r.observed_time_unix_nano)
        assert r.time_unix_nano == want["time_unix_nano"]
        assert r.severity_number == want["severity_number"] and r.severity_text == e.severity
        assert r.event_name == f"siemhub.{e.type}"
        assert r.body.string_value == want["body"]
        assert _attrs(r.attributes) == want["attributes"], e.type
        assert abs(r.observed_time_unix_nano - time.time_ns()) < 600e9
        resource = _attrs(res.attributes)
        assert resource["service.name"] == "siemhub" and resource["host.name"] == e.node.name
        assert resource["deployment.environment.name"] == "test"
        assert scope.name == "siemhub"
    # semantic-convention attributes with their types, as a consumer of the conventions reads them
    exec_attrs = _attrs(by_uid[f"{tag}-0"][2].attributes)
    assert exec_attrs["process.pid"] == 4242 and exec_attrs["process.parent_pid"] == 1000
    assert exec_attrs["process.executable.path"] == "/usr/bin/curl"
    assert exec_attrs["process.command_args"] == ["curl", "-s", "https://example.com/"]
    assert exec_attrs["k8s.pod.name"] == "web-7d9f" and exec_attrs["container.id"] == "3f2a9c"


@pytest.mark.bpf
def test_real_agent_run_arrives_over_grpc_and_http(rotel, tansu, tmp_path):
    """`siemhub run` with the process sensor and two OTLP exporters (gRPC and HTTP) on one route: the
    exec of /bin/echo <marker> arrives through both with its semantic-convention attributes."""
    from tests.conftest import bpf_unavailable

    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        bpf_unavailable("no /sys/kernel/btf/vmlinux")
    siemhub = shutil.which("siemhub", path=str(Path(sys.executable).parent)) or "siemhub"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
sensors:
  process: {{poll_interval: 0.05, procfs_scan: false}}
exporters:
  og: {{type: otlp, endpoint: "{rotel.grpc_endpoint}", insecure: true, resource: {{siemhub.exporter: og}},
        batch: {{max_events: 64, max_wait: 0.2}}}}
  oh: {{type: otlp, protocol: http, endpoint: "{rotel.http_endpoint}", insecure: true,
        resource: {{siemhub.exporter: oh}}, batch: {{max_events: 64, max_wait: 0.2}}}}
routes:
  - {{name: all, to: [og, oh]}}
metrics: {{enabled: false}}
status_interval: 0
shutdown_deadline: 5
""")
    marker = f"siemhub-otlp-{uuid.uuid4().hex[:8]}"
    agent = subprocess.Popen([siemhub, "run", "-c", str(cfg), "--duration", "14"], stderr=subprocess.PIPE, text=True)

    def mine(recs):
        return [(res, r) for res, _, r in recs
                if r.event_name == "siemhub.process_exec" and marker in _attrs(r.attributes).get("process.command_args", [])]

    def both(recs) -> bool:
        return {_attrs(res.attributes).get("siemhub.exporter") for res, _ in mine(recs)} >= {"og", "oh"}

    import threading

    stop = threading.Event()

    def exec_marker():  # until the records are read: the sensor needs a few seconds to load
        while not stop.wait(0.5) and agent.poll() is None:
            subprocess.run(["/bin/echo", marker], stdout=subprocess.DEVNULL, check=True)

    echo = threading.Thread(target=exec_marker, daemon=True)
    echo.start()
    found: list = []
    try:
        found = mine(read_log_records(tansu.bootstrap, TOPIC, 0, timeout=30, stop_when=both))
    finally:
        stop.set()
        echo.join()
        agent.terminate()
        _, err = agent.communicate(timeout=30)
    if not found and ("eBPF unavailable" in err or "BPFUnavailable" in err):
        bpf_unavailable(err.strip().splitlines()[-1])
    via = {_attrs(res.attributes).get("siemhub.exporter") for res, _ in found}
    assert via >= {"og", "oh"}, f"the exec of /bin/echo {marker} arrived via {via or 'nothing'}; agent said:\n{err[-3000:]}"
    for res, r in found:
        a = _attrs(r.attributes)
        assert a["process.executable.path"] == "/bin/echo" and a["process.executable.name"] == "echo"
        assert a["process.command_args"] == ["/bin/echo", marker]
        assert a["process.pid"] > 0 and a["process.parent_pid"] > 0
        assert a["process.user.id"] == os.geteuid() and "process.working_directory" in a
        assert a["siemhub.process.exec_id"] and a["log.record.uid"]
        assert r.severity_text and r.severity_number > 0 and r.time_unix_nano > 0
        assert r.body.string_value.endswith(f"executed /bin/echo {marker}")
        resource = _attrs(res.attributes)
        assert resource["service.name"] == "siemhub" and resource["host.name"]


@pytest.mark.parametrize("case", ["grpc_to_http_port", "http_to_grpc_port", "tls_to_plaintext", "wrong_path"])
def test_misconfiguration_is_reported_once_and_events_are_held(rotel, case, caplog):
    """A protocol mismatch, TLS to a plain-text collector, a wrong path: the cause is logged once with
    what to check, the batch is retried (circuit breaker), nothing is dropped or dead-lettered."""
    port_http, port_grpc = rotel.http_port, rotel.grpc_port
    settings = {
        "grpc_to_http_port": (f"http://127.0.0.1:{port_http}", "    insecure: true", "does not speak OTLP/gRPC"),
        "http_to_grpc_port": (f"http://127.0.0.1:{port_grpc}", "    protocol: http\n    insecure: true",
                              "does not speak OTLP/HTTP"),
        "tls_to_plaintext": (f"https://127.0.0.1:{port_grpc}", "", "TLS failed"),
        "wrong_path": (f"http://127.0.0.1:{port_http}/v2/logs", "    protocol: http\n    insecure: true",
                       "answered HTTP 404"),
    }
    endpoint, extra, needle = settings[case]
    cls, cfg = exporter_config(endpoint, extra + "\n    retry: {initial_interval: 0.1, max_interval: 0.2}\n"
                                                 "    circuit_breaker: {failure_threshold: 3, cooldown: 0.5}")
    runner = ExporterRunner(cls("o", cfg), Metrics(CollectorRegistry()))
    with caplog.at_level(logging.INFO, "siemhub"):
        runner.start()
        runner.put_many([e for e in _sample_events(f"held-{case}")[:3]])
        time.sleep(4)  # several attempts and probes
        assert runner.finished == 0 and runner.dropped == {} and runner.dead_lettered == {}
        attempts = runner.breaker.opened
        runner.stop(time.monotonic() + 0.5)  # the shutdown deadline then dead-letters what is left
    assert attempts >= 2, "the batch was not retried"
    messages = [r.getMessage() for r in caplog.records if r.name == "siemhub.exporters.otlp"]
    assert sum(needle in m for m in messages) == 1, messages
