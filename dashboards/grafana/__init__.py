"""Grafana dashboards for siemhub, built with grafana-foundation-sdk (not hand-written JSON):
"siemhub Security Overview" (Elasticsearch, security.py) and "siemhub Health" (Prometheus, health.py),
with provisioning files (provisioning.py) and an installer over Grafana's HTTP API (install.py).

`render()` returns {relative path: text} of the folder `siemhub dashboards render` writes under
`<out>/grafana/`:

    dashboards/siemhub-security-overview.json
    dashboards/siemhub-health.json
    provisioning/datasources/siemhub.yaml
    provisioning/dashboards/siemhub.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from . import health, provisioning, security

DASHBOARDS = {security.UID: security.build, health.UID: health.build}
DEFAULT_ES_URL = "http://localhost:9200"
DEFAULT_ES_INDEX = "logs-siemhub.*-*"
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"
DEFAULT_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/siemhub"


def dashboards() -> dict[str, dict]:
    """{uid: dashboard JSON model} as the SDK encodes it."""
    enc = JSONEncoder(sort_keys=True)
    out = {}
    for uid, build in DASHBOARDS.items():
        model = build().build()
        for i, panel in enumerate(model.panels or [], 1):  # stable panel ids (links, the API's diffs)
            panel.id_val = i
        out[uid] = json.loads(enc.encode(model))
    return out


def render(es_url: str = DEFAULT_ES_URL, es_index: str = DEFAULT_ES_INDEX,
           prometheus_url: str = DEFAULT_PROMETHEUS_URL,
           dashboards_path: str = DEFAULT_DASHBOARDS_PATH) -> dict[str, str]:
    out = {f"dashboards/{uid}.json": json.dumps(model, indent=2, sort_keys=True) + "\n"
           for uid, model in dashboards().items()}
    out["provisioning/datasources/siemhub.yaml"] = provisioning.dump(
        provisioning.datasources(es_url, es_index, prometheus_url))
    out["provisioning/dashboards/siemhub.yaml"] = provisioning.dump(provisioning.dashboard_providers(dashboards_path))
    return out


def write(out_dir: str | Path, **params) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for rel, text in render(**params).items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
