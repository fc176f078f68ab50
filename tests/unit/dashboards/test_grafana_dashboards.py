"""Grafana dashboards built with grafana-foundation-sdk: the rendered JSON loads back through the SDK's
own models (every query as the Elasticsearch or Prometheus query model, not as an unknown bag), encodes
back to the same JSON, has the variables and panels the docs describe; the provisioning files say what
Grafana's provisioning documentation asks for. No Grafana server can be installed here: Grafana's
behaviour is checked through its SDK's models; the queries themselves are run in
tests/integration/test_grafana_dashboards.py.
"""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import elasticsearch as es_models
from grafana_foundation_sdk.models import prometheus as prom_models
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

from siemhub.collector.cli import main as cli
from siemhub.dashboards import grafana, kibana
from siemhub.dashboards.grafana import health, security


def _load(uid: str) -> Dashboard:
    register_default_plugins()  # the SDK decodes targets by data source type only with its plugins registered
    return Dashboard.from_json(json.loads(grafana.render()[f"dashboards/{uid}.json"]))


def _uid(ref) -> str | None:  # the Prometheus query model keeps its data source ref as a plain object
    return ref.get("uid") if isinstance(ref, dict) else ref.uid


def _panels(d: Dashboard) -> list[Panel]:
    return [p for p in d.panels if not isinstance(p, RowPanel)]


def test_both_dashboards_load_back_through_the_sdk_models_unchanged():
    for uid, query_model in ((security.UID, es_models.Dataquery), (health.UID, prom_models.Dataquery)):
        text = grafana.render()[f"dashboards/{uid}.json"]
        d = _load(uid)
        assert d.uid == uid and d.title in (security.TITLE, health.TITLE)
        panels = _panels(d)
        assert len(panels) >= 9
        for p in panels:
            assert p.targets, p.title
            for t in p.targets:
                assert isinstance(t, query_model), f"{uid}: {p.title}: decoded as {type(t).__name__}"
                assert not isinstance(t, runtime.UnknownDataquery)
        # decode -> encode is the identity: nothing the SDK does not model was written
        assert json.loads(JSONEncoder(sort_keys=True).encode(d)) == json.loads(text)
        ids = [p.id_val for p in d.panels]
        assert ids == list(range(1, len(ids) + 1))


def test_variables_data_source_node_namespace():
    for uid, ds_type, default_uid in ((security.UID, "elasticsearch", "siemhub-es"),
                                      (health.UID, "prometheus", "siemhub-prometheus")):
        d = _load(uid)
        by_name = {v.name: v for v in d.templating.list_val}
        assert list(by_name) == ["datasource", "node", "namespace"] if uid == security.UID else \
            list(by_name) == ["datasource", "namespace", "node"]
        ds = by_name["datasource"]
        assert ds.type_val == "datasource" and ds.query == ds_type and ds.current.value == default_uid
        for name in ("node", "namespace"):
            v = by_name[name]
            assert v.type_val == "query" and v.multi and v.include_all
            assert v.datasource.uid == "${datasource}" and v.datasource.type_val == ds_type
        for p in _panels(d):  # every panel reads through the variable, so switching it switches all
            assert p.datasource.uid == "${datasource}" and p.datasource.type_val == ds_type
            assert all(_uid(t.datasource) == "${datasource}" for t in p.targets)
    es_node = {v.name: v for v in _load(security.UID).templating.list_val}["node"]
    assert json.loads(es_node.query) == {"find": "terms", "field": "host.name", "size": 500}


def test_security_overview_has_the_kibana_dashboards_panels():
    titles = [p.title for p in _panels(_load(security.UID))]
    kibana_titles = {json.loads(line)["attributes"]["title"].removeprefix("siemhub: ")
                     for line in kibana.render()[kibana.SAVED_OBJECTS].splitlines()
                     if json.loads(line)["type"] == "visualization"}
    wanted = {t.lower() for t in kibana_titles if t != "policy actions"}  # here: policy hits by severity/rule
    assert wanted <= {t.lower() for t in titles}, wanted - {t.lower() for t in titles}
    assert {"Policy hits by severity", "Policy hits by rule"} <= set(titles)


def test_health_has_a_panel_for_each_health_signal():
    exprs = " ".join(t.expr for p in _panels(_load(health.UID)) for t in p.targets)
    for metric in ("siemhub_sensor_events_total", "siemhub_ringbuf_lost_events_total", "siemhub_decode_errors_total",
                   "siemhub_exporter_queue_depth", "siemhub_exporter_events_dropped_total",
                   "siemhub_exporter_dead_lettered_total", "siemhub_exporter_retries_total",
                   "siemhub_exporter_circuit_state", "siemhub_exporter_batch_seconds_bucket",
                   "siemhub_process_cache_entries", "siemhub_kafka_consumer_lag"):
        assert metric in exprs, metric


def test_provisioning_files(tmp_path):
    out = grafana.render(es_url="https://es.example:9200", es_index="logs-siemhub.*-prod",
                         prometheus_url="http://prom:9090", dashboards_path="/dash")
    ds = yaml.safe_load(out["provisioning/datasources/siemhub.yaml"])
    assert ds["apiVersion"] == 1
    by_type = {d["type"]: d for d in ds["datasources"]}
    assert by_type["elasticsearch"]["uid"] == security.DATASOURCE_UID
    assert by_type["elasticsearch"]["url"] == "https://es.example:9200"
    assert by_type["elasticsearch"]["jsonData"]["index"] == "logs-siemhub.*-prod"
    assert by_type["elasticsearch"]["jsonData"]["timeField"] == "@timestamp"
    assert by_type["prometheus"]["uid"] == health.DATASOURCE_UID and by_type["prometheus"]["url"] == "http://prom:9090"
    prov = yaml.safe_load(out["provisioning/dashboards/siemhub.yaml"])
    assert prov["apiVersion"] == 1
    (p,) = prov["providers"]
    assert p["type"] == "file" and p["options"]["path"] == "/dash" and p["folder"] == "siemhub"


def test_cli_render_writes_grafana_next_to_kibana(tmp_path):
    r = CliRunner().invoke(cli, ["dashboards", "render", "--out", str(tmp_path), "--grafana-dashboards-path", "/g"])
    assert r.exit_code == 0, r.output
    # beside the Kibana files and the Splunk app (dashboards/splunk)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kibana.SAVED_OBJECTS, kibana.DETECTION_RULES, "grafana",
                                                                 "siemhub_app", "siemhub_app.tgz"])
    want = grafana.render(dashboards_path="/g")
    got = {str(p.relative_to(tmp_path / "grafana")): p.read_text() for p in (tmp_path / "grafana").rglob("*")
           if p.is_file()}
    assert got == want
    assert all(str(tmp_path / "grafana" / rel) in r.output for rel in want)
