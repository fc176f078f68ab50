"""The siemhub app for Splunk, rendered from the jinja2 templates beside this file.

`render()` returns {path inside the app: text}: default/app.conf, props.conf (one stanza per siemhub
sourcetype, KV_MODE = json, timestamp extraction), eventtypes.conf + tags.conf (the sourcetypes in the
CIM data models), fields.conf (the exporter's indexed fields), macros.conf (`siemhub_index`),
savedsearches.conf (a detection search per policy of the shipped library), a Dashboard Studio view
(default/data/ui/views/siemhub_overview.xml) and metadata/default.meta. `write()` writes them as a
directory and as the installable `siemhub_app.tgz`. `siemhub dashboards install --splunk-url` puts the
index, searches and dashboard into a running Splunk through its REST API (dashboards/splunk/manage.py).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from siemhub.collector.policy import library_dir, load_files
from siemhub.exporters.formats import cim

APP = "siemhub_app"
VERSION = "0.1.0"
VIEW = "siemhub_overview"
TARBALL = f"{APP}.tgz"
INDEXED_FIELDS = ("siemhub_severity", "siemhub_tag", "siemhub_policy")

SOURCETYPES = [
    {"name": f"siemhub:{c}", "description": d} for c, d in (
        ("process", "siemhub process executions and exits (eBPF)"),
        ("file", "siemhub file access on watched paths (eBPF)"),
        ("network", "siemhub network connections and DNS queries (eBPF)"),
        ("privilege", "siemhub privilege changes: setuid, capset, ptrace, module loads, mounts (eBPF)"),
        ("policy", "siemhub policy actions: what a policy rule matched and did"),
        ("agent", "siemhub agent status: counters of the agent itself"),
    )
]
assert {s["name"].split(":")[1] for s in SOURCETYPES} == set(cim.CATEGORIES)

EVENTTYPES = [
    {"name": "siemhub_process", "search": 'sourcetype="siemhub:process"', "tags": ["process", "report"],
     "description": "process executions and exits (CIM Endpoint.Processes)"},
    {"name": "siemhub_file", "search": 'sourcetype="siemhub:file"', "tags": ["endpoint", "filesystem"],
     "description": "file access (CIM Endpoint.Filesystem)"},
    {"name": "siemhub_network", "search": 'sourcetype="siemhub:network"', "tags": ["network", "communicate"],
     "description": "network connections (CIM Network_Traffic)"},
    {"name": "siemhub_dns", "search": 'sourcetype="siemhub:network" siemhub_type="dns_query"',
     "tags": ["network", "resolution", "dns"], "description": "DNS queries (CIM Network_Resolution)"},
    {"name": "siemhub_privilege", "search": 'sourcetype="siemhub:privilege"', "tags": ["change", "endpoint"],
     "description": "privilege changes (CIM Change)"},
    {"name": "siemhub_policy", "search": 'sourcetype="siemhub:policy"', "tags": ["ids", "attack", "alert"],
     "description": "policy actions (CIM Intrusion_Detection, Alerts)"},
]

# Splunk alert.severity: 1 debug, 2 info, 3 low, 4 medium, 5 high, 6 critical
_ALERT_SEVERITY = {"info": 2, "low": 3, "medium": 4, "high": 5, "critical": 6}
_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)


def shipped_policies() -> list[dict]:
    """name, one-line description and alert severity (the highest of its rules) of each shipped policy."""
    out = []
    for lp in load_files([library_dir()]):
        p = lp.policy
        sev = max((r.severity or "medium" for r in p.rules), key=_RANK.__getitem__)
        out.append({"name": p.name, "description": " ".join((p.description or "").split()),
                    "alert_severity": _ALERT_SEVERITY[sev]})
    return sorted(out, key=lambda p: p["name"])


def dashboard_definition(title: str = "siemhub overview") -> dict:
    folder = resources.files(__package__).joinpath("templates")
    text = _env().from_string(folder.joinpath("siemhub_overview.json.j2").read_text(encoding="utf-8")).render(
        title=title)
    return json.loads(text)


def dashboard_xml(definition: dict) -> str:
    """A Dashboard Studio view: version 2, the JSON definition in a CDATA section."""
    body = json.dumps(definition, indent=2)
    if "]]>" in body:
        raise ValueError("the dashboard definition may not contain ']]>'")
    return (f'<dashboard version="2" theme="dark">\n  <label>{definition["title"]}</label>\n'
            f'  <description>{definition["description"]}</description>\n'
            f"  <definition><![CDATA[\n{body}\n]]></definition>\n</dashboard>\n")


def render(index: str = "siemhub", build: int = 1) -> dict[str, str]:
    env = _env()
    params = {"app": APP, "version": VERSION, "build": build, "index": index, "sourcetypes": SOURCETYPES,
              "eventtypes": EVENTTYPES, "indexed_fields": INDEXED_FIELDS, "policies": shipped_policies()}
    folder = resources.files(__package__).joinpath("templates")
    out = {}
    for name in ("app", "props", "eventtypes", "tags", "fields", "macros", "savedsearches"):
        tmpl = folder.joinpath(f"{name}.conf.j2").read_text(encoding="utf-8")
        out[f"default/{name}.conf"] = env.from_string(tmpl).render(**params)
    out[f"default/data/ui/views/{VIEW}.xml"] = dashboard_xml(dashboard_definition())
    out["metadata/default.meta"] = env.from_string(
        folder.joinpath("default.meta.j2").read_text(encoding="utf-8")).render(**params)
    return out


def tarball(files: dict[str, str]) -> bytes:
    """The app as Splunk installs it: a gzipped tar with one top-level directory named after the app."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, text in sorted(files.items()):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{APP}/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    # gzip with a fixed header time: the same app gives the same bytes (reproducible builds)
    return gzip.compress(buf.getvalue(), mtime=0)


def write(out_dir: str | Path, index: str = "siemhub") -> list[Path]:
    """The app directory (out_dir/siemhub_app/...) and out_dir/siemhub_app.tgz."""
    out_dir = Path(out_dir)
    files = render(index=index)
    written = []
    for path, text in files.items():
        target = out_dir / APP / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    tgz = out_dir / TARBALL
    tgz.write_bytes(tarball(files))
    written.append(tgz)
    return written
