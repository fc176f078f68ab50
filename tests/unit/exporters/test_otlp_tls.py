"""OTLP exporter over TLS: a CA bundle (`ca_certs`), mutual TLS (`client_cert`/`client_key`), and TLS
failures held and reported once. rotel's receivers have no TLS, so the servers here are stand-ins
on real TLS stacks: grpcio's server with ssl_server_credentials (OTLP/gRPC's LogsService/Export) and
http.server behind Python's ssl (OTLP/HTTP's /v1/logs). The certificates come from the openssl CLI
(a CA, a server certificate for 127.0.0.1, a client certificate)."""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
import threading
from concurrent import futures
from http.server import ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse,
)

from siemhub.exporters.base import Outcome
from tests.unit.exporters.test_otlp_exporter import _cfg, _event, _Handler

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if shutil.which("openssl") is None:
        from tests.conftest import server_unavailable

        server_unavailable("the openssl command is missing (Debian: openssl)")
    d = tmp_path_factory.mktemp("pki")

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=siemhub test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d


def _grpc_server(pki, mutual: bool):
    got: list = []

    def export(request, context):
        got.append(request)
        return ExportLogsServiceResponse()

    handler = grpc.method_handlers_generic_handler("opentelemetry.proto.collector.logs.v1.LogsService", {
        "Export": grpc.unary_unary_rpc_method_handler(export, request_deserializer=ExportLogsServiceRequest.FromString,
                                                      response_serializer=ExportLogsServiceResponse.SerializeToString)})
    server = grpc.server(futures.ThreadPoolExecutor(2), handlers=[handler])
    creds = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
                                        root_certificates=(pki / "ca.pem").read_bytes(), require_client_auth=mutual)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port, got


def _send(endpoint: str, extra: str = ""):
    cls, cfg = _cfg(extra, endpoint, insecure=False)
    ex = cls("o", cfg)
    ex.start()
    try:
        payload = ex.encode([_event(1)])
        return [ex.send(payload) for _ in range(2)]
    finally:
        ex.close()


def test_grpc_with_ca_bundle(pki):
    server, port, got = _grpc_server(pki, mutual=False)
    try:
        results = _send(f"https://127.0.0.1:{port}", f"    ca_certs: {pki / 'ca.pem'}")
        assert [r.outcome for r in results] == [Outcome.DONE, Outcome.DONE]
        assert got[0].resource_logs[0].scope_logs[0].log_records[0].event_name == "siemhub.process_exec"
    finally:
        server.stop(0)


def test_grpc_unknown_ca_is_held_and_reported_once(pki, caplog):
    server, port, got = _grpc_server(pki, mutual=False)
    try:
        with caplog.at_level(logging.WARNING, "siemhub.exporters.otlp"):
            results = _send(f"https://127.0.0.1:{port}")  # the system CAs do not know the test CA
        assert [(r.outcome, r.reason) for r in results] == [(Outcome.RETRY, "otlp_tls")] * 2
        assert caplog.text.count("TLS failed") == 1 and not got
    finally:
        server.stop(0)


def test_grpc_mutual_tls(pki):
    server, port, got = _grpc_server(pki, mutual=True)
    try:
        ok = _send(f"https://127.0.0.1:{port}", f"    ca_certs: {pki / 'ca.pem'}\n"
                                                f"    client_cert: {pki / 'client.pem'}\n    client_key: {pki / 'client.key'}")
        assert [r.outcome for r in ok] == [Outcome.DONE, Outcome.DONE]
        refused = _send(f"https://127.0.0.1:{port}", f"    ca_certs: {pki / 'ca.pem'}")  # no client certificate
        assert all(r.outcome is Outcome.RETRY for r in refused), refused
    finally:
        server.stop(0)


@pytest.fixture
def https_server(pki):
    class H(_Handler):
        script: list = []
        seen: list = []

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki / "server.pem", pki / "server.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, H
    srv.shutdown()
    srv.server_close()


def test_http_mutual_tls_and_unknown_ca(pki, https_server, caplog):
    srv, h = https_server
    url = f"https://127.0.0.1:{srv.server_address[1]}"
    ok = _send(url, f"    protocol: http\n    ca_certs: {pki / 'ca.pem'}\n"
                    f"    client_cert: {pki / 'client.pem'}\n    client_key: {pki / 'client.key'}")
    assert [r.outcome for r in ok] == [Outcome.DONE, Outcome.DONE] and h.seen[0][0] == "/v1/logs"
    with caplog.at_level(logging.WARNING, "siemhub.exporters.otlp"):
        bad = _send(url, "    protocol: http")  # the system CAs do not know the test CA
    assert [(r.outcome, r.reason) for r in bad] == [(Outcome.RETRY, "otlp_tls")] * 2
    assert caplog.text.count("TLS failed") == 1


def test_unreadable_ca_file_is_a_start_error(tmp_path):
    cls, cfg = _cfg(f"    ca_certs: {tmp_path / 'missing.pem'}", "https://127.0.0.1:4317", insecure=False)
    with pytest.raises(RuntimeError, match="ca_certs .* cannot be read"):
        cls("o", cfg).start()
