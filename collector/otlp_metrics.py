"""siemhub's own metrics over OTLP (`metrics.otlp`), for shops without a Prometheus scrape.

Every `interval` seconds the agent's Prometheus registry (collector/metrics.py: the very series
/metrics serves) is read and pushed as one OTLP ExportMetricsServiceRequest: counters as monotonic
cumulative Sums, gauges as Gauges, histograms as explicit-bucket Histograms, with the Prometheus
labels as attributes and the metric names unchanged (`siemhub_exporter_events_sent`, ...), so a
dashboard or alert written for one works with the other. The request goes through the OTLP
exporter's transport (exporters/otlp.py: gRPC or HTTP, TLS, headers, the same answers-to-outcomes
table) for the metrics signal. Values are cumulative: a push that fails is not retried, the next one
carries the totals (failures are logged once per cause and counted in `failed`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import Field

from siemhub.exporters.base import Outcome
from siemhub.exporters.formats.otel import _any_message, siemhub_version
from siemhub.exporters.otlp import OtlpConfig, OtlpConnection, OtlpExporter, OtlpPayload

log = logging.getLogger("siemhub.metrics.otlp")

METRICS_PATH = "/v1/metrics"


class OtlpMetricsConfig(OtlpConnection):
    interval: float = Field(60.0, ge=1, description="seconds between pushes")


class _MetricsSender(OtlpExporter):
    """The OTLP exporter's transport for the metrics signal."""

    grpc_method = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
    http_path = METRICS_PATH
    rejected_field = "rejected_data_points"

    @staticmethod
    def response_type():
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

        return ExportMetricsServiceResponse


def _attrs(labels: dict[str, str]) -> list:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in sorted(labels.items())]


def metrics_request(registry: Any, resource: dict[str, Any], start_ns: int, now_ns: int, version: str):
    """The ExportMetricsServiceRequest of a Prometheus registry's current values."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    cumulative = m.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    metrics = []
    for fam in registry.collect():
        if fam.type == "counter":
            points = [m.NumberDataPoint(attributes=_attrs(s.labels), as_double=s.value, start_time_unix_nano=start_ns,
                                        time_unix_nano=now_ns)
                      for s in fam.samples if s.name.endswith("_total") or s.name == fam.name]
            if points:
                metrics.append(m.Metric(name=fam.name, description=fam.documentation,
                                        sum=m.Sum(data_points=points, aggregation_temporality=cumulative,
                                                  is_monotonic=True)))
        elif fam.type == "gauge":
            points = [m.NumberDataPoint(attributes=_attrs(s.labels), as_double=s.value, time_unix_nano=now_ns)
                      for s in fam.samples]
            if points:
                metrics.append(m.Metric(name=fam.name, description=fam.documentation, gauge=m.Gauge(data_points=points)))
        elif fam.type == "histogram":
            series: dict[tuple, dict] = {}
            for s in fam.samples:
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                d = series.setdefault(tuple(sorted(labels.items())), {"labels": labels, "buckets": []})
                if s.name.endswith("_bucket"):
                    d["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    d["count"] = s.value
                elif s.name.endswith("_sum"):
                    d["sum"] = s.value
            points = []
            for d in series.values():
                buckets = sorted(d["buckets"])
                bounds = [le for le, _ in buckets if le != float("inf")]
                cum = [c for _, c in buckets]
                counts = [int(c - (cum[i - 1] if i else 0)) for i, c in enumerate(cum)]  # per bucket
                points.append(m.HistogramDataPoint(
                    attributes=_attrs(d["labels"]), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                    count=int(d.get("count", cum[-1] if cum else 0)), sum=d.get("sum", 0.0),
                    bucket_counts=counts, explicit_bounds=bounds))
            if points:
                metrics.append(m.Metric(name=fam.name, description=fam.documentation,
                                        histogram=m.Histogram(data_points=points, aggregation_temporality=cumulative)))
    res = Resource(attributes=[_kv(k, v, _any_message) for k, v in resource.items()])
    scope = m.ScopeMetrics(scope=InstrumentationScope(name="siemhub", version=version), metrics=metrics)
    return ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(resource=res, scope_metrics=[scope])])


def _kv(k: str, v: Any, any_message) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    return KeyValue(key=k, value=any_message(v))


class OtlpMetricsPusher:
    """Pushes a registry every `interval` seconds from a daemon thread; `stop()` pushes a last time."""

    def __init__(self, cfg: OtlpMetricsConfig, registry: Any, node_name: str) -> None:
        self.cfg = cfg
        self.registry = registry
        self.version = siemhub_version()
        self.resource = {"service.name": "siemhub", "service.version": self.version, "host.name": node_name,
                         **cfg.resource}
        exporter_cfg = OtlpConfig(type="otlp", max_in_flight=1, **cfg.model_dump(exclude={"interval"}))
        self.sender = _MetricsSender("metrics.otlp", exporter_cfg)
        self.start_ns = time.time_ns()
        self.pushed = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OtlpMetricsPusher:
        self.sender.start()
        self._thread = threading.Thread(target=self._run, name="metrics-otlp", daemon=True)
        self._thread.start()
        log.info("metrics over OTLP/%s to %s every %gs", self.cfg.protocol, self.cfg.endpoint, self.cfg.interval)
        return self

    def push(self) -> bool:
        """One push of the registry's current values; True if the collector took it."""
        try:
            req = metrics_request(self.registry, self.resource, self.start_ns, time.time_ns(), self.version)
            data = req.SerializeToString()
            if self.cfg.compression == "gzip" and self.cfg.protocol == "http":
                import gzip

                data = gzip.compress(data, mtime=0)
            result = self.sender.send(OtlpPayload(data, 0))
        except Exception:  # noqa: BLE001 - metrics must never take the agent down
            log.exception("metrics.otlp: push failed")
            result = None
        if result is not None and result.outcome is Outcome.DONE:
            self.pushed += 1
            return True
        self.failed += 1
        if result is not None and result.outcome is Outcome.GIVE_UP:
            log.warning("metrics.otlp: the collector refused the metrics (%s)", result.reason)
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.interval):
            self.push()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.cfg.timeout + 5)
        self.push()  # the final values
        self.sender.close()
