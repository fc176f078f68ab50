"""A stand-in for the Splunk management REST API (splunkd, port 8089), for the tests of
`siemhub dashboards install --splunk-url` and `siemhub splunk check`. It is NOT Splunk: it answers only
the endpoints splunklib calls for them, with the response shapes Splunk's REST API reference documents
(Atom feeds for objects, `<response><messages><msg type=...>` for errors, JSON for
`output_mode=json` searches), and is as strict as Splunk where it matters to siemhub:

- authentication: `POST /services/auth/login` (form username/password -> `<sessionKey>`), then
  `Authorization: Splunk <sessionKey>`, or `Authorization: Bearer <token>`; anything else is 401;
- namespaces: objects under `/servicesNS/<owner>/<app>/` need the app to exist (404 otherwise);
- `apps/local`, `data/indexes`, `configs/conf-<file>`, `data/ui/views`: GET of a missing object 404,
  POST to the collection creates (201) or answers 409 when the name exists, POST to the object updates;
- `search/jobs` with `exec_mode=oneshot`: the recorded results of the agent-status search for the
  index it names (`agent_rows`).

Every request is recorded (`requests`: method, path, form) so tests can check what was sent.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus as unquote, urlsplit  # splunklib encodes names with quote_plus
from xml.sax.saxutils import escape

_ATOM = "http://www.w3.org/2005/Atom"
_NS = re.compile(r"^/servicesNS/(?P<owner>[^/]+)/(?P<app>[^/]+)/(?P<rest>.*)$")


def _feed(kind: str, names: list[str], base: str, content: dict[str, dict] | None = None) -> str:
    entries = []
    for n in names:
        keys = "".join(f'<s:key name="{escape(k)}">{escape(str(v))}</s:key>'
                       for k, v in (content or {}).get(n, {}).items())
        entries.append(f"<entry><title>{escape(n)}</title><id>{escape(base)}/{escape(n)}</id>"
                       f'<link href="{escape(base)}/{escape(n)}" rel="alternate"/>'
                       f'<content type="text/xml"><s:dict>{keys}</s:dict></content></entry>')
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="{_ATOM}" '
            f'xmlns:s="http://dev.splunk.com/ns/rest" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
            f"<title>{kind}</title><id>{escape(base)}</id>"
            f"<opensearch:totalResults>{len(names)}</opensearch:totalResults>{''.join(entries)}</feed>")


def _messages(kind: str, text: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<response><messages><msg type="{kind}">'
            f"{escape(text)}</msg></messages></response>")


class SplunkdStandIn:
    def __init__(self, *, username: str = "admin", password: str = "changeme", token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.username, self.password, self.token = username, password, token
        self.version = "9.4.1"  # what /services/server/info reports (splunklib picks the search API by it)
        self.sessions: set[str] = set()
        self.apps: set[str] = {"search", "launcher"}
        self.indexes: set[str] = {"main", "_internal"}
        self.confs: dict[tuple[str, str], dict[str, dict[str, str]]] = {}  # (app, file) -> stanza -> keys
        self.views: dict[tuple[str, str], str] = {}  # (app, name) -> XML
        self.agent_rows: dict[str, list[dict]] = {}  # index -> recorded results of the agent-status search
        self.searches: list[str] = []
        self.requests: list[tuple[str, str, dict]] = []
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        scheme = "http"
        if certfile:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.port = self.server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> SplunkdStandIn:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- request handling: returns (status, content type, body) ---

    def handle(self, method: str, path: str, form: dict[str, str], auth: str | None) -> tuple[int, str, str]:
        with self._lock:
            self.requests.append((method, path, dict(form)))
            if auth:
                self.auth_headers.append(auth)
        if path == "/services/auth/login" and method == "POST":
            if form.get("username") == self.username and form.get("password") == self.password:
                key = uuid.uuid4().hex
                self.sessions.add(key)
                return 200, "text/xml", f"<response>\n  <sessionKey>{key}</sessionKey>\n</response>"
            return 401, "text/xml", _messages("WARN", "Login failed")
        if not self._authenticated(auth):
            return 401, "text/xml", _messages("WARN", "call not properly authenticated")
        if path == "/services/server/info" and method == "GET":
            return 200, "text/xml", _feed("server-info", ["server-info"], path, {"server-info": {
                "serverName": "standin", "version": self.version, "build": "standin"}})
        m = _NS.match(path)
        if m:
            app, rest = m.group("app"), m.group("rest")
        elif path.startswith("/services/"):
            app, rest = "search", path[len("/services/"):]
        else:
            return 404, "text/xml", _messages("ERROR", f"Not Found: {path}")
        rest = rest.rstrip("/")
        if rest.startswith("apps/local"):
            return self._collection(method, rest, "apps/local", self.apps, form, path)
        if app not in self.apps and app != "-":
            return 404, "text/xml", _messages("ERROR", f'Application does not exist: {app}')
        if rest.startswith("data/indexes"):
            return self._collection(method, rest, "data/indexes", self.indexes, form, path)
        mc = re.match(r"^configs/conf-(?P<file>[a-z_]+)(?:/(?P<stanza>.+))?$", rest)
        if mc:
            return self._conf(method, app, mc.group("file"), unquote(mc.group("stanza") or "") or None, form, path)
        mv = re.match(r"^data/ui/views(?:/(?P<name>.+))?$", rest)
        if mv:
            return self._view(method, app, unquote(mv.group("name") or "") or None, form, path)
        if rest in ("search/jobs", "search/v2/jobs") and method == "POST":  # v2 from Splunk 9.0.2 on
            return self._oneshot(form)
        return 404, "text/xml", _messages("ERROR", f"Not Found: {path}")

    def _authenticated(self, auth: str | None) -> bool:
        if not auth:
            return False
        scheme, _, value = auth.partition(" ")
        if scheme == "Splunk":
            return value in self.sessions
        if scheme == "Bearer":
            return self.token is not None and value == self.token
        return False

    def _collection(self, method, rest, base, names: set[str], form, path):
        name = unquote(rest[len(base) + 1:]) if len(rest) > len(base) else None
        if method == "GET":
            if name is None:
                return 200, "text/xml", _feed(base, sorted(names), path)
            if name not in names:
                return 404, "text/xml", _messages("ERROR", f"Could not find object id={name}")
            return 200, "text/xml", _feed(base, [name], path.rsplit("/", 1)[0])
        if method == "POST" and name is None:
            new = form.get("name")
            if not new:
                return 400, "text/xml", _messages("ERROR", "Missing argument: name")
            if new in names:
                return 409, "text/xml", _messages("ERROR", f"An object with name={new} already exists")
            names.add(new)
            return 201, "text/xml", _feed(base, [new], path)
        return 405, "text/xml", _messages("ERROR", "Method not allowed")

    def _conf(self, method, app, file, stanza, form, path):
        stanzas = self.confs.setdefault((app, file), {})
        if method == "POST" and stanza is None:
            name = form.pop("name", None)
            if not name:
                return 400, "text/xml", _messages("ERROR", "Missing argument: name")
            if name in stanzas:
                return 409, "text/xml", _messages("ERROR", f"An object with name={name} already exists")
            stanzas[name] = dict(form)
            return 201, "text/xml", _feed(f"conf-{file}", [name], path, stanzas)
        if method == "POST":
            if stanza not in stanzas:
                return 404, "text/xml", _messages("ERROR", f"Could not find object id={stanza}")
            stanzas[stanza].update(form)
            return 200, "text/xml", _feed(f"conf-{file}", [stanza], path.rsplit("/", 1)[0], stanzas)
        if method == "GET":
            if stanza is None:
                return 200, "text/xml", _feed(f"conf-{file}", sorted(stanzas), path, stanzas)
            if stanza not in stanzas:
                return 404, "text/xml", _messages("ERROR", f"Could not find object id={stanza}")
            return 200, "text/xml", _feed(f"conf-{file}", [stanza], path.rsplit("/", 1)[0], stanzas)
        return 405, "text/xml", _messages("ERROR", "Method not allowed")

    def _view(self, method, app, name, form, path):
        if method == "POST":
            data = form.get("eai:data")
            if data is None:
                return 400, "text/xml", _messages("ERROR", "Missing argument: eai:data")
            if name is None:
                new = form.get("name")
                if (app, new) in self.views:
                    return 409, "text/xml", _messages("ERROR", f"An object with name={new} already exists")
                self.views[(app, new)] = data
                return 201, "text/xml", _feed("views", [new], path)
            if (app, name) not in self.views:
                return 404, "text/xml", _messages("ERROR", f"Could not find object id={name}")
            self.views[(app, name)] = data
            return 200, "text/xml", _feed("views", [name], path.rsplit("/", 1)[0])
        if method == "GET" and name is not None:
            if (app, name) not in self.views:
                return 404, "text/xml", _messages("ERROR", f"Could not find object id={name}")
            return 200, "text/xml", _feed("views", [name], path.rsplit("/", 1)[0])
        return 405, "text/xml", _messages("ERROR", "Method not allowed")

    def _oneshot(self, form):
        if form.get("exec_mode") != "oneshot" or form.get("output_mode") != "json":
            return 400, "text/xml", _messages("ERROR", "this stand-in records only oneshot JSON searches")
        query = form.get("search", "")
        self.searches.append(query)
        m = re.search(r'index="([^"]+)"', query)
        if 'sourcetype="siemhub:agent"' not in query or not m:
            return 400, "application/json", json.dumps({"messages": [{"type": "FATAL", "text": "unrecorded search"}]})
        rows = self.agent_rows.get(m.group(1), [])
        fields = [{"name": n} for n in ("host", "count", "last_time", "lag_avg", "lag_max", "last_age")]
        return 200, "application/json", json.dumps({"preview": False, "init_offset": 0, "messages": [],
                                                    "fields": fields, "results": rows})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answers go out at once (no 40 ms delayed-ACK stall per request)
    server_state: SplunkdStandIn

    def log_message(self, *args) -> None:
        pass

    def _go(self, method: str) -> None:
        parts = urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode() if n else ""
        form = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        form.update({k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()})
        status, ctype, body = self.server_state.handle(method, parts.path, form, self.headers.get("Authorization"))
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if self.headers.get("Connection", "").lower() == "close":
            self.send_header("Connection", "close")  # as a real server answers a client that closes
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._go("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._go("POST")
