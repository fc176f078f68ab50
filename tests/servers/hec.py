"""A Splunk HTTP Event Collector (HEC) receiver for the tests: it stands in for Splunk, which cannot be
installed here. It is NOT Splunk. It was written from Splunk's HEC documentation (REST endpoints,
"Format events for HTTP Event Collector", "About HTTP Event Collector Indexer Acknowledgment", the
table of HEC status codes) to be as strict as Splunk is where siemhub depends on it:

- `POST /services/collector/event` (also `/services/collector` and `/services/collector/event/1.0`):
  one or more JSON event objects concatenated (whitespace between them allowed), optionally
  `Content-Encoding: gzip`. Each object needs `event` (missing: code 12, blank: code 13); `time`
  must be epoch seconds (a number or a numeric string: else code 6); `host`, `source`,
  `sourcetype`, `index` must be strings (code 6); `index` must be one the token may write to (code
  7); `fields` must be a flat object of strings or arrays of strings (code 15). Events are handled in
  order, like Splunk's streaming parser: those before the first bad one are indexed, the bad one and
  the rest are not, and the answer names the bad one (`invalid-event-number`, 0-based).
- Tokens: `Authorization: Splunk <token>` (or Basic with the token as password); none: 401 code 2;
  another scheme: 401 code 3; unknown:
  403 code 4; disabled: 403 code 1; `?token=` in the query string: 400 code 16.
- Indexer acknowledgement, for tokens with `ack=True`: a request channel (`X-Splunk-Request-Channel`
  or `?channel=`, a GUID) is required (missing: 400 code 10, not a GUID: 400 code 11); every accepted
  request gets the channel's next `ackId` (0, 1, 2... per channel); `POST /services/collector/ack`
  with `{"acks": [ids]}` answers `{"acks": {"<id>": true|false}}`, true once the events are
  "indexed" (`ack_delay` seconds after receipt); an id reported true is forgotten, as Splunk does.
  For a token without acknowledgement the ack endpoint answers 400 code 14 and the event endpoint
  ignores the channel (no ackId in the answer).
- `GET /services/collector/health`: 200 code 17, or 503 code 18 while busy; with a token: 400 code
  21 (invalid) or 22 (disabled).
- Busy mode (Splunk's full queues): 503 `{"text":"Server is busy","code":9}`, optionally with a
  `Retry-After` header, for the next N requests or until switched off.
- Bodies above `max_content_length` (Splunk's limits.conf [http_input]) are refused with 413.

Test-only controls (not Splunk paths), for a receiver run as a separate process
(`python -m tests.servers.hec`): `GET /_receiver/stats`, `GET /_receiver/events` (JSON lines),
`POST /_receiver/control` (`{"busy": N | true | false, "retry_after": s, "lose_acks": N}`).
`HecProcess` wraps them. Event bodies are kept (`keep_events`) or only counted (benchmarks).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# code -> (HTTP status, text): Splunk's documented HEC answers
CODES: dict[int, tuple[int, str]] = {
    0: (200, "Success"),
    1: (403, "Token disabled"),
    2: (401, "Token is required"),
    3: (401, "Invalid authorization"),
    4: (403, "Invalid token"),
    5: (400, "No data"),
    6: (400, "Invalid data format"),
    7: (400, "Incorrect index"),
    8: (500, "Internal server error"),
    9: (503, "Server is busy"),
    10: (400, "Data channel is missing"),
    11: (400, "Invalid data channel"),
    12: (400, "Event field is required"),
    13: (400, "Event field cannot be blank"),
    14: (400, "ACK is disabled"),
    15: (400, "Error in handling indexed fields"),
    16: (400, "Query string authorization is not enabled"),
    17: (200, "HEC is healthy"),
    18: (503, "HEC is unhealthy, queues are full"),
    19: (503, "HEC is unhealthy, ack service unavailable"),
    20: (503, "HEC is unhealthy, queues are full, ack service unavailable"),
    21: (400, "Invalid token"),
    22: (400, "Token disabled"),
}

EVENT_PATHS = ("/services/collector/event", "/services/collector", "/services/collector/event/1.0")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_META = ("host", "source", "sourcetype", "index")
_WS = re.compile(r"\s*")


@dataclass
class Token:
    value: str
    enabled: bool = True
    ack: bool = False  # indexer acknowledgement (useACK) on this token
    indexes: tuple[str, ...] | None = None  # allowed indexes; None: every index the receiver knows
    default_index: str = "main"


class HecError(Exception):
    def __init__(self, code: int, invalid_event: int | None = None) -> None:
        super().__init__(CODES[code][1])
        self.code, self.invalid_event = code, invalid_event


@dataclass
class _Channel:
    next_id: int = 0
    pending: dict[int, float] = field(default_factory=dict)  # ackId -> time it becomes true (inf: lost)


def answer_body(code: int, **extra) -> dict:
    return {"text": CODES[code][1], "code": code, **extra}


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int | float):
        return True
    if isinstance(v, str):
        try:
            float(v)
            return True
        except ValueError:
            return False
    return False


def validate_event(obj: Any, token: Token, known_indexes: set[str]) -> int | None:
    """The HEC code that refuses this event object, or None if it is acceptable."""
    if not isinstance(obj, dict):
        return 6
    if "event" not in obj:
        return 12
    ev = obj["event"]
    if ev is None or (isinstance(ev, str) and not ev.strip()) or ev == {}:
        return 13
    if "time" in obj and not _is_number(obj["time"]):
        return 6
    for k in _META:
        if k in obj and not isinstance(obj[k], str):
            return 6
    idx = obj.get("index")
    if idx is not None:
        allowed = set(token.indexes) if token.indexes is not None else known_indexes
        if idx not in allowed or idx not in known_indexes:
            return 7
    fields = obj.get("fields")
    if fields is not None:
        if not isinstance(fields, dict):
            return 15
        for v in fields.values():
            if isinstance(v, str):
                continue
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                continue
            return 15
    return None


def parse_events(text: str, token: Token, known_indexes: set[str]) -> tuple[list[dict], HecError | None]:
    """Concatenated JSON objects -> (the events accepted before the first bad one, that error)."""
    decoder = json.JSONDecoder()
    out: list[dict] = []
    pos = _WS.match(text, 0).end()
    n = len(text)
    if pos >= n:
        return out, HecError(5)
    while pos < n:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return out, HecError(6, len(out))
        code = validate_event(obj, token, known_indexes)
        if code is not None:
            return out, HecError(code, len(out))
        out.append(obj)
        pos = _WS.match(text, end).end()
    return out, None


class HecReceiver:
    """The receiver in this process (a thread per connection, HTTP/1.1 keep-alive)."""

    def __init__(self, tokens: list[Token] | None = None, *, indexes: tuple[str, ...] = ("main", "siemhub"),
                 host: str = "127.0.0.1", port: int = 0, ack_delay: float = 0.02,
                 max_content_length: int = 838_860_800, keep_events: bool = True,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.tokens = {t.value: t for t in (tokens or [Token("00000000-0000-0000-0000-000000000000")])}
        self.indexes = set(indexes)
        self.ack_delay = ack_delay
        self.max_content_length = max_content_length
        self.keep_events = keep_events
        self.events: list[dict] = []  # accepted (indexed) events, with their index resolved
        self.event_count = 0
        self.requests = 0
        self.gzip_requests = 0
        self.answers: dict[int, int] = {}  # HEC code -> times answered
        self.ack_queries = 0
        self.auth_headers: list[str] = []  # what clients sent (to check the scheme, never logged)
        self._channels: dict[str, _Channel] = {}
        self._busy: int | bool = 0
        self._retry_after: float | None = None
        self._lose_acks = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"receiver": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    # --- lifecycle ---

    def start(self) -> HecReceiver:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hec-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HecReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- controls ---

    def set_busy(self, busy: int | bool, retry_after: float | None = None) -> None:
        """True: answer 503 until set_busy(False); N: the next N event requests answer 503."""
        with self._lock:
            self._busy, self._retry_after = busy, retry_after

    def lose_acks(self, n: int) -> None:
        """The next n acknowledged requests are answered 200 with an ackId, but never indexed: their
        ack stays false (what a client sees when an indexer dies before indexing)."""
        with self._lock:
            self._lose_acks = n

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "events": self.event_count, "gzip_requests": self.gzip_requests,
                    "answers": {str(k): v for k, v in self.answers.items()}, "ack_queries": self.ack_queries,
                    "acks_pending": sum(len(c.pending) for c in self._channels.values())}

    # --- the endpoints (called by the handler; return (HTTP status, body, extra headers)) ---

    def _auth(self, headers, query: dict) -> Token:
        if "token" in query:
            raise HecError(16)
        auth = headers.get("Authorization")
        if auth is None:
            raise HecError(2)
        scheme, _, value = auth.partition(" ")
        if scheme == "Basic":  # Splunk also takes the token as the password of Basic authentication
            import base64
            import binascii

            try:
                value = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                raise HecError(3) from None
        elif scheme != "Splunk":
            raise HecError(3)
        if not value.strip():
            raise HecError(3)
        with self._lock:
            self.auth_headers.append(auth)
        token = self.tokens.get(value.strip())
        if token is None:
            raise HecError(4)
        if not token.enabled:
            raise HecError(1)
        return token

    def _channel(self, headers, query: dict, token: Token) -> str | None:
        ch = headers.get("X-Splunk-Request-Channel") or (query.get("channel") or [None])[0]
        if not token.ack:
            return None
        if not ch:
            raise HecError(10)
        if not _GUID.match(ch):
            raise HecError(11)
        return ch.lower()

    def handle_event(self, headers, query: dict, body: bytes) -> tuple[int, dict, dict]:
        token = self._auth(headers, query)
        channel = self._channel(headers, query, token)
        with self._lock:
            busy = self._busy
            if busy:
                if busy is not True:
                    self._busy = busy - 1
                extra = {"Retry-After": str(int(self._retry_after))} if self._retry_after is not None else {}
                return 503, answer_body(9), extra
        if headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                raise HecError(6, 0) from None
            with self._lock:
                self.gzip_requests += 1
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HecError(6, 0) from None
        accepted, error = parse_events(text, token, self.indexes)
        lost = False
        with self._lock:
            if channel is not None and error is None and self._lose_acks:
                self._lose_acks -= 1
                lost = True
            if not lost:
                for ev in accepted:
                    ev.setdefault("index", token.default_index)
                if self.keep_events:
                    self.events.extend(accepted)
                self.event_count += len(accepted)
            if error is not None:
                raise error
            extra: dict[str, Any] = {}
            if channel is not None:
                ch = self._channels.setdefault(channel, _Channel())
                ack_id = ch.next_id
                ch.next_id += 1
                ch.pending[ack_id] = float("inf") if lost else time.monotonic() + self.ack_delay
                extra["ackId"] = ack_id
        return 200, answer_body(0, **extra), {}

    def handle_ack(self, headers, query: dict, body: bytes) -> tuple[int, dict, dict]:
        token = self._auth(headers, query)
        if not token.ack:
            raise HecError(14)
        channel = self._channel(headers, query, token)
        try:
            req = json.loads(body or b"null")
            ids = req["acks"]
            if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise HecError(6) from None
        now = time.monotonic()
        out = {}
        with self._lock:
            self.ack_queries += 1
            ch = self._channels.get(channel)
            for i in ids:
                ready = ch is not None and ch.pending.get(i, float("inf")) <= now
                if ready:
                    del ch.pending[i]  # reported once, then forgotten
                out[str(i)] = ready
        return 200, {"acks": out}, {}

    def handle_health(self, headers, query: dict) -> tuple[int, dict, dict]:
        auth = headers.get("Authorization")
        if auth is not None:
            token = self.tokens.get(auth.partition(" ")[2].strip())
            if token is None:
                raise HecError(21)
            if not token.enabled:
                raise HecError(22)
        with self._lock:
            busy = bool(self._busy)
        return (503, answer_body(18), {}) if busy else (200, answer_body(17), {})

    def control(self, body: bytes) -> tuple[int, dict, dict]:
        req = json.loads(body or b"{}")
        if "busy" in req:
            self.set_busy(req["busy"], req.get("retry_after"))
        if "lose_acks" in req:
            self.lose_acks(int(req["lose_acks"]))
        return 200, self.stats(), {}

    def count(self, code: int) -> None:
        with self._lock:
            self.answers[code] = self.answers.get(code, 0) + 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Splunk's HTTP server
    disable_nagle_algorithm = True  # answers go out at once (no 40 ms delayed-ACK stall per request)
    receiver: HecReceiver

    def log_message(self, *args) -> None:  # quiet: tests read stats, not access logs
        pass

    def _send(self, status: int, body: Any, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8" if raw is None else "application/x-ndjson")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.headers.get("Connection", "").lower() == "close":
            self.send_header("Connection", "close")  # as a real server answers a client that closes
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.receiver.max_content_length:
            # read and discard, so the connection stays usable, then refuse (Splunk answers 413)
            left = length
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
            self.receiver.count(6)
            self._send(413, {"text": "Content-Length of %d too large (maximum is %d)"
                             % (length, self.receiver.max_content_length), "code": 6})
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        r = self.receiver
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        body = self._body() if method == "POST" else b""
        if body is None:
            return
        try:
            if path.startswith("/_receiver/"):
                if path == "/_receiver/stats":
                    status, out, extra = 200, r.stats(), {}
                elif path == "/_receiver/events":
                    with r._lock:
                        lines = b"".join(json.dumps(e).encode() + b"\n" for e in r.events)
                    self._send(200, None, raw=lines)
                    return
                elif path == "/_receiver/control" and method == "POST":
                    status, out, extra = r.control(body)
                else:
                    status, out, extra = 404, {"text": "not found"}, {}
                self._send(status, out, extra)
                return
            with r._lock:
                r.requests += 1
            if path in EVENT_PATHS and method == "POST":
                status, out, extra = r.handle_event(self.headers, query, body)
            elif path == "/services/collector/ack" and method == "POST":
                status, out, extra = r.handle_ack(self.headers, query, body)
            elif path == "/services/collector/health" and method == "GET":
                status, out, extra = r.handle_health(self.headers, query)
            else:
                status, out, extra = 404, {"text": "The requested URL was not found on this server.", "code": 404}, {}
        except HecError as exc:
            status = CODES[exc.code][0]
            out = answer_body(exc.code)
            if exc.invalid_event is not None:
                out["invalid-event-number"] = exc.invalid_event
            extra = {}
        if isinstance(out, dict) and isinstance(out.get("code"), int):
            r.count(out["code"])
        self._send(status, out, extra)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")


# --- the receiver as a separate process (benchmarks, agent runs) -----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HecProcess:
    """`python -m tests.servers.hec` in its own process (its CPU is not the client's), driven through
    the /_receiver/ control endpoints."""

    def __init__(self, tokens: list[str], ack: bool = False, keep_events: bool = True,
                 ack_delay: float = 0.02) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "tests.servers.hec", "--port", str(self.port),
                     "--ack-delay", str(ack_delay)]
        for t in tokens:
            self.args += ["--token", t + (":ack" if ack else "")]
        if not keep_events:
            self.args.append("--count-only")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> HecProcess:
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(self.args, cwd=root, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.stats()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"HEC receiver did not answer on {self.url} within {timeout}s")

    def _call(self, path: str, body: dict | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def stats(self) -> dict:
        return json.loads(self._call("/_receiver/stats"))

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self._call("/_receiver/events").splitlines() if line]

    def control(self, **kw) -> dict:
        return json.loads(self._call("/_receiver/control", kw))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> HecProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="HEC receiver standing in for Splunk (tests only)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", action="append", default=[], help="TOKEN or TOKEN:ack (repeatable)")
    p.add_argument("--index", action="append", default=None)
    p.add_argument("--ack-delay", type=float, default=0.02)
    p.add_argument("--count-only", action="store_true", help="count events, do not keep them")
    a = p.parse_args(argv)
    tokens = [Token(t.split(":")[0], ack=t.endswith(":ack")) for t in a.token] or None
    r = HecReceiver(tokens, indexes=tuple(a.index or ("main", "siemhub")), port=a.port, ack_delay=a.ack_delay,
                    keep_events=not a.count_only)
    try:
        r.server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
