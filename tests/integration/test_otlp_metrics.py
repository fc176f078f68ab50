"""metrics.otlp: siemhub's own Prometheus metrics pushed over OTLP to rotel (gRPC and HTTP), read back
from rotel's Kafka export as ExportMetricsServiceRequest messages: names, labels, kinds and values
are those /metrics serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siemhub.collector import config
from siemhub.collector.metrics import Metrics
from siemhub.collector.otlp_metrics import OtlpMetricsPusher
from tests.integration.test_otlp import rotel, tansu  # noqa: F401 - the module's servers

pytestmark = pytest.mark.timeout(180)


def read_metrics(bootstrap: str, topic: str, done, timeout: float = 60.0) -> list:
    """Every Metric rotel exported to `topic`, as (resource attributes, metric), until done(list)."""
    from confluent_kafka import Consumer
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"m-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(out):
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            req = ExportMetricsServiceRequest.FromString(msg.value())
            for rm in req.resource_metrics:
                res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    out.extend((res, m) for m in sm.metrics)
    finally:
        c.close()
    return out


def _cfg(text: str):
    return config.parse(f"""
exporters: {{f: {{type: file, path: /dev/null}}}}
routes: [{{name: all, to: [f]}}]
metrics:
{text}
""", "m.yaml").agent.metrics


def test_config():
    m = _cfg('  otlp: {endpoint: "https://c:4317", headers: {authorization: "Bearer x"}, interval: 15}')
    assert m.otlp.interval == 15 and m.otlp.protocol == "grpc"
    with pytest.raises(config.ConfigError) as err:
        _cfg('  otlp: {endpoint: "http://c:4317"}')
    assert "m.yaml" in str(err.value) and "insecure" in str(err.value)
    with pytest.raises(config.ConfigError):
        _cfg('  otlp: {endpoint: "http://c:4317", insecure: true, interval: 0.1}')


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_registry_arrives_as_otlp_metrics(rotel, tansu, protocol):  # noqa: F811
    node = f"metrics-{protocol}-{time.monotonic_ns()}"
    endpoint = rotel.grpc_endpoint if protocol == "grpc" else rotel.http_endpoint
    m = _cfg(f'  otlp: {{endpoint: "{endpoint}", protocol: {protocol}, insecure: true, compression: gzip, '
             'resource: {deployment.environment.name: test}}')
    metrics = Metrics()
    metrics.events_sent.labels("es").inc(42)
    metrics.events_dropped.labels("es", "queue_full").inc(3)
    metrics.queue_depth.labels("es").set(7)
    for v in (0.0007, 0.003, 0.2, 0.2):
        metrics.batch_seconds.labels("es").observe(v)
    pusher = OtlpMetricsPusher(m.otlp, metrics.registry, node).start()
    try:
        assert pusher.push()
    finally:
        pusher._stop.set()
        pusher.sender.close()

    def mine(out):
        return {metric.name: metric for res, metric in out if res.get("host.name") == node}

    got = mine(read_metrics(tansu.bootstrap, rotel.metrics_topic, lambda out: "siemhub_exporter_batch_seconds" in mine(out)))
    sent = got["siemhub_exporter_events_sent"]
    assert sent.sum.is_monotonic and sent.sum.aggregation_temporality == 2  # cumulative
    (p,) = sent.sum.data_points
    assert p.as_double == 42 and {kv.key: kv.value.string_value for kv in p.attributes} == {"exporter": "es"}
    (d,) = got["siemhub_exporter_events_dropped"].sum.data_points
    assert d.as_double == 3 and {kv.key: kv.value.string_value for kv in d.attributes} == {"exporter": "es",
                                                                                          "reason": "queue_full"}
    assert got["siemhub_exporter_queue_depth"].gauge.data_points[0].as_double == 7
    (h,) = got["siemhub_exporter_batch_seconds"].histogram.data_points
    assert h.count == 4 and abs(h.sum - 0.4037) < 1e-9 and sum(h.bucket_counts) == 4
    assert list(h.explicit_bounds)[:3] == [0.0005, 0.001, 0.005]
    assert list(h.bucket_counts)[:7] == [0, 1, 1, 0, 0, 0, 2]  # 0.0007 | 0.003 | 0.2 x2 (in (0.1, 0.5])


@pytest.mark.bpf
def test_real_agent_pushes_its_metrics(rotel, tansu, tmp_path):  # noqa: F811
    """`siemhub run` with metrics.otlp: the process sensor's event counter arrives with its label."""
    from tests.conftest import bpf_unavailable

    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    siemhub = shutil.which("siemhub", path=str(Path(sys.executable).parent)) or "siemhub"
    node = f"agent-metrics-{time.monotonic_ns()}"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
node: {{name: {node}}}
sensors:
  process: {{poll_interval: 0.05, procfs_scan: false}}
exporters: {{f: {{type: file, path: {tmp_path / 'events.jsonl'}}}}}
routes: [{{name: all, to: [f]}}]
metrics:
  enabled: false
  otlp: {{endpoint: "{rotel.grpc_endpoint}", insecure: true, interval: 1}}
status_interval: 0
shutdown_deadline: 5
""")
    agent = subprocess.Popen([siemhub, "run", "-c", str(cfg), "--duration", "10"], stderr=subprocess.PIPE, text=True)

    def execs(out):
        return [p.as_double for res, metric in out if res.get("host.name") == node
                and metric.name == "siemhub_sensor_events" for p in metric.sum.data_points
                if {kv.key: kv.value.string_value for kv in p.attributes} == {"sensor": "process"}]

    try:
        for _ in range(20):
            subprocess.run(["/bin/true"], check=True)
            time.sleep(0.2)
        got = execs(read_metrics(tansu.bootstrap, rotel.metrics_topic, lambda out: any(v > 0 for v in execs(out)),
                                 timeout=40))
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=30)
    if not got and ("eBPF unavailable" in err or "BPFUnavailable" in err):
        bpf_unavailable(err.strip().splitlines()[-1])
    assert any(v > 0 for v in got), f"no siemhub_sensor_events over OTLP; agent said:\n{err[-3000:]}"


def test_aggregator_pushes_consumer_lag(rotel, tansu, tmp_path):  # noqa: F811
    """`siemhub aggregate` with metrics.otlp: its consumer lag (siemhub_kafka_consumer_lag) arrives."""
    siemhub = shutil.which("siemhub", path=str(Path(sys.executable).parent)) or "siemhub"
    node = f"aggregator-{time.monotonic_ns()}"
    topic = f"siemhub.events.{node}"
    tansu.create_topic(topic)
    from confluent_kafka import Producer

    from siemhub.collector.core.event import encode_json
    from tests.integration.test_kafka import make_event

    producer = Producer({"bootstrap.servers": tansu.bootstrap})
    for i in range(5):  # something to consume: the lag is computed from fetched partitions
        producer.produce(topic, encode_json(make_event(i, node)))
    assert producer.flush(10) == 0
    cfg = tmp_path / "agg.yaml"
    cfg.write_text(f"""
node: {{name: {node}}}
sources:
  kafka: {{brokers: ["{tansu.bootstrap}"], topics: ["{topic}"], group_id: {node}, session_timeout_ms: 6000,
          lag_interval: 1}}
exporters: {{f: {{type: file, path: {tmp_path / 'out.jsonl'}}}}}
routes: [{{name: all, to: [f]}}]
metrics:
  enabled: false
  otlp: {{endpoint: "{rotel.http_endpoint}", protocol: http, insecure: true, interval: 1}}
status_interval: 0
shutdown_deadline: 5
""")
    agg = subprocess.Popen([siemhub, "aggregate", "-c", str(cfg), "--duration", "12"], stderr=subprocess.PIPE, text=True)

    def lag(out):
        return [metric for res, metric in out if res.get("host.name") == node and metric.name == "siemhub_kafka_consumer_lag"]

    try:
        got = lag(read_metrics(tansu.bootstrap, rotel.metrics_topic, lambda out: bool(lag(out)), timeout=40))
    finally:
        agg.terminate()
        _, err = agg.communicate(timeout=30)
    assert got, f"no siemhub_kafka_consumer_lag over OTLP; aggregator said:\n{err[-3000:]}"
    attrs = {kv.key for p in got[0].gauge.data_points for kv in p.attributes}
    assert {"topic", "partition"} <= attrs
