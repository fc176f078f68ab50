"""Install the dashboards into a running Grafana through its documented HTTP API:

- the folder: `GET /api/folders/<uid>`; when 404, `POST /api/folders` with `{"uid", "title"}`;
- each dashboard: `POST /api/dashboards/db` with `{"dashboard": <model, "id": null>, "folderUid",
  "overwrite": true, "message"}` (overwrite replaces the dashboard of the same uid whatever its version).

Authentication is a service-account token (`Authorization: Bearer <token>`), which the caller resolves
from `${ENV}`/`${file:PATH}`; it goes only into that header, never into a message. TLS certificates are
always verified (a private CA through `ca_certs`).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from siemhub.collector.core.secrets import expand

from . import dashboards
from .provisioning import FOLDER_TITLE, FOLDER_UID


class InstallError(RuntimeError):
    pass


def resolve_secret(value: str | None, what: str) -> str | None:
    """Expand `${NAME}` and `${file:PATH}` the way the config file does; InstallError (naming the
    reference, never the value) when it cannot be resolved."""
    if value is None:
        return None
    problems: list = []
    out = expand(value, (what,), problems, {})
    if problems:
        raise InstallError(f"{what}: {problems[0][1]}")
    return out


class _Client:
    def __init__(self, url: str, token: str | None, ca_certs: str | None, timeout: float) -> None:
        self.base = url.rstrip("/")
        scheme = urllib.parse.urlsplit(self.base).scheme
        if scheme not in ("http", "https"):
            raise InstallError(f"--grafana-url must start with http:// or https://, not {url!r}")
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.ctx = ssl.create_default_context(cafile=ca_certs) if scheme == "https" else None
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as r:
                return r.status, _json(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except OSError as exc:  # urllib wraps TLS errors in URLError(reason=SSLError)
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError) or isinstance(exc, ssl.SSLError):
                detail = getattr(reason, "verify_message", None) or getattr(reason, "reason", None) or reason
                raise InstallError(f"{method} {path}: TLS failed ({detail}); pass the CA that signed "
                                   "Grafana's certificate with --grafana-ca-certs") from None
            raise InstallError(f"{method} {path}: cannot reach Grafana at {self.base}: {reason}") from None


def _json(raw: bytes) -> dict:
    try:
        v = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw[:200].decode(errors="replace")}
    return v if isinstance(v, dict) else {"value": v}


def _fail(what: str, status: int, answer: dict) -> InstallError:
    msg = answer.get("message") or answer.get("status") or ""
    hint = {401: " (the token is missing, wrong or expired: set GRAFANA_TOKEN or --grafana-token)",
            403: " (the token's service account needs the Editor role, or folder/dashboard write permission)",
            412: " (Grafana refused the overwrite)"}.get(status, "")
    return InstallError(f"{what}: HTTP {status} {msg}{hint}".rstrip())


def install(grafana_url: str, *, token: str | None = None, ca_certs: str | None = None,
            folder_uid: str = FOLDER_UID, folder_title: str = FOLDER_TITLE, timeout: float = 30.0,
            progress: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
    """Create the folder if needed, then post every dashboard with overwrite. Returns {uid: url}."""
    c = _Client(grafana_url, token, ca_certs, timeout)
    status, answer = c.call("GET", f"/api/folders/{urllib.parse.quote(folder_uid, safe='')}")
    if status == 404:
        status, answer = c.call("POST", "/api/folders", {"uid": folder_uid, "title": folder_title})
        if status != 200:
            raise _fail(f"creating folder {folder_title!r}", status, answer)
        progress(f"grafana: folder {folder_title!r} created (uid {folder_uid})")
    elif status == 200:
        progress(f"grafana: folder {answer.get('title', folder_title)!r} exists (uid {folder_uid})")
    else:
        raise _fail(f"looking up folder {folder_uid!r}", status, answer)
    done = {}
    for uid, model in dashboards().items():
        body = {"dashboard": {**model, "id": None}, "folderUid": folder_uid, "overwrite": True,
                "message": "installed by siemhub dashboards install"}
        status, answer = c.call("POST", "/api/dashboards/db", body)
        if status != 200 or answer.get("status") != "success":
            raise _fail(f"dashboard {model.get('title', uid)!r}", status, answer)
        done[uid] = answer.get("url", "")
        progress(f"grafana: dashboard {model.get('title', uid)!r} installed: {c.base}{answer.get('url', '')} "
                 f"(version {answer.get('version', '?')})")
    return done
