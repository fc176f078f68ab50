"""Kibana saved objects (data view, dashboard, visualizations, saved searches) and Elastic Security
detection rules for siemhub's ECS data streams, rendered from the jinja2 templates beside this file.

`render()` returns {file name: ndjson text}; `install()` imports them into a Kibana through its
documented APIs: saved objects with `POST /api/saved_objects/_import?overwrite=true` and rules with
`POST /api/detection_engine/rules/_import?overwrite=true`, each a multipart/form-data upload of one
`file` part, with the `kbn-xsrf` header Kibana requires.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
import uuid
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

SAVED_OBJECTS = "siemhub-kibana-saved-objects.ndjson"
DETECTION_RULES = "siemhub-detection-rules.ndjson"
_TEMPLATES = {SAVED_OBJECTS: "saved_objects.json.j2", DETECTION_RULES: "detection_rules.json.j2"}
# attributes Kibana stores as JSON strings inside the saved object
_STRINGIFIED = ("visState", "searchSourceJSON", "panelsJSON", "optionsJSON")


def _env() -> SandboxedEnvironment:
    # Sandboxed: templates may come from users' overrides; StrictUndefined: a typo is an error.
    return SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)


def _stringify(obj):
    if isinstance(obj, dict):
        return {k: (json.dumps(v, separators=(",", ":")) if k in _STRINGIFIED and not isinstance(v, str)
                    else _stringify(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_stringify(v) for v in obj]
    return obj


def render(index_pattern: str = "logs-siemhub.*-*", data_view_id: str = "siemhub-logs",
           data_view_name: str = "siemhub") -> dict[str, str]:
    env = _env()
    params = {"index_pattern": index_pattern, "data_view_id": data_view_id, "data_view_name": data_view_name}
    out = {}
    folder = resources.files(__package__).joinpath("templates")
    for name, tmpl in _TEMPLATES.items():
        text = env.from_string(folder.joinpath(tmpl).read_text(encoding="utf-8")).render(**params)
        objects = json.loads(text)
        out[name] = "".join(json.dumps(_stringify(o), separators=(",", ":")) + "\n" for o in objects)
    return out


def write(out_dir: str | Path, **params) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(**params).items():
        (out_dir / name).write_text(text, encoding="utf-8")
        written.append(out_dir / name)
    return written


class InstallError(RuntimeError):
    pass


def _multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = f"siemhub-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/ndjson\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def install(kibana_url: str, *, api_key: str | None = None, username: str | None = None,
            password: str | None = None, space: str | None = None, ca_certs: str | None = None,
            insecure: bool = False, rules: bool = True, timeout: float = 30.0, **params) -> dict[str, int]:
    """Import the rendered objects; returns {file: objects imported}. Raises InstallError naming the
    failed objects. Credentials go only into the Authorization header."""
    base = kibana_url.rstrip("/") + (f"/s/{space}" if space else "")
    headers = {"kbn-xsrf": "true"}
    if api_key:
        headers["Authorization"] = f"ApiKey {api_key}"
    elif username:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
    ctx = ssl.create_default_context(cafile=ca_certs)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    rendered = render(**params)
    targets = [(SAVED_OBJECTS, "/api/saved_objects/_import?overwrite=true", "successCount")]
    if rules:
        targets.append((DETECTION_RULES, "/api/detection_engine/rules/_import?overwrite=true", "success_count"))
    done = {}
    for name, path, count_key in targets:
        body, ctype = _multipart(name, rendered[name].encode())
        req = urllib.request.Request(base + path, data=body, method="POST",
                                     headers={**headers, "Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx if base.startswith("https") else None) as r:
                answer = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise InstallError(f"{path.split('?')[0]}: HTTP {exc.code} {exc.reason}") from None
        except OSError as exc:
            raise InstallError(f"{path.split('?')[0]}: {exc}") from None
        errors = answer.get("errors") or []
        if not answer.get("success", False) or errors:
            shown = "; ".join(str(e.get("id") or e.get("rule_id") or e)[:120] for e in errors[:5])
            raise InstallError(f"{path.split('?')[0]}: {len(errors)} objects failed: {shown}")
        done[name] = int(answer.get(count_key, 0))
    return done
