"""The exporter contract, shared by every destination.

An exporter turns a batch of canonical events into one payload with a pure `encode(batch)`, and does
all of its I/O in `send(payload)`, which reports an Outcome. An exporter whose backend acknowledges
asynchronously (Kafka delivery reports) can keep several batches in flight: it sets `max_in_flight`
above 1 and implements `submit(payload) -> ticket` (start sending, do not wait) and
`poll(ticket, timeout) -> SendResult | None` (the answer, once there is one). The delivery runner
still finishes batches strictly in order, so acknowledgements never run ahead of an undelivered
event; the defaults send one batch at a time through `send`. Whether a failure is worth retrying is
decided in one place, `outcome_for_http` / `outcome_for_exception` below, never ad hoc in a plugin.
Queueing, batching, retries and drop accounting live in collector/delivery/ and are the same for
every exporter. Exporters are found by name through the `siemhub.exporters` entry-point group.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import field_validator

from siemhub.collector.core import registry
from siemhub.collector.core.event import Event
from siemhub.collector.core.settings import Strict
from siemhub.collector.delivery.settings import (BatchConfig, BufferConfig, CircuitBreakerConfig, DeadLetterConfig,
                                                QueueConfig, RetryConfig)


class Outcome(enum.Enum):
    DONE = "done"  # the backend has the events
    RETRY = "retry"  # transient: try the same payload again later
    GIVE_UP = "give_up"  # permanent: retrying cannot help (bad request, auth, too large)


@dataclass(slots=True)
class SendResult:
    outcome: Outcome
    reason: str = ""  # short, metric-safe reason (e.g. "http_503", "ENOSPC"); never a secret
    # Per-event outcomes for partial failures (bulk APIs): (index in batch, outcome, reason).
    items: list[tuple[int, Outcome, str]] = field(default_factory=list)
    # RETRY only: the backend asked to wait at least this long (HTTP Retry-After, gRPC RetryInfo)
    retry_after: float | None = None


DONE = SendResult(Outcome.DONE)

# --- the one place where backend answers become retry decisions ---------------------------------

_RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}


def outcome_for_http(status: int) -> SendResult:
    """HTTP status -> outcome. 2xx done; 408/425/429 and 500/502/503/504 retry (the codes that
    Elasticsearch, Splunk HEC and OTLP/HTTP document as transient); every other code gives up."""
    if 200 <= status < 300:
        return DONE
    if status in _RETRY_HTTP:
        return SendResult(Outcome.RETRY, f"http_{status}")
    return SendResult(Outcome.GIVE_UP, f"http_{status}")


# --- gRPC (OTLP/gRPC, exporters/otlp.py) and request-level HTTP answers ---------------------------------

# gRPC status codes the OTLP specification calls retryable. RESOURCE_EXHAUSTED only when the server
# sent RetryInfo (it then says how long to wait); without it the spec says not to retry.
_RETRY_GRPC = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
# Answers that mean "this endpoint is not set up for us" (a wrong port, path or credentials): retrying
# the same request cannot succeed until someone fixes the config or the collector, but dead-lettering
# every event meanwhile would throw a stream away over a typo. Such batches are held and retried
# (the circuit breaker spaces the attempts) and the exporter reports the cause once.
_HOLD_GRPC = {"UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"}
HOLD_HTTP = {401, 403, 404, 405, 415}


def outcome_for_grpc(code: str, retry_after: float | None = None) -> SendResult:
    """gRPC status name (grpc.StatusCode.X.name) -> outcome, for OTLP/gRPC exports."""
    if code == "OK":
        return DONE
    reason = f"grpc_{code.lower()}"
    if code in _RETRY_GRPC or (code == "RESOURCE_EXHAUSTED" and retry_after is not None):
        return SendResult(Outcome.RETRY, reason, retry_after=retry_after)
    if code in _HOLD_GRPC:
        return SendResult(Outcome.RETRY, reason)
    return SendResult(Outcome.GIVE_UP, reason)


def outcome_for_endpoint(status: int, retry_after: float | None = None) -> SendResult:
    """HTTP status of a whole request -> outcome, for every HTTP exporter (Elasticsearch's bulk request,
    Splunk HEC, OTLP/HTTP): as outcome_for_http (429/5xx retried, honouring Retry-After), and the
    answers of an endpoint not set up for us (401/403/404/405/415: credentials, a wrong URL or port) are
    held and retried behind the circuit breaker instead of dead-lettering the stream over a typo
    (see HOLD_HTTP). Per-item answers inside a bulk response use outcome_for_http."""
    result = outcome_for_http(status)
    if result.outcome is Outcome.RETRY:
        return SendResult(Outcome.RETRY, result.reason, retry_after=retry_after)
    if status in HOLD_HTTP:
        return SendResult(Outcome.RETRY, result.reason)
    return result


_RETRY_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.EIO, errno.ENOMEM,
                errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                errno.ENETUNREACH, errno.EPIPE}


def outcome_for_exception(exc: BaseException) -> SendResult:
    """Exception raised by send -> outcome. Timeouts, connection trouble and full disks are transient;
    permission and path errors, and anything unknown, are permanent (retrying a bug loops forever)."""
    if isinstance(exc, TimeoutError | ConnectionError):
        return SendResult(Outcome.RETRY, type(exc).__name__)
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return SendResult(Outcome.RETRY if exc.errno in _RETRY_ERRNO else Outcome.GIVE_UP, name)
    return SendResult(Outcome.GIVE_UP, type(exc).__name__)


# --- configuration shared by every exporter ------------------------------------------------------




def chunk_by_bytes(indices: Sequence[int], items: Sequence[bytes], limit: int) -> list[list[int]]:
    """Split the items named by `indices` (in order) into runs whose encoded sizes add up to at most
    `limit` bytes each (one item larger than the limit goes alone): the requests of a bulk API
    (Elasticsearch's `_bulk`, Splunk HEC's concatenated events)."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i in indices:
        n = len(items[i])
        if cur and size + n > limit:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        chunks.append(cur)
    return chunks


def batch_defaults(defaults: BatchConfig) -> Any:
    """A `batch` field validator for an exporter whose batches default to other sizes than
    BatchConfig's: a partial `batch:` in the config keeps this exporter's defaults for what it leaves
    out (`batch: {max_wait: 1}` alone must not mean BatchConfig's generic 512 events). Use in the
    config class body: `_batch_defaults = batch_defaults(BATCH_DEFAULTS)`."""

    def fill(cls: type, v: Any) -> Any:
        if isinstance(v, dict):
            return {"max_events": defaults.max_events, "max_wait": defaults.max_wait, **v}
        return v

    return field_validator("batch", mode="before")(classmethod(fill))


# The delivery settings every exporter has (queue, batch, retry, buffer, dead letters, breaker) belong
# to the shared delivery path; they are defined there and composed here.
class ExporterConfig(Strict):
    type: str
    format: str = "native"
    queue: QueueConfig = QueueConfig()
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    buffer: BufferConfig = BufferConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()


class Exporter:
    """Base class of every exporter. Subclasses set `config_model` and `formats`, and implement
    `encode` (pure) and `send` (I/O); `start`, `flush` and `close` default to no-ops."""

    config_model: ClassVar[type[ExporterConfig]] = ExporterConfig
    formats: ClassVar[tuple[str, ...]] = ("native",)
    # Batches submitted and not yet answered that the runner may keep (1: one send at a time).
    max_in_flight: int = 1

    def __init__(self, name: str, config: ExporterConfig) -> None:
        self.name = name
        self.config = config

    def start(self) -> None:
        """Open files or connections. Raising here is a start-up error, never a silent disable."""

    def encode(self, batch: Sequence[Event]) -> Any:
        raise NotImplementedError

    def send(self, payload: Any) -> SendResult:
        raise NotImplementedError

    def submit(self, payload: Any) -> Any:
        """Start sending `payload` and return a ticket for `poll`. An exporter with max_in_flight > 1
        returns before the backend answers; the default sends synchronously (the ticket is the result).
        A retried batch is submitted again with the same payload."""
        return self.send(payload)

    def poll(self, ticket: Any, timeout: float, idle: bool = False) -> SendResult | None:
        """The result of a submitted send, or None if it is not known after waiting up to `timeout`
        seconds. Must return a result eventually (an exporter bounds its own wait, e.g. by a timeout
        answered as RETRY). `idle` is True when the runner has nothing more to send for now: an
        exporter that holds messages back to fill its requests (Kafka's linger) sends them at once."""
        return ticket

    def flush(self, timeout: float = 5.0) -> None:
        """Push anything the exporter itself buffers (files: to disk)."""

    def close(self) -> None:
        """Release resources; called once, after the last send."""


class UnknownExporter(LookupError):
    pass


def exporter_types() -> dict[str, Any]:
    return registry.registered("siemhub.exporters", "exporter type")


def load_exporter_class(type_name: str) -> type[Exporter]:
    return registry.load("siemhub.exporters", type_name, "exporter type", UnknownExporter)
