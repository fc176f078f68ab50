"""Splunk exporter: events into Splunk's HTTP Event Collector (HEC), optionally with indexer
acknowledgement (docs/exporters/splunk.md).

- `encode(batch)` is pure: one HEC event object per event (`time` in epoch seconds with microseconds,
  `host` the node, `source`, `sourcetype` from a template per event type (`siemhub:process`,
  `siemhub:file`, `siemhub:network`, `siemhub:privilege`, `siemhub:policy`, `siemhub:agent`), `index`
  when configured (per event type or category if wanted), the event in the configured format (`cim` by
  default, `native`, `ecs`) and a few indexed `fields` that searches filter on (`siemhub_severity`,
  `siemhub_tag`, `siemhub_policy`; none of them is also a key of the event, which Splunk's KV_MODE=json
  would extract a second time)). The payload remembers, across retries, which
  events are delivered, given up or still pending, so a retry re-sends only the pending ones.
- `submit(payload)` posts the pending events to `/services/collector/event`, concatenated, in requests
  of at most `max_content_length` bytes, gzip-compressed, `concurrency` requests at a time over
  keep-alive connections; `poll(ticket)` collects the answers and, with `ack: true`, waits for Splunk's
  indexer acknowledgement of every request: ack ids are polled in bulk through
  `/services/collector/ack` (one query for every batch in flight, at most every `ack_interval`), and a
  request counts as delivered only once acknowledged. A request not acknowledged within `ack_timeout`
  is re-sent. Up to `max_in_flight` batches wait for their acks at once; the delivery runner finishes
  them in order. If the ack endpoint answers 4xx (acknowledgement disabled on the token: code 14), that
  is logged once and the exporter falls back to counting the 200 answers.
- HEC answers become outcomes in one place, `outcome_for_hec` (built on base.outcome_for_endpoint): a
  rejected event (400 with `invalid-event-number`: invalid data format, incorrect index, event field
  missing or blank, indexed fields) is given up alone with its reason (dead letter); the events before
  it were indexed (Splunk parses a request in order), the ones after it are sent again at once; a 400
  or 413 that names no event is split in halves until the bad events are isolated. 401/403 (token
  missing, invalid or disabled) are retried so that the circuit breaker opens and the events wait in
  the buffer, with one clear error in the log instead of a hot loop or a dead-lettered stream. 429,
  503 (busy, queues full) and other 5xx are retried, honouring `Retry-After`.
- A health check (`/services/collector/health`) at start is reported, never fatal.

The token goes only into the Authorization header of requests; it is a SecretStr in the config and is
never logged. TLS verification is on by default (ca_certs / client_cert / client_key / insecure, as
for the Elasticsearch exporter).
"""

from __future__ import annotations

import calendar
import json
import logging
import socket
import string
import threading
import time
import uuid
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec
from pydantic import Field, SecretStr, field_validator, model_validator

from siemhub.collector.core.event import EVENT_TYPES, Event, enc_hook
from siemhub.exporters.base import (
    DONE, HOLD_HTTP, BatchConfig, Exporter, ExporterConfig, Outcome, SendResult, batch_defaults, chunk_by_bytes,
    outcome_for_endpoint, outcome_for_exception,
)
from siemhub.exporters.formats import cim, ecs

log = logging.getLogger("siemhub.exporters.splunk")

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"
SOURCETYPE_FIELDS = ("category", "type", "format")
MAX_CONTENT_LENGTH = 838_860_800  # Splunk's largest max_content_length ([http_input] in limits.conf)

# --- configuration -------------------------------------------------------------------------------------

# ~1 MB requests of ~1 KB CIM events: a 2,000-event batch is two requests, sent concurrently
BATCH_DEFAULTS = BatchConfig(max_events=2000, max_wait=1.0)


class SplunkConfig(ExporterConfig):
    format: Literal["cim", "native", "ecs"] = "cim"
    url: str = Field(description="HEC base URL, e.g. https://splunk.example:8088")
    token: SecretStr = Field(description="HEC token; use ${ENV} or ${file:PATH}; never logged")
    index: str | None = Field(None, description="index for every event; omitted: the token's default index")
    index_by_type: dict[str, str] = Field(default_factory=dict, description="index per event type or "
                                          "sourcetype category (process, file, network, privilege, policy, agent)")
    source: str = Field("siemhub", description="HEC `source` of every event")
    sourcetype: str = Field("siemhub:{category}", description="sourcetype template; placeholders: "
                            + ", ".join(SOURCETYPE_FIELDS))
    indexed_fields: bool = Field(True, description="send siemhub_severity/tag/policy as indexed `fields`")
    ack: bool = Field(False, description="wait for Splunk's indexer acknowledgement of every request")
    ack_interval: float = Field(1.0, gt=0, description="seconds between two queries of the ack endpoint")
    ack_timeout: float = Field(120.0, gt=0, description="re-send a request not acknowledged after this long")
    channel: str | None = Field(None, description="X-Splunk-Request-Channel GUID; default: a stable UUID "
                                "derived from the host and exporter names")
    max_content_length: int = Field(1_000_000, ge=1024, le=MAX_CONTENT_LENGTH,
                                    description="bytes per request (uncompressed); at most the server's "
                                    "max_content_length")
    compression: bool = Field(True, description="gzip request bodies")
    compression_level: int = Field(1, ge=1, le=9, description="gzip level (1: fastest)")
    concurrency: int = Field(4, ge=1, le=32, description="requests in flight at once (keep-alive connections)")
    max_in_flight: int = Field(8, ge=1, le=64, description="batches sent and waiting for their answer or ack")
    request_timeout: float = Field(30.0, gt=0)
    health_check: bool = Field(True, description="query /services/collector/health at start (not fatal)")
    ca_certs: str | None = Field(None, description="CA bundle (PEM) to verify the server")
    insecure: bool = Field(False, description="skip TLS verification (logged as a warning)")
    client_cert: str | None = Field(None, description="client certificate (PEM) for mTLS")
    client_key: str | None = Field(None, description="client private key (PEM) for mTLS")
    batch: BatchConfig = BATCH_DEFAULTS

    _batch_defaults = batch_defaults(BATCH_DEFAULTS)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("https://") or v.startswith("http://")) or len(v.split("://", 1)[1]) == 0:
            raise ValueError("an http(s):// URL of the HEC, e.g. https://splunk.example:8088")
        v = v.rstrip("/")
        for suffix in (EVENT_PATH, "/services/collector"):
            if v.endswith(suffix):
                v = v[: -len(suffix)]
        return v

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("empty token")
        return v

    @field_validator("sourcetype")
    @classmethod
    def _sourcetype(cls, v: str) -> str:
        for _, name, spec, conv in string.Formatter().parse(v):
            if name is not None and (name not in SOURCETYPE_FIELDS or spec or conv):
                raise ValueError(f"unknown placeholder {{{name}}} (known: {', '.join(SOURCETYPE_FIELDS)})")
        return v

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None:
            uuid.UUID(v)  # ValueError: not a GUID (Splunk answers code 11)
        return v

    @field_validator("index_by_type")
    @classmethod
    def _index_keys(cls, v: dict[str, str]) -> dict[str, str]:
        known = set(EVENT_TYPES) | set(cim.CATEGORIES)
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown event type or category {', '.join(bad)} (known: {', '.join(sorted(known))})")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> SplunkConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        return self


def default_channel(exporter: str) -> str:
    """A GUID stable across restarts of one agent's exporter (Splunk keeps ack ids per channel)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"siemhub://{socket.gethostname()}/exporters/{exporter}"))


# --- the one place where HEC answers become outcomes ----------------------------------------------------

# codes that name one bad event (with invalid-event-number): give it up alone
EVENT_CODES = {6: "invalid_data_format", 7: "incorrect_index", 12: "event_field_required",
               13: "event_field_blank", 15: "indexed_fields"}
# codes that say the token or the request's set-up is wrong: nothing is delivered until an operator acts
CONFIG_CODES = {1: "token_disabled", 2: "token_required", 3: "invalid_authorization", 4: "invalid_token",
                10: "channel_missing", 11: "invalid_channel", 14: "ack_disabled", 16: "query_string_auth"}


@dataclass(frozen=True, slots=True)
class HecAnswer:
    outcome: Outcome
    reason: str  # metric-safe: hec_<status>_<code name>
    how: Literal["", "event", "split", "config"] = ""  # event: give up the named event; split: bisect


def outcome_for_hec(status: int, code: int | None, invalid_event: int | None) -> HecAnswer:
    """HTTP status + HEC code (+ invalid-event-number) -> what to do. 2xx done; a 400 naming an event
    gives that event up; a 400 or 413 naming none is split until the bad events are alone; 401/403,
    404/405 (not a HEC URL) and channel/auth set-up codes are retried (breaker, events kept) and
    reported as configuration errors;
    the rest follows base.outcome_for_endpoint (429/5xx retried, Retry-After honoured by the exporter)."""
    base = outcome_for_endpoint(status)
    if base.outcome is Outcome.DONE:
        return HecAnswer(Outcome.DONE, "")
    name = EVENT_CODES.get(code) or CONFIG_CODES.get(code) or (f"code_{code}" if code is not None else "")
    reason = f"hec_{status}" + (f"_{name}" if name else "")
    # 401/403, 404/405 (the URL is not a HEC endpoint: a wrong port or path, HEC off): held as
    # base.outcome_for_endpoint decides for every HTTP exporter, and reported as configuration errors
    if (base.outcome is Outcome.RETRY and status in HOLD_HTTP) or code in CONFIG_CODES:
        return HecAnswer(Outcome.RETRY, reason, "config")
    if status == 400 and invalid_event is not None:
        return HecAnswer(Outcome.GIVE_UP, reason, "event")
    if status in (400, 413):
        return HecAnswer(Outcome.GIVE_UP, reason, "split")
    return HecAnswer(base.outcome, reason)


# --- encoding (pure) ------------------------------------------------------------------------------------

_enc = msgspec.json.Encoder(enc_hook=enc_hook)


class _EpochCache:
    """RFC 3339 UTC (the canonical `time`) -> epoch seconds with 6 decimals, as JSON bytes. The date
    part of a second is converted once."""

    __slots__ = ("_sec",)

    def __init__(self) -> None:
        self._sec: dict[str, int] = {}

    def __call__(self, t: str) -> bytes:
        head = t[:19]
        sec = self._sec.get(head)
        if sec is None:
            try:
                sec = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                return b"%.6f" % datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            if len(self._sec) > 4096:
                self._sec.clear()
            self._sec[head] = sec
        rest = t[19:]
        if rest == "Z":
            return b"%d.000000" % sec
        if rest[:1] == "." and rest[-1:] == "Z":
            frac = rest[1:-1]
            if frac.isdigit():
                return b"%d.%s" % (sec, (frac[:6] + "000000"[len(frac):]).encode())
        return b"%.6f" % datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


PENDING, DELIVERED, FAILED = 0, 1, 2


@dataclass(slots=True)
class HecPayload:
    """One batch, encoded: one HEC event object (a line) per event, and its state across retries."""

    items: list[bytes]
    state: bytearray = field(default_factory=bytearray)
    reasons: dict[int, str] = field(default_factory=dict)  # given up: why (metric-safe)
    details: dict[int, str] = field(default_factory=dict)  # given up: Splunk's text
    attempts: int = 0

    def __post_init__(self) -> None:
        if not self.state:
            self.state = bytearray(len(self.items))

    def pending(self) -> list[int]:
        s = self.state
        return [i for i in range(len(s)) if s[i] == PENDING]


# --- one send attempt ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    chunk: list[int]
    future: Future | None = None
    ack_id: int | None = None
    handled: bool = False
    answered_at: float = 0.0  # when its 200 (with an ackId) was read: the ack timeout counts from here


@dataclass(slots=True)
class _Round:
    """One submit of a payload: its requests, then the acks they wait for."""

    payload: HecPayload
    requests: list[_Request]
    sent_at: float
    retry_reason: str = ""
    waiting: dict[int, _Request] = field(default_factory=dict)  # ack id -> request
    done: bool = False


class _HttpError(Exception):
    pass


class SplunkExporter(Exporter):
    config_model = SplunkConfig
    formats = ("cim", "native", "ecs")

    def __init__(self, name: str, config: SplunkConfig) -> None:
        super().__init__(name, config)
        self.max_in_flight = config.max_in_flight
        self.channel = config.channel or default_channel(name)
        self._epoch = _EpochCache()
        # event -> its JSON body: ECS through its splicing encoder (the JSON of ecs.to_ecs, built faster)
        self._body = {"cim": lambda e: _enc.encode(cim.to_cim(e)), "ecs": ecs.encode_one, "native": _enc.encode}[config.format]
        self._meta: dict[tuple[str, str], bytes] = {}  # (type, node) -> envelope bytes before "event"
        self._fields_cache: dict[tuple, bytes] = {}  # (severity, tags, policy) -> `,"fields":{...}`
        self._http = None
        self._pool: ThreadPoolExecutor | None = None
        self._headers: dict[str, str] = {}
        self._closing = threading.Event()
        self._not_before = 0.0  # Retry-After
        self._ack_effective = config.ack
        self._waiting: dict[int, _Round] = {}  # ack id -> round, every round in flight
        self._rounds: list[_Round] = []  # submitted, result not yet returned
        self._acked: set[int] = set()
        self._last_ack_query = 0.0
        self._config_error: str | None = None  # the set-up error being reported (logged once)
        self._warned_no_ack_id = False
        self.health: tuple[int, str] | None = None  # (status, text) of the start-up health check

    # --- lifecycle ---

    def start(self) -> None:
        import urllib3

        if self._http is not None:
            return
        cfg = self.config
        kw: dict[str, Any] = {"maxsize": cfg.concurrency + 1, "block": True, "retries": False,
                              "timeout": urllib3.Timeout(connect=min(10.0, cfg.request_timeout),
                                                         read=cfg.request_timeout)}
        if cfg.url.startswith("https://"):
            if cfg.insecure:
                log.warning("exporter %s: TLS certificate verification is OFF (insecure: true)", self.name)
                warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
                kw.update(cert_reqs="CERT_NONE", assert_hostname=False)
            else:
                kw["cert_reqs"] = "CERT_REQUIRED"
                if cfg.ca_certs:
                    kw["ca_certs"] = cfg.ca_certs
            if cfg.client_cert:
                kw["cert_file"], kw["key_file"] = cfg.client_cert, cfg.client_key
        self._http = urllib3.PoolManager(**kw)
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=f"hec-{self.name}")
        self._headers = {"Authorization": f"Splunk {cfg.token.get_secret_value()}",
                         "X-Splunk-Request-Channel": self.channel, "Content-Type": "application/json"}
        if cfg.health_check:
            self._health_check()

    def _health_check(self) -> None:
        try:
            r = self._http.request("GET", self.config.url + HEALTH_PATH,
                                   headers={"Authorization": self._headers["Authorization"]}, timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            self.health = (0, type(exc).__name__)
            log.warning("exporter %s: HEC health check: %s unreachable (%s); events are queued and retried",
                        self.name, self.config.url, type(exc).__name__)
            return
        text = _text(r.data)
        self.health = (r.status, text)
        if r.status == 200:
            log.info("exporter %s: HEC health check: %s", self.name, text or "healthy")
        else:
            log.warning("exporter %s: HEC health check: HTTP %d %s", self.name, r.status, text)

    def close(self) -> None:
        self._closing.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._http is not None:
            self._http.clear()

    # --- encode (pure) ---

    def _envelope(self, e: Event) -> bytes:
        key = (e.type, e.node.name)
        head = self._meta.get(key)
        if head is None:
            cfg = self.config
            cat = cim.category(e.type)
            st = cfg.sourcetype.format(category=cat, type=e.type, format=cfg.format)
            index = cfg.index_by_type.get(e.type) or cfg.index_by_type.get(cat) or cfg.index
            meta = {"host": e.node.name, "source": cfg.source, "sourcetype": st}
            if index:
                meta["index"] = index
            head = self._meta[key] = _enc.encode(meta)[1:-1]  # the members, without the braces
        return head

    @staticmethod
    def _fields(severity: str, tags: tuple[str, ...], policy: str | None) -> bytes:
        f: dict[str, Any] = {"siemhub_severity": severity}
        if tags:
            f["siemhub_tag"] = list(tags)
        if policy is not None:
            f["siemhub_policy"] = policy
        return b',"fields":' + _enc.encode(f)

    def encode(self, batch: Sequence[Event]) -> HecPayload:
        body_of, epoch, env = self._body, self._epoch, self._envelope
        fields = self.config.indexed_fields
        fcache = self._fields_cache
        if len(fcache) > 4096:
            fcache.clear()
        items = []
        for e in batch:
            item = b'{"time":%s,%s,"event":%s' % (epoch(e.time), env(e), body_of(e))
            if fields:
                key = (e.severity, tuple(e.tags), e.policy.policy if e.policy is not None else None)
                fb = fcache.get(key)
                if fb is None:
                    fb = fcache[key] = self._fields(*key)
                item += fb
            items.append(item + b"}\n")
        return HecPayload(items)

    # --- send (I/O) ---

    def send(self, payload: HecPayload) -> SendResult:
        rnd = self.submit(payload)
        while True:
            result = self.poll(rnd, 1.0)
            if result is not None:
                return result

    def submit(self, payload: HecPayload) -> _Round:
        if not isinstance(payload, HecPayload):
            payload = HecPayload(list(payload))
        wait = self._not_before - time.monotonic()
        if wait > 0:  # the server asked for a pause (Retry-After)
            self._closing.wait(min(wait, 30.0))
        payload.attempts += 1
        rnd = _Round(payload, [], time.monotonic())
        for chunk in chunk_by_bytes(payload.pending(), payload.items, self.config.max_content_length):
            rnd.requests.append(self._start(chunk, payload))
        self._rounds.append(rnd)
        return rnd

    def _start(self, chunk: list[int], payload: HecPayload) -> _Request:
        body = b"".join([payload.items[i] for i in chunk])
        return _Request(chunk, self._pool.submit(self._post, body))

    def _post(self, body: bytes) -> tuple[int, dict | None, str | None]:
        """One POST of concatenated events: (status, parsed answer, Retry-After). Raises on transport
        errors (the caller turns them into outcomes)."""
        headers = self._headers
        if self.config.compression and len(body) > 1500:  # below that, gzip costs more than it saves
            c = zlib.compressobj(self.config.compression_level, zlib.DEFLATED, 31)
            body = c.compress(body) + c.flush()
            headers = {**headers, "Content-Encoding": "gzip"}
        r = self._http.request("POST", self.config.url + EVENT_PATH, body=body, headers=headers)
        return r.status, _json(r.data), r.headers.get("Retry-After")

    def poll(self, rnd: _Round, timeout: float, idle: bool = False) -> SendResult | None:
        deadline = time.monotonic() + timeout
        # 1. every request answered (re-posting at once the parts of rejected requests that were not bad)
        while True:
            pending = [r.future for r in rnd.requests if not r.handled]
            if not pending:
                break
            _, not_done = wait_futures(pending, timeout=max(0.0, deadline - time.monotonic()))
            self._read_answers()
            if not_done and time.monotonic() >= deadline:
                return None
        # 2. the acks of what was accepted
        if rnd.waiting:
            self._read_answers()  # the later rounds' ack ids join this query
            self._query_acks()
            self._settle_acks(rnd)
            if rnd.waiting:
                now = time.monotonic()
                if now - min(r.answered_at for r in rnd.waiting.values()) < self.config.ack_timeout:
                    left = deadline - now
                    if left > 0:
                        self._closing.wait(max(0.0, min(left, self._next_ack_query() - now)))
                    return None
                self._query_acks(force=True)  # a last look before re-sending
                self._settle_acks(rnd)
            if rnd.waiting:
                # not acknowledged in time: re-sent by the next attempt (the events stay pending)
                log.warning("exporter %s: %d requests not acknowledged within %gs; re-sending them", self.name,
                            len(rnd.waiting), self.config.ack_timeout)
                for ack_id in rnd.waiting:
                    self._waiting.pop(ack_id, None)
                rnd.waiting.clear()
                rnd.retry_reason = rnd.retry_reason or "hec_ack_timeout"
        if rnd in self._rounds:
            self._rounds.remove(rnd)
        return self._result(rnd)

    def _read_answers(self) -> None:
        """Account for every answer that came, of every round in flight (so their ack ids are known)."""
        for r in self._rounds:
            for req in list(r.requests):
                if not req.handled and req.future.done():
                    self._answer(r, req)

    def _settle_acks(self, rnd: _Round) -> None:
        for ack_id in [a for a in rnd.waiting if a in self._acked]:
            req = rnd.waiting.pop(ack_id)
            self._acked.discard(ack_id)
            self._waiting.pop(ack_id, None)
            self._delivered(rnd.payload, req.chunk)
        if not self._ack_effective:  # the ack endpoint refused: the 200s count
            for ack_id, req in rnd.waiting.items():
                self._waiting.pop(ack_id, None)
                self._delivered(rnd.payload, req.chunk)
            rnd.waiting.clear()

    def _delivered(self, payload: HecPayload, chunk: list[int]) -> None:
        state = payload.state
        for i in chunk:
            if state[i] == PENDING:
                state[i] = DELIVERED

    def _answer(self, rnd: _Round, req: _Request) -> None:
        """Account for one request's answer (called once per request)."""
        req.handled = True
        payload = rnd.payload
        try:
            status, body, retry_after = req.future.result()
        except Exception as exc:  # noqa: BLE001 - transport errors become outcomes in one place
            if _is_tls_error(exc):  # a certificate problem: an operator must act; keep the events
                self._config_failed(0, None, f"TLS: {exc}"[:300])
                rnd.retry_reason = "hec_tls_error"
                return
            res = outcome_for_exception(_transport_error(exc))
            if res.outcome is Outcome.RETRY:
                rnd.retry_reason = res.reason
            else:
                self._give_up(payload, req.chunk, res.reason, str(exc)[:300])
            return
        body = body or {}
        code = body.get("code") if isinstance(body.get("code"), int) else None
        invalid = body.get("invalid-event-number")
        invalid = invalid if isinstance(invalid, int) and 0 <= invalid < len(req.chunk) else None
        ans = outcome_for_hec(status, code, invalid)
        if ans.outcome is Outcome.DONE:
            self._config_ok()
            ack_id = body.get("ackId")
            if self.config.ack and self._ack_effective and isinstance(ack_id, int):
                req.ack_id = ack_id
                req.answered_at = time.monotonic()
                other = self._waiting.get(ack_id)
                if other is not None:
                    # Splunk gave an id still waiting here once more: it restarted and its ack ids began
                    # again. The earlier request's ack will never come: it stays pending (re-sent).
                    if other.waiting.pop(ack_id, None) is not None:
                        other.retry_reason = other.retry_reason or "hec_ack_id_reused"
                    self._acked.discard(ack_id)
                rnd.waiting[ack_id] = req
                self._waiting[ack_id] = rnd
            else:
                if self.config.ack and self._ack_effective and not self._warned_no_ack_id:
                    self._warned_no_ack_id = True
                    log.warning("exporter %s: ack is on but Splunk's answer has no ackId (indexer "
                                "acknowledgement is off on this token): counting the 200 answers", self.name)
                self._delivered(payload, req.chunk)
            return
        text = str(body.get("text", ""))[:300]
        if ans.how == "config":
            self._config_failed(status, code, text)
            rnd.retry_reason = ans.reason
            return
        if ans.outcome is Outcome.RETRY:
            rnd.retry_reason = ans.reason
            if retry_after:
                self._retry_after(retry_after)
            return
        if ans.how == "event":
            k = invalid
            self._delivered(payload, req.chunk[:k])  # Splunk indexed the events before the bad one
            self._give_up(payload, [req.chunk[k]], ans.reason, text)
            rest = req.chunk[k + 1 :]
            if rest:
                rnd.requests.append(self._start(rest, payload))
            return
        if ans.how == "split" and len(req.chunk) > 1:
            half = len(req.chunk) // 2
            rnd.requests.append(self._start(req.chunk[:half], payload))
            rnd.requests.append(self._start(req.chunk[half:], payload))
            return
        self._give_up(payload, req.chunk, ans.reason, text)

    def _give_up(self, payload: HecPayload, chunk: list[int], reason: str, detail: str) -> None:
        for i in chunk:
            payload.state[i] = FAILED
            payload.reasons[i] = reason
            payload.details[i] = detail

    def _retry_after(self, value: str) -> None:
        try:
            seconds = float(value)
        except ValueError:
            return  # an HTTP date: the runner's backoff applies
        self._not_before = max(self._not_before, time.monotonic() + min(seconds, 30.0))

    def _config_failed(self, status: int, code: int | None, text: str) -> None:
        what = (f"HTTP {status}" if status else "no answer") + (f", code {code}" if code is not None else "") + (
            f": {text}" if text else "")
        if self._config_error != what:
            self._config_error = what
            log.error("exporter %s: Splunk HEC refused the request (%s). Check the exporter's `token` "
                      "(valid, enabled, allowed indexes) and `channel`; events stay queued and are retried, "
                      "the circuit breaker spaces the attempts", self.name, what)

    def _config_ok(self) -> None:
        if self._config_error is not None:
            log.warning("exporter %s: Splunk HEC accepts the requests again", self.name)
            self._config_error = None

    # --- acks ---

    def _next_ack_query(self) -> float:
        return self._last_ack_query + self.config.ack_interval

    def _query_acks(self, force: bool = False) -> None:
        """One query for every ack id in flight (all rounds), at most every ack_interval."""
        now = time.monotonic()
        if not self._waiting or (now < self._next_ack_query() and not force):
            return
        self._last_ack_query = now
        ids = sorted(self._waiting)
        try:
            r = self._http.request("POST", self.config.url + ACK_PATH, body=json.dumps({"acks": ids}).encode(),
                                   headers=self._headers)
        except Exception as exc:  # noqa: BLE001 - keep waiting; ack_timeout bounds it
            log.info("exporter %s: ack query failed (%s)", self.name, type(exc).__name__)
            return
        body = _json(r.data) or {}
        if 400 <= r.status < 500:
            code = body.get("code")
            log.warning("exporter %s: the ack endpoint answered HTTP %d (code %s: %s); indexer acknowledgement "
                        "is off for this token: counting the 200 answers from now on", self.name, r.status, code,
                        str(body.get("text", ""))[:200])
            self._ack_effective = False
            return
        if r.status != 200 or not isinstance(body.get("acks"), dict):
            log.info("exporter %s: ack query answered HTTP %d", self.name, r.status)
            return
        for k, v in body["acks"].items():
            if v is True:
                try:
                    self._acked.add(int(k))
                except ValueError:
                    pass

    # --- result ---

    def _result(self, rnd: _Round) -> SendResult:
        payload = rnd.payload
        state = payload.state
        failed = [(i, Outcome.GIVE_UP, r) for i, r in sorted(payload.reasons.items())]
        if PENDING in state:
            return SendResult(Outcome.RETRY, rnd.retry_reason or "hec_retry", failed)
        if not failed:
            return DONE
        return SendResult(Outcome.DONE, "", failed)


def _json(data: bytes) -> dict | None:
    try:
        out = json.loads(data) if data else None
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def _text(data: bytes) -> str:
    body = _json(data)
    return str(body.get("text", ""))[:200] if body else ""


def _is_tls_error(exc: BaseException) -> bool:
    import ssl

    import urllib3.exceptions as ue

    if isinstance(exc, ue.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    return isinstance(exc, ue.SSLError | ssl.SSLError)


def _transport_error(exc: BaseException) -> BaseException:
    """urllib3's errors as the builtin ones outcome_for_exception knows (timeouts, connection trouble)."""
    import urllib3.exceptions as ue

    if isinstance(exc, ue.NewConnectionError):  # (a subclass of urllib3's ConnectTimeoutError)
        return ConnectionError()
    if isinstance(exc, ue.TimeoutError):
        return TimeoutError()
    if isinstance(exc, ue.ProtocolError | ue.NewConnectionError | ue.MaxRetryError | ue.HTTPError):
        return ConnectionError()
    return exc
