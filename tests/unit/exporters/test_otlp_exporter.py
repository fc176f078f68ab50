"""OTLP exporter without rotel: config checks, the status tables (gRPC and HTTP, as the OTLP
specification lists retryable answers), Retry-After / RetryInfo, partial success, and header secrecy.

Answers rotel never gives (partial success, RESOURCE_EXHAUSTED with RetryInfo, 503 with Retry-After,
401) come from small stand-in collectors written here on grpcio's server and http.server, on
127.0.0.1: they speak the same OTLP/gRPC method and OTLP/HTTP path and messages as a real collector
(opentelemetry-proto's ExportLogsServiceResponse, google.rpc.Status). tests/integration/test_otlp.py
runs the exporter against rotel."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
)

from siemhub.collector import config
from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process
from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import Outcome, outcome_for_grpc, outcome_for_endpoint
from siemhub.exporters.otlp import OtlpExporter, retry_after_seconds

pytestmark = pytest.mark.timeout(60)


def _cfg(extra: str = "", endpoint: str = "http://127.0.0.1:4317", insecure: bool = True):
    text = f"""
exporters:
  o:
    type: otlp
    endpoint: "{endpoint}"
{"    insecure: true" if insecure else ""}
{extra}
routes: [{{name: all, to: [o]}}]
"""
    return config.parse(text, "o.yaml").exporters["o"]


def _event(i: int) -> Event:
    return Event(id=f"id-{i}", time="2026-01-01T00:00:00.000000001Z", type="process_exec", node=Node(name="n1"),
                 process=Process(exec_id=f"ex{i}", pid=10 + i, binary="/bin/true", args=["/bin/true"]), **EVENT_BASE)


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_entry_point():
    cls, cfg = _cfg()
    assert cls is OtlpExporter
    assert cfg.protocol == "grpc" and cfg.compression == "none" and cfg.format == "otel"
    assert cfg.target() == "127.0.0.1:4317"
    _, http = _cfg("    protocol: http", endpoint="http://127.0.0.1:4318")
    assert http.url() == "http://127.0.0.1:4318/v1/logs"
    _, custom = _cfg("    protocol: http", endpoint="http://127.0.0.1:4318/otlp/v1/logs")
    assert custom.url() == "http://127.0.0.1:4318/otlp/v1/logs"


@pytest.mark.parametrize("extra,endpoint,insecure,needle", [
    ("", "http://127.0.0.1:4317", False, "plain text"),  # TLS is the default: http:// must be said
    ("", "https://c:4317", True, "insecure: true means plain text"),
    ("", "ftp://c:4317", True, "http://host:port"),
    ("", "http://c:4317/v1/logs", True, "gRPC endpoint takes no path"),
    ("    client_cert: /c.pem", "https://c:4317", False, "go together"),
    ("    ca_certs: /ca.pem", "http://c:4317", True, "need TLS"),
    ("    protocol: thrift", "http://c:4317", True, "protocol"),
    ("    headers: {'bad name': x}", "http://c:4317", True, "invalid header name"),
    ("    compresion: gzip", "http://c:4317", True, "compresion"),
])
def test_config_errors_name_the_field(extra, endpoint, insecure, needle):
    with pytest.raises(config.ConfigError) as err:
        _cfg(extra, endpoint, insecure)
    assert needle in str(err.value) and "o.yaml" in str(err.value)


def test_header_values_from_env_are_secret(monkeypatch, caplog):
    monkeypatch.setenv("OTLP_TOKEN", "Bearer s3cr3t-t0ken")
    _, cfg = _cfg('    headers: {Authorization: "${OTLP_TOKEN}"}')
    assert cfg.headers["authorization"].get_secret_value() == "Bearer s3cr3t-t0ken"
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.model_dump())


def test_header_value_from_a_secret_file(tmp_path):
    secret = tmp_path / "otlp-token"
    secret.write_text("Bearer from-file-t0ken\n")  # Kubernetes secrets end with a newline
    _, cfg = _cfg(f'    headers: {{authorization: "${{file:{secret}}}"}}')
    assert cfg.headers["authorization"].get_secret_value() == "Bearer from-file-t0ken"
    assert "from-file" not in repr(cfg)


# --- the status tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("code,retry_after,outcome", [
    ("OK", None, Outcome.DONE),
    ("UNAVAILABLE", None, Outcome.RETRY),
    ("CANCELLED", None, Outcome.RETRY),
    ("DEADLINE_EXCEEDED", None, Outcome.RETRY),
    ("ABORTED", None, Outcome.RETRY),
    ("OUT_OF_RANGE", None, Outcome.RETRY),
    ("DATA_LOSS", None, Outcome.RETRY),
    ("RESOURCE_EXHAUSTED", 2.0, Outcome.RETRY),  # with RetryInfo
    ("RESOURCE_EXHAUSTED", None, Outcome.GIVE_UP),  # without: the spec says do not retry
    ("INVALID_ARGUMENT", None, Outcome.GIVE_UP),
    ("INTERNAL", None, Outcome.GIVE_UP),
    ("UNKNOWN", None, Outcome.GIVE_UP),
    ("UNAUTHENTICATED", None, Outcome.RETRY),  # held: a config problem, not the data's
    ("PERMISSION_DENIED", None, Outcome.RETRY),
    ("UNIMPLEMENTED", None, Outcome.RETRY),
])
def test_grpc_table(code, retry_after, outcome):
    r = outcome_for_grpc(code, retry_after)
    assert r.outcome is outcome
    if outcome is Outcome.RETRY and code == "RESOURCE_EXHAUSTED":
        assert r.retry_after == 2.0


@pytest.mark.parametrize("status,outcome", [
    (200, Outcome.DONE), (429, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY), (504, Outcome.RETRY),
    (400, Outcome.GIVE_UP), (413, Outcome.GIVE_UP), (404, Outcome.RETRY), (401, Outcome.RETRY),
    (415, Outcome.RETRY), (501, Outcome.GIVE_UP),
])
def test_http_table(status, outcome):
    assert outcome_for_endpoint(status).outcome is outcome
    assert outcome_for_endpoint(503, 7.0).retry_after == 7.0


def test_retry_after_values():
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds(future) <= 31


# --- stand-in collectors ------------------------------------------------------------------------------


class GrpcStandIn:
    """A real gRPC server with the OTLP logs method; each call takes the next scripted answer."""

    def __init__(self, answers: list) -> None:
        self.answers = list(answers)
        self.requests: list[ExportLogsServiceRequest] = []
        self.metadata: list[dict] = []
        handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService", {
            "Export": grpc.unary_unary_rpc_method_handler(
                self._export, request_deserializer=ExportLogsServiceRequest.FromString,
                response_serializer=ExportLogsServiceResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request, context):
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        answer = self.answers.pop(0) if self.answers else ExportLogsServiceResponse()
        if callable(answer):
            return answer(context)
        return answer

    def stop(self):
        self.server.stop(0)


def _exporter(endpoint: str, extra: str = "") -> OtlpExporter:
    cls, cfg = _cfg(extra, endpoint)
    ex = cls("o", cfg)
    ex.start()
    return ex


def test_grpc_partial_success_is_dead_lettered(caplog):
    srv = GrpcStandIn([ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
        rejected_log_records=2, error_message="2 records too large"))])
    ex = _exporter(f"http://127.0.0.1:{srv.port}")
    try:
        with caplog.at_level(logging.WARNING, "siemhub.exporters.otlp"):
            r = ex.send(ex.encode([_event(i) for i in range(3)]))
        assert r.outcome is Outcome.DONE
        assert [(i, o) for i, o, _ in r.items] == [(0, Outcome.GIVE_UP), (1, Outcome.GIVE_UP), (2, Outcome.GIVE_UP)]
        assert {reason for *_, reason in r.items} == {"otlp_partially_rejected"}
        assert "rejected 2 of 3 records (2 records too large)" in caplog.text
        assert len(srv.requests[0].resource_logs[0].scope_logs[0].log_records) == 3
    finally:
        ex.close()
        srv.stop()


def test_grpc_resource_exhausted_with_retry_info_and_headers(monkeypatch):
    monkeypatch.setenv("OTLP_TOKEN", "Bearer abc")

    def exhausted(context):
        detail = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="slow down")
        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3, nanos=500_000_000))
        detail.details.add().Pack(info)
        context.set_trailing_metadata((("grpc-status-details-bin", detail.SerializeToString()),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

    srv = GrpcStandIn([exhausted, ExportLogsServiceResponse()])
    ex = _exporter(f"http://127.0.0.1:{srv.port}", '    headers: {Authorization: "${OTLP_TOKEN}", x-tenant: t1}')
    try:
        payload = ex.encode([_event(1)])
        r = ex.send(payload)
        assert r.outcome is Outcome.RETRY and r.reason == "grpc_resource_exhausted" and r.retry_after == 3.5
        assert ex.send(payload).outcome is Outcome.DONE
        assert srv.metadata[0]["authorization"] == "Bearer abc" and srv.metadata[0]["x-tenant"] == "t1"
        assert srv.requests[0] == srv.requests[1]  # the same request again
    finally:
        ex.close()
        srv.stop()


class _Handler(BaseHTTPRequestHandler):
    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()))
        status, headers, content = type(self).script.pop(0) if type(self).script else (200, {}, b"")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_standin():
    class H(_Handler):
        script: list = []
        seen: list = []

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, H
    srv.shutdown()
    srv.server_close()


def test_http_gzip_headers_and_auth_failure_reported_once(http_standin, monkeypatch, caplog):
    srv, h = http_standin
    monkeypatch.setenv("OTLP_TOKEN", "Bearer zzz-secret")
    err = status_pb2.Status(code=16, message="bad token").SerializeToString()
    h.script = [(401, {"Content-Type": "application/x-protobuf"}, err)] * 3
    ex = _exporter(f"http://127.0.0.1:{srv.server_address[1]}",
                   '    protocol: http\n    compression: gzip\n    headers: {Authorization: "${OTLP_TOKEN}"}')
    try:
        payload = ex.encode([_event(1), _event(2)])
        with caplog.at_level(logging.INFO, "siemhub.exporters.otlp"):
            results = [ex.send(payload) for _ in range(4)]
        assert [r.outcome for r in results] == [Outcome.RETRY] * 3 + [Outcome.DONE]
        assert caplog.text.count("refused the credentials (HTTP 401 (bad token))") == 1  # once, not per attempt
        assert "delivering again" in caplog.text
        assert "zzz-secret" not in caplog.text
        path, headers, body, _ = h.seen[-1]
        assert path == "/v1/logs" and headers["content-encoding"] == "gzip"
        assert headers["content-type"] == "application/x-protobuf" and headers["authorization"] == "Bearer zzz-secret"
        import gzip

        req = ExportLogsServiceRequest.FromString(gzip.decompress(body))
        assert [r.event_name for r in req.resource_logs[0].scope_logs[0].log_records] == ["siemhub.process_exec"] * 2
    finally:
        ex.close()


def test_delivery_honours_retry_after(http_standin):
    """503 with Retry-After: 2 -> the delivery path waits 2 s although its own backoff is 0.05 s."""
    srv, h = http_standin
    h.script = [(503, {"Retry-After": "2"}, b"")]
    cls, cfg = _cfg("    protocol: http\n    retry: {initial_interval: 0.05, max_interval: 0.1}",
                    f"http://127.0.0.1:{srv.server_address[1]}")
    runner = ExporterRunner(cls("o", cfg), Metrics())
    runner.start()
    try:
        runner.put_many([_event(1)])
        deadline = time.monotonic() + 10
        while runner.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.sent == 1 and runner.dropped == {}
        first, second = h.seen[0][3], h.seen[1][3]
        assert second - first >= 1.9, second - first
    finally:
        runner.stop(time.monotonic() + 2)


def test_http_400_gives_up_to_dead_letters(http_standin, tmp_path):
    srv, h = http_standin
    h.script = [(400, {}, b"")]
    cls, cfg = _cfg(f"    protocol: http\n    dead_letter: {{path: {tmp_path / 'dl.jsonl'}}}",
                    f"http://127.0.0.1:{srv.server_address[1]}")
    runner = ExporterRunner(cls("o", cfg), Metrics())
    runner.start()
    try:
        runner.put_many([_event(1), _event(2)])
        deadline = time.monotonic() + 10
        while runner.finished < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.dropped == {"http_400": 2} and runner.dead_lettered == {"http_400": 2}
        assert len((tmp_path / "dl.jsonl").read_text().splitlines()) == 2
    finally:
        runner.stop(time.monotonic() + 2)


def test_unreachable_is_retried_and_reported_once(caplog):
    from tests.servers.tansu import free_port

    ex = _exporter(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        payload = ex.encode([_event(1)])
        with caplog.at_level(logging.WARNING, "siemhub.exporters.otlp"):
            results = [ex.send(payload) for _ in range(3)]
        assert all(r.outcome is Outcome.RETRY for r in results), results
        assert caplog.text.count("cannot reach") == 1
    finally:
        ex.close()


def test_start_twice_keeps_one_channel():
    ex = _exporter("http://127.0.0.1:4317")
    try:
        channel = ex._channel
        ex.start()  # the delivery runner starts its exporter again
        assert ex._channel is channel
    finally:
        ex.close()
