"""`siemhub dashboards install --grafana-url` against a stand-in of Grafana's HTTP API.

No Grafana server can be installed here. The stand-in below implements the three endpoints the
installer uses as Grafana's HTTP API documentation specifies them, and refuses anything else:
`GET /api/folders/:uid` (200 with the folder, 404 `{"message": "folder not found"}`),
`POST /api/folders` (`{"uid", "title"}`; 200 with the folder; 409 when the uid or title is taken;
400 on a bad body) and `POST /api/dashboards/db` (`{"dashboard", "folderUid", "message", "overwrite"}`;
200 `{"id", "uid", "url", "status": "success", "version", "slug"}`; 400 when the folder does not
exist or the dashboard has no title; 412 `version-mismatch` / `name-exists` without overwrite), every
call with `Authorization: Bearer <token>` (401 otherwise) and JSON bodies with
`Content-Type: application/json`. It also loads each posted dashboard through grafana-foundation-sdk's
models, as Grafana would parse it, and answers 400 if that fails.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from siemhub.collector.cli import main as cli
from siemhub.dashboards import grafana
from siemhub.dashboards.grafana import health, security

TOKEN = "glsa_siemhubTestToken_0123456789abcdef"
_UID = re.compile(r"^[a-zA-Z0-9\-_]{1,40}$")


class GrafanaStandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    folders: dict
    dashboards: dict
    calls: list
    problems: list

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"message": "invalid API key"})
            return False
        return True

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self.problems.append(f"{self.path}: content-type {self.headers.get('Content-Type')}")
            return None
        try:
            return json.loads(raw)
        except ValueError:
            self.problems.append(f"{self.path}: body is not JSON")
            return None

    def do_GET(self):  # noqa: N802
        self.calls.append(("GET", self.path, None, self.headers.get("Authorization")))
        if not self._authorized():
            return
        m = re.fullmatch(r"/api/folders/([^/?]+)", self.path)
        if not m:
            self.problems.append(f"unexpected GET {self.path}")
            return self._answer(404, {"message": "Not found"})
        folder = self.folders.get(m.group(1))
        if folder is None:
            return self._answer(404, {"message": "folder not found", "status": "not-found"})
        return self._answer(200, folder)

    def do_POST(self):  # noqa: N802
        body = self._body()
        self.calls.append(("POST", self.path, body, self.headers.get("Authorization")))
        if not self._authorized():
            return
        if body is None or not isinstance(body, dict):
            return self._answer(400, {"message": "bad request data"})
        if self.path == "/api/folders":
            return self._folder(body)
        if self.path == "/api/dashboards/db":
            return self._dashboard(body)
        self.problems.append(f"unexpected POST {self.path}")
        return self._answer(404, {"message": "Not found"})

    def _folder(self, body: dict):
        if set(body) - {"uid", "title", "description", "parentUid"} or not body.get("title"):
            self.problems.append(f"folder body {body}")
            return self._answer(400, {"message": "bad request data"})
        uid = body.get("uid") or "generated01"
        if not _UID.match(uid):
            return self._answer(400, {"message": "uid contains illegal characters"})
        if uid in self.folders or any(f["title"] == body["title"] for f in self.folders.values()):
            return self._answer(409, {"message": "a folder with the same name already exists"})
        folder = {"id": len(self.folders) + 1, "uid": uid, "title": body["title"],
                  "url": f"/dashboards/f/{uid}/{body['title'].lower()}", "version": 1}
        self.folders[uid] = folder
        return self._answer(200, folder)

    def _dashboard(self, body: dict):
        if set(body) - {"dashboard", "folderId", "folderUid", "message", "overwrite"} or \
                not isinstance(body.get("dashboard"), dict):
            self.problems.append(f"dashboard body keys {sorted(body)}")
            return self._answer(400, {"message": "bad request data"})
        dash = body["dashboard"]
        if not dash.get("title"):
            return self._answer(400, {"message": "Dashboard title cannot be empty", "status": "empty-name"})
        uid = dash.get("uid")
        if not uid or not _UID.match(uid):
            return self._answer(400, {"message": "uid contains illegal characters", "status": "bad-uid"})
        folder_uid = body.get("folderUid", "")
        if folder_uid and folder_uid not in self.folders:
            return self._answer(400, {"message": "folder not found", "status": "folder-not-found"})
        try:
            register_default_plugins()
            Dashboard.from_json(dash)
        except Exception as exc:  # noqa: BLE001 - a model the SDK cannot read is a bad request
            return self._answer(400, {"message": f"invalid dashboard: {exc}"})
        old = self.dashboards.get(uid)
        overwrite = body.get("overwrite") is True
        if old is not None and not overwrite and dash.get("version") != old["dashboard"]["version"]:
            return self._answer(412, {"message": "The dashboard has been changed by someone else",
                                      "status": "version-mismatch"})
        if not overwrite and any(d["dashboard"]["title"] == dash["title"] and d["folderUid"] == folder_uid
                                 and u != uid for u, d in self.dashboards.items()):
            return self._answer(412, {"message": "A dashboard with the same name in the folder already exists",
                                      "status": "name-exists"})
        if dash.get("id") not in (None, *(([old["id"]]) if old else [])):
            return self._answer(404, {"message": "Dashboard not found", "status": "not-found"})
        version = (old["dashboard"]["version"] + 1) if old else 1
        stored_id = old["id"] if old else len(self.dashboards) + 1
        slug = re.sub(r"[^a-z0-9]+", "-", dash["title"].lower()).strip("-")
        self.dashboards[uid] = {"id": stored_id, "folderUid": folder_uid, "message": body.get("message"),
                                "dashboard": {**dash, "id": stored_id, "version": version}}
        return self._answer(200, {"id": stored_id, "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                                  "version": version, "slug": slug})


def _serve(tls: ssl.SSLContext | None = None):
    handler = type("H", (GrafanaStandIn,), {"folders": {}, "dashboards": {}, "calls": [], "problems": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}", handler


@pytest.fixture
def stand_in():
    server, url, h = _serve()
    yield url, h
    server.shutdown()
    server.server_close()


def _install(url, *extra, env=None):
    return CliRunner().invoke(cli, ["dashboards", "install", "--grafana-url", url, *extra], env=env or {})


def test_install_creates_the_folder_and_posts_both_dashboards(stand_in, tmp_path):
    url, h = stand_in
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")  # a Kubernetes secret file: the trailing newline is not part of it
    r = _install(url, "--grafana-token", f"${{file:{secret}}}")
    assert r.exit_code == 0, r.output
    assert h.problems == []
    assert [(c[0], c[1]) for c in h.calls] == [("GET", "/api/folders/siemhub"), ("POST", "/api/folders"),
                                               ("POST", "/api/dashboards/db"), ("POST", "/api/dashboards/db")]
    assert all(c[3] == f"Bearer {TOKEN}" for c in h.calls)
    assert h.calls[1][2] == {"uid": "siemhub", "title": "siemhub"}
    want = grafana.dashboards()
    for _, _, body, _ in h.calls[2:]:
        assert body["folderUid"] == "siemhub" and body["overwrite"] is True and body["dashboard"]["id"] is None
        assert {**body["dashboard"], "id": None} == {**want[body["dashboard"]["uid"]], "id": None}
    assert set(h.dashboards) == {security.UID, health.UID}
    assert "folder 'siemhub' created" in r.output
    assert f"{url}/d/{health.UID}/siemhub-health (version 1)" in r.output
    assert TOKEN not in r.output


def test_second_install_overwrites_what_was_edited_in_grafana(stand_in):
    url, h = stand_in
    assert _install(url, env={"GRAFANA_TOKEN": TOKEN}).exit_code == 0
    h.dashboards[health.UID]["dashboard"]["version"] = 7  # someone saved it in the UI
    h.calls.clear()
    r = _install(url, env={"GRAFANA_TOKEN": TOKEN})
    assert r.exit_code == 0, r.output
    assert [(c[0], c[1]) for c in h.calls] == [("GET", "/api/folders/siemhub"), ("POST", "/api/dashboards/db"),
                                               ("POST", "/api/dashboards/db")]
    assert h.dashboards[health.UID]["dashboard"]["version"] == 8 and h.problems == []
    assert "folder 'siemhub' exists" in r.output


def test_the_stand_in_refuses_what_grafana_refuses(stand_in):
    """The stand-in is strict: without overwrite a changed dashboard is a 412, a missing folder a 400."""
    import urllib.request

    url, h = stand_in
    assert _install(url, env={"GRAFANA_TOKEN": TOKEN}).exit_code == 0
    model = grafana.dashboards()[health.UID]

    def post(path, body, ctype="application/json"):
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert post("/api/dashboards/db", {"dashboard": {**model, "id": None}, "folderUid": "siemhub"})[0] == 412
    assert post("/api/dashboards/db", {"dashboard": {**model, "id": None}, "folderUid": "nope",
                                       "overwrite": True})[1]["status"] == "folder-not-found"
    assert post("/api/folders", {"uid": "siemhub", "title": "siemhub"})[0] == 409


def test_wrong_token_is_a_clear_error_without_the_token(stand_in):
    url, h = stand_in
    r = _install(url, "--grafana-token", "glsa_wrong_secret_value")
    assert r.exit_code == 1
    assert "HTTP 401 invalid API key" in r.output and "GRAFANA_TOKEN" in r.output
    assert "glsa_wrong_secret_value" not in r.output
    assert h.dashboards == {}


def test_missing_secret_reference_names_it(stand_in):
    url, h = stand_in
    r = _install(url, "--grafana-token", "${SIEMHUB_TEST_UNSET_TOKEN}")
    assert r.exit_code == 1 and "environment variable SIEMHUB_TEST_UNSET_TOKEN is not set" in r.output
    assert h.calls == []


def test_unreachable_grafana_and_no_target():
    from tests.servers.noida import free_port

    r = _install(f"http://127.0.0.1:{free_port()}", env={"GRAFANA_TOKEN": TOKEN})
    assert r.exit_code == 1 and "cannot reach Grafana at http://127.0.0.1:" in r.output
    r = CliRunner().invoke(cli, ["dashboards", "install"])
    assert r.exit_code == 2 and "--kibana-url, --grafana-url or both" in r.output


def test_tls_is_verified(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=grafana",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server, url, h = _serve(ctx)
    try:
        r = _install(url, env={"GRAFANA_TOKEN": TOKEN})
        assert r.exit_code == 1 and "TLS failed" in r.output and "--grafana-ca-certs" in r.output
        assert h.dashboards == {}
        r = _install(url, "--grafana-ca-certs", str(cert), env={"GRAFANA_TOKEN": TOKEN})
        assert r.exit_code == 0, r.output
        assert set(h.dashboards) == {security.UID, health.UID} and h.problems == []
    finally:
        server.shutdown()
        server.server_close()
