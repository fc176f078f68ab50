"""OTLP exporter: security events as OpenTelemetry logs, over gRPC or HTTP/protobuf (docs/exporters/otlp.md).

- `encode(batch)` writes the batch's ExportLogsServiceRequest once (exporters/formats/otel.py: one
  LogRecord per event, the Resource and scope once per node) and, for HTTP with gzip, compresses it.
  It is pure apart from the observed timestamp it stamps on the batch; a retry sends the same bytes.
- `submit(payload)` starts one export and returns at once; `poll` gives its answer. gRPC: an async
  unary call (`future`) on a channel of grpcio, the OpenTelemetry SDK's gRPC transport, with the
  SDK exporter's user agent and gRPC's own retries off. HTTP: a POST to `<endpoint>/v1/logs` on a
  requests session (the SDK HTTP exporter's transport library), in a pool of `max_in_flight`
  threads. The SDK exporters' `export()` is not used: it takes SDK records (the slow path the
  benchmark compares with) and runs its own retry loop, and retries belong to the delivery path
  (backoff, circuit breaker, budget, dead letters), which never holds more than `max_in_flight`
  batches here, so there is no second queue.
- Answers become outcomes in exporters/base.py (outcome_for_grpc, outcome_for_endpoint,
  outcome_for_exception): the OTLP specification's retryable codes retry, honouring Retry-After and
  gRPC RetryInfo. A wrong endpoint, a protocol mismatch (gRPC to the HTTP port or the reverse), a TLS
  failure or rejected credentials hold the events and retry; the cause is logged once (and once more
  when delivery works again), not per attempt.
- Partial success: OTLP reports how many records the collector rejected, not which. The batch's
  events go to the dead-letter destination with reason `otlp_partially_rejected` (the collector kept
  the others: a replay may repeat them, and `log.record.uid` identifies each event).
- Header values (auth tokens from ${ENV} / ${file:...}) are SecretStr and never logged.
"""

from __future__ import annotations

import gzip
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from siemhub.collector.core.event import Event
from siemhub.collector.core.settings import Strict
from siemhub.exporters.base import (
    Exporter, ExporterConfig, Outcome, SendResult, outcome_for_exception, outcome_for_grpc,
    outcome_for_endpoint,
)
from siemhub.exporters.formats.otel import LogsEncoder, siemhub_version

log = logging.getLogger("siemhub.exporters.otlp")

# gRPC's C core prints every failed TLS handshake and reconnect to stderr (INFO lines, once per
# attempt); the exporter reports causes itself, once. Read when grpc first loads; an explicit
# GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

LOGS_PATH = "/v1/logs"
_EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
AttributeValue = str | int | float | bool


class OtlpConnection(Strict):
    """Where and how to reach an OTLP collector: shared by the exporter and `metrics.otlp`."""

    endpoint: str = Field(description="collector URL: http(s)://host:4317 for gRPC, http(s)://host:4318 for HTTP "
                                      "(HTTP: the signal's path, /v1/logs or /v1/metrics, is added when the URL has "
                                      "no path)")
    protocol: Literal["grpc", "http"] = Field("grpc", description="OTLP/gRPC or OTLP/HTTP with protobuf bodies")
    insecure: bool = Field(False, description="plain text, no TLS (e.g. a collector on localhost); needs an "
                                              "http:// endpoint")
    headers: dict[str, SecretStr] = Field({}, description="request headers / gRPC metadata (e.g. authorization: "
                                                          "${OTLP_TOKEN}); never logged")
    compression: Literal["none", "gzip"] = Field("none", description="request compression")
    ca_certs: str | None = Field(None, description="CA bundle (PEM) to verify the collector (default: system CAs)")
    client_cert: str | None = Field(None, description="client certificate (PEM) for mutual TLS")
    client_key: str | None = Field(None, description="client private key (PEM) for mutual TLS")
    resource: dict[str, AttributeValue] = Field({}, description="extra resource attributes "
                                                                "(e.g. deployment.environment.name)")
    timeout: float = Field(10.0, gt=0, description="seconds one export may take before it is retried")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        out = {}
        for name, value in v.items():
            if not name or any(c in name for c in " :\r\n\t") or not name.isascii():
                raise ValueError(f"invalid header name {name!r}")
            if any(c in value.get_secret_value() for c in "\r\n"):
                raise ValueError(f"header {name!r}: the value contains a line break")
            out[name.lower()] = value  # gRPC metadata keys are lowercase; HTTP names are case-blind
        return out

    @model_validator(mode="after")
    def _transport(self):
        u = urlsplit(self.endpoint)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"endpoint must be http://host:port or https://host:port, not {self.endpoint!r}")
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"endpoint {self.endpoint!r} has an invalid port") from None
        if self.protocol == "grpc" and u.path not in ("", "/"):
            raise ValueError("a gRPC endpoint takes no path (the service and method are fixed by OTLP)")
        if u.scheme == "http" and not self.insecure:
            raise ValueError("the endpoint is plain text (http://): set insecure: true for a collector reached "
                             "without TLS (e.g. on localhost), or use https://")
        if u.scheme == "https" and self.insecure:
            raise ValueError("insecure: true means plain text; use an http:// endpoint")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.insecure and (self.ca_certs or self.client_cert):
            raise ValueError("ca_certs/client_cert/client_key need TLS (an https:// endpoint)")
        return self

    def url(self, path: str = LOGS_PATH) -> str:
        """The HTTP URL of a signal (`path` when the endpoint has none)."""
        u = urlsplit(self.endpoint)
        return self.endpoint if u.path not in ("", "/") else self.endpoint.rstrip("/") + path

    def target(self) -> str:
        """host:port of a gRPC endpoint (443 / 80 when the URL gives none)."""
        u = urlsplit(self.endpoint)
        port = u.port or (443 if u.scheme == "https" else 80)
        host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else u.hostname
        return f"{host}:{port}"


class OtlpConfig(ExporterConfig, OtlpConnection):
    format: Literal["otel"] = Field("otel", description="the OpenTelemetry mapping (docs/otel-mapping.md)")
    max_in_flight: int = Field(2, ge=1, le=16, description="export requests sent and not yet answered")


@dataclass(slots=True)
class _Ticket:
    future: Any  # a grpc future or a concurrent.futures.Future of the POST
    count: int


@dataclass(slots=True)
class OtlpPayload:
    data: bytes  # the serialized request (gzip-compressed for HTTP with compression: gzip)
    count: int  # log records in it


# --- the causes worth one clear message --------------------------------------------------------------

_HINTS = {
    "otlp_protocol_mismatch": "the endpoint does not speak {protocol}: is it the {other} port? "
                              "(OTLP/gRPC is usually 4317, OTLP/HTTP 4318; set protocol or endpoint)",
    "otlp_tls": "TLS failed with {endpoint}: {detail} (check ca_certs, that the collector serves TLS, or use "
                "http:// with insecure: true for a plain-text collector)",
    "otlp_unreachable": "cannot reach {endpoint}: {detail}; events are kept and retried",
    "otlp_not_found": "{endpoint} answered {detail}: wrong endpoint or path? events are kept and retried",
    "otlp_auth": "{endpoint} refused the credentials ({detail}): check headers; events are kept and retried",
}


def _short(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After value (seconds or an HTTP date) -> seconds from now, or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def grpc_retry_info(err: Any) -> float | None:
    """RetryInfo.retry_delay from a gRPC error's google.rpc.Status details (trailing metadata), or None."""
    try:
        trailers = err.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - not every RpcError carries metadata
        return None
    for key, value in trailers:
        if key != "grpc-status-details-bin":
            continue
        from google.rpc import error_details_pb2, status_pb2

        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - a malformed detail is no RetryInfo
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class OtlpExporter(Exporter):
    config_model = OtlpConfig
    formats = ("otel",)
    # The signal: gRPC method, HTTP path, response message and its partial-success count. The
    # metrics sender (collector/otlp_metrics.py) reuses this class for the metrics signal.
    grpc_method = _EXPORT_METHOD
    http_path = LOGS_PATH
    rejected_field = "rejected_log_records"

    @staticmethod
    def response_type():
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        return ExportLogsServiceResponse

    def __init__(self, name: str, config: OtlpConfig) -> None:
        super().__init__(name, config)
        self.config: OtlpConfig = config
        self.max_in_flight = config.max_in_flight
        kubernetes = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        self._encoder = LogsEncoder(kubernetes=kubernetes, resource=config.resource)
        self._gzip = config.protocol == "http" and config.compression == "gzip"
        self._channel = None
        self._call = None
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._session = None
        self._pool: ThreadPoolExecutor | None = None
        self._http_headers: dict[str, str] = {}
        self._problems: set[str] = set()  # causes reported since delivery last worked
        self._probed = False  # _speaks_http2 ran since delivery last worked
        self._warned: set[str] = set()  # partial-success messages already logged

    # --- lifecycle ---

    def start(self) -> None:
        if self._channel is not None or self._session is not None:
            return  # started already (the delivery runner starts its exporter too)
        cfg = self.config
        files = {k: getattr(cfg, k) for k in ("ca_certs", "client_cert", "client_key") if getattr(cfg, k)}
        for key, path in files.items():
            if not os.access(path, os.R_OK):
                raise RuntimeError(f"exporter {self.name}: {key} {path!r} cannot be read")
        if cfg.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        log.info("exporter %s: OTLP/%s to %s (%s)", self.name, "gRPC" if cfg.protocol == "grpc" else "HTTP",
                 cfg.url(self.http_path) if cfg.protocol == "http" else cfg.target(), "plain text" if cfg.insecure else "TLS")

    def _start_grpc(self) -> None:
        import grpc

        cfg = self.config
        try:  # the SDK gRPC exporter's channel options (its user agent)
            from opentelemetry.exporter.otlp.proto.grpc import _OTLP_GRPC_CHANNEL_OPTIONS as sdk_options
        except ImportError:  # a private name of the SDK; the user agent is all it sets
            sdk_options = []
        options = [*sdk_options,
                   ("grpc.enable_retries", 0),  # one retry policy: the delivery path's
                   # reconnect soon after a collector comes back (gRPC's default backoff reaches 120 s)
                   ("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 5000)]
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        if cfg.insecure:
            self._channel = grpc.insecure_channel(cfg.target(), options=options, compression=compression)
        else:
            def read(path: str | None) -> bytes | None:
                if path is None:
                    return None
                with open(path, "rb") as f:
                    return f.read()

            creds = grpc.ssl_channel_credentials(read(cfg.ca_certs), read(cfg.client_key), read(cfg.client_cert))
            self._channel = grpc.secure_channel(cfg.target(), creds, options=options, compression=compression)
        # The request is already serialized: the method takes bytes as they are.
        self._call = self._channel.unary_unary(self.grpc_method, request_serializer=None,
                                               response_deserializer=self.response_type().FromString)
        self._metadata = tuple((k, v.get_secret_value()) for k, v in cfg.headers.items())

    def _start_http(self) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        cfg = self.config
        s = requests.Session()
        # max_retries=0: urllib3 does not retry either; pool as large as the requests in flight
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=cfg.max_in_flight, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        s.verify = cfg.ca_certs or True
        if cfg.client_cert:
            s.cert = (cfg.client_cert, cfg.client_key)
        s.trust_env = False  # no proxy or netrc credentials picked up from the environment
        self._session = s
        self._http_headers = {"Content-Type": "application/x-protobuf", "User-Agent": f"siemhub/{siemhub_version()}",
                              **{k: v.get_secret_value() for k, v in cfg.headers.items()}}
        if self._gzip:
            self._http_headers["Content-Encoding"] = "gzip"
        self._pool = ThreadPoolExecutor(cfg.max_in_flight, thread_name_prefix=f"otlp-{self.name}")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # --- encode (pure, but for the observed time) ---

    def encode(self, batch: Sequence[Event]) -> OtlpPayload:
        data = self._encoder.encode(batch, time.time_ns())
        if self._gzip:
            data = gzip.compress(data, compresslevel=6, mtime=0)
        return OtlpPayload(data, len(batch))

    # --- send (I/O) ---

    def send(self, payload: OtlpPayload) -> SendResult:
        ticket = self.submit(payload)
        while True:
            result = self.poll(ticket, 1.0)
            if result is not None:
                return result

    def submit(self, payload: OtlpPayload) -> _Ticket:
        if self.config.protocol == "grpc":
            if self._call is None:
                self._start_grpc()
            fut = self._call.future(payload.data, timeout=self.config.timeout, metadata=self._metadata)
        else:
            if self._pool is None:
                self._start_http()
            fut = self._pool.submit(self._post, payload)
        return _Ticket(fut, payload.count)

    def _post(self, payload: OtlpPayload):
        return self._session.post(self.config.url(self.http_path), data=payload.data, headers=self._http_headers,
                                  timeout=self.config.timeout, allow_redirects=False)

    def poll(self, ticket: _Ticket, timeout: float, idle: bool = False) -> SendResult | None:
        if self.config.protocol == "grpc":
            import grpc

            try:
                response = ticket.future.result(timeout=timeout)
            except grpc.FutureTimeoutError:
                return None
            except grpc.RpcError as err:
                return self._grpc_failure(err)
            return self._accepted(response, ticket)
        try:
            resp = ticket.future.result(timeout=timeout)
        except FutureTimeout:
            return None
        except Exception as exc:  # noqa: BLE001 - requests' exceptions: decided below, in one place
            return self._http_exception(exc)
        return self._http_answer(resp, ticket)

    # --- answers ---

    def _accepted(self, response: Any, ticket: _Ticket) -> SendResult:
        """A 2xx / OK answer: DONE, unless the collector rejected records (partial success)."""
        self._recovered()
        ps = response.partial_success if response is not None else None
        rejected = getattr(ps, self.rejected_field) if ps is not None else 0
        if ps is None or (not rejected and not ps.error_message):
            return SendResult(Outcome.DONE)
        msg = _short(ps.error_message or "no message")
        if not rejected:  # a warning from the collector, nothing lost
            if msg not in self._warned and len(self._warned) < 100:
                self._warned.add(msg)
                log.warning("exporter %s: the collector accepted the batch with a warning: %s", self.name, msg)
            return SendResult(Outcome.DONE)
        n = ticket.count
        log.warning("exporter %s: the collector rejected %d of %d records (%s); OTLP does not say which, so "
                    "the batch goes to the dead-letter destination", self.name, rejected, n, msg)
        return SendResult(Outcome.DONE, items=[(i, Outcome.GIVE_UP, "otlp_partially_rejected") for i in range(n)])

    def _http_answer(self, resp: Any, ticket: _Ticket) -> SendResult:
        status = resp.status_code
        if 200 <= status < 300:
            try:
                response = self.response_type().FromString(resp.content) if resp.content else None
            except Exception:  # noqa: BLE001 - a 2xx with a body we cannot read still delivered
                response = None
            return self._accepted(response, ticket)
        result = outcome_for_endpoint(status, retry_after_seconds(resp.headers.get("Retry-After")))
        detail = f"HTTP {status}{self._status_message(resp)}"
        if status in (401, 403):
            self._report("otlp_auth", detail)
        elif status in (404, 405, 415):
            self._report("otlp_not_found", detail)
        elif result.outcome is Outcome.GIVE_UP:
            log.warning("exporter %s: %s answered %s", self.name, self.config.url(self.http_path), detail)
        return result

    @staticmethod
    def _status_message(resp: Any) -> str:
        """The message of a google.rpc.Status error body (OTLP/HTTP error responses), if any."""
        try:
            if "protobuf" in resp.headers.get("Content-Type", "") and resp.content:
                from google.rpc import status_pb2

                m = status_pb2.Status.FromString(resp.content).message
                return f" ({_short(m)})" if m else ""
        except Exception:  # noqa: BLE001
            pass
        return ""

    def _http_exception(self, exc: BaseException) -> SendResult:
        import requests

        detail = _short(str(exc))
        if isinstance(exc, requests.exceptions.SSLError):
            self._report("otlp_tls", detail)
            return SendResult(Outcome.RETRY, "otlp_tls")
        if isinstance(exc, requests.exceptions.Timeout):
            return SendResult(Outcome.RETRY, "timeout")
        if isinstance(exc, requests.exceptions.ConnectionError):
            text = repr(exc)
            if "BadStatusLine" in text or "\\x00\\x00" in text or self._speaks_http2():  # a gRPC port
                self._report("otlp_protocol_mismatch", detail)
                return SendResult(Outcome.RETRY, "otlp_protocol_mismatch")
            self._report("otlp_unreachable", detail)
            return SendResult(Outcome.RETRY, "otlp_unreachable")
        if isinstance(exc, requests.exceptions.RequestException):
            log.warning("exporter %s: request failed: %s", self.name, detail)
            return SendResult(Outcome.RETRY, type(exc).__name__)
        return outcome_for_exception(exc)

    def _speaks_http2(self) -> bool:
        """After a reset connection (a gRPC server may reset an HTTP/1.1 request before its HTTP/2
        frames are read): does the plain-text endpoint greet a new connection with an HTTP/2 SETTINGS
        frame, as a gRPC server does? Checked once per failure period, only while the cause is open."""
        cfg = self.config
        if cfg.protocol != "http" or not cfg.insecure or "otlp_protocol_mismatch" in self._problems \
                or self._probed:
            return False
        self._probed = True
        import socket

        u = urlsplit(cfg.endpoint)
        try:
            with socket.create_connection((u.hostname, u.port or 80), timeout=1.0) as sock:
                head = sock.recv(9)  # an HTTP/2 frame header: length (3), type (1): 0x4 is SETTINGS
        except OSError:
            return False
        return len(head) >= 4 and head[3] == 0x04

    def _grpc_failure(self, err: Any) -> SendResult:
        code = err.code().name
        details = _short(err.details() or "")
        result = outcome_for_grpc(code, grpc_retry_info(err))
        if code == "UNIMPLEMENTED" and ("http2 header" in details or "404" in details):
            self._report("otlp_protocol_mismatch", details)
            return SendResult(Outcome.RETRY, "otlp_protocol_mismatch")
        if code == "UNAVAILABLE":
            low = details.lower()
            if "ssl" in low or "tls" in low or "handshake" in low or "certificate" in low:
                self._report("otlp_tls", details)
                return SendResult(Outcome.RETRY, "otlp_tls")
            if "http2" in low or "http/1" in low or "http1" in low:
                self._report("otlp_protocol_mismatch", details)
                return SendResult(Outcome.RETRY, "otlp_protocol_mismatch")
            self._report("otlp_unreachable", details)
        elif code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            self._report("otlp_auth", f"{code}: {details}")
        elif code == "UNIMPLEMENTED":
            self._report("otlp_not_found", f"{code}: {details}")
        elif result.outcome is Outcome.GIVE_UP:
            log.warning("exporter %s: the collector answered %s: %s", self.name, code, details)
        return result

    def _report(self, kind: str, detail: str) -> None:
        """Log each cause once while delivery fails (a failing endpoint can alternate between two,
        e.g. a reset connection and HTTP/2 frames); again only after delivery worked."""
        if kind in self._problems:
            return
        self._problems.add(kind)
        cfg = self.config
        other = "HTTP" if cfg.protocol == "grpc" else "gRPC"
        endpoint = cfg.target() if cfg.protocol == "grpc" else cfg.url(self.http_path)
        text = _HINTS[kind].format(protocol=f"OTLP/{'gRPC' if cfg.protocol == 'grpc' else 'HTTP'}", other=other,
                                   endpoint=endpoint, detail=detail)
        (log.warning if kind == "otlp_unreachable" else log.error)("exporter %s: %s", self.name, text)

    def _recovered(self) -> None:
        self._probed = False
        if self._problems:
            log.warning("exporter %s: delivering again (after %s)", self.name, ", ".join(sorted(self._problems)))
            self._problems.clear()
