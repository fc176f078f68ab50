"""Grafana provisioning files (apiVersion 1) for a Grafana that mounts the rendered folder:
`provisioning/datasources/siemhub.yaml` (an Elasticsearch data source over siemhub's ECS data streams
and a Prometheus data source, with the uids the dashboards default to) and
`provisioning/dashboards/siemhub.yaml` (a file provider reading the dashboards' JSON from
`dashboards_path`, into the "siemhub" folder). Mount them at /etc/grafana/provisioning/... and the
dashboards folder at `dashboards_path` (docs/grafana.md).

Credentials are not written here: Grafana expands `$VAR` in provisioning files, so a deployment adds
e.g. `basicAuthUser`/`secureJsonData.basicAuthPassword: $ES_PASSWORD` itself.
"""

from __future__ import annotations

import yaml

from . import health, security

FOLDER_UID = "siemhub"
FOLDER_TITLE = "siemhub"


def datasources(es_url: str, es_index: str, prometheus_url: str) -> dict:
    return {"apiVersion": 1, "datasources": [
        {"name": "siemhub Elasticsearch", "type": "elasticsearch", "uid": security.DATASOURCE_UID,
         "access": "proxy", "url": es_url, "editable": False,
         "jsonData": {"index": es_index, "timeField": "@timestamp", "maxConcurrentShardRequests": 5}},
        {"name": "siemhub Prometheus", "type": "prometheus", "uid": health.DATASOURCE_UID,
         "access": "proxy", "url": prometheus_url, "editable": False,
         "jsonData": {"httpMethod": "POST", "timeInterval": "15s"}},
    ]}


def dashboard_providers(dashboards_path: str) -> dict:
    return {"apiVersion": 1, "providers": [
        {"name": "siemhub", "orgId": 1, "folder": FOLDER_TITLE, "folderUid": FOLDER_UID, "type": "file",
         "disableDeletion": False, "allowUiUpdates": False, "updateIntervalSeconds": 30,
         "options": {"path": dashboards_path, "foldersFromFilesStructure": False}},
    ]}


def dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
