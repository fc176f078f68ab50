"""The Grafana "siemhub Security Overview" dashboard against real ECS documents: every panel's query is
sent to noida-db (an Elasticsearch API emulator, not Elasticsearch) as the request Grafana's
Elasticsearch data source builds from it (a bool filter of the time range and a `query_string` with
the panel's Lucene query, the bucket aggregations nested in order, the metrics innermost), with the
dashboard variables interpolated the way Grafana does for Lucene. The documents are what siemhub's
Elasticsearch exporter writes for the Kibana tests' events (tests/integration/test_elasticsearch_dashboards.py)
plus a policy_action alert. No Grafana server can be installed here: the dashboard is read back through
grafana-foundation-sdk's models, and Grafana's query building is mirrored below from its documented
behaviour. Each query is also translated independently into term/bool/exists DSL, and both must agree,
so that the emulator's query_string support cannot pass a query it got wrong.
"""

from __future__ import annotations

import json
import re

import pytest
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import elasticsearch as es_models
from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel

from siemhub.collector.core.event import decode_json
from siemhub.dashboards import grafana
from siemhub.dashboards.grafana import security
from siemhub.exporters.base import Outcome
from siemhub.exporters.elasticsearch import ElasticsearchConfig, ElasticsearchExporter
from siemhub.exporters.formats import ecs
from tests.integration.test_elasticsearch_dashboards import PODS, dashboard_events, pod_events
from tests.servers.noida import NoidaServer, noida_binary

INDEX = "logs-siemhub.*-gdash"
# the events' times span 2023-11 (the ECS format's test cases) to 2026-11: one range holding them all
FROM_MS, TO_MS = 1_690_000_000_000, 1_800_000_000_000


def _panels():
    register_default_plugins()
    d = Dashboard.from_json(json.loads(grafana.render()[f"dashboards/{security.UID}.json"]))
    return [p for p in d.panels if not isinstance(p, RowPanel)]


# --- Grafana's interpolation of variables into Lucene (multi-value: ("a" OR "b"); All: the allValue) ----

_LUCENE_SPECIAL = re.compile(r'([+\-=&|><!(){}\[\]^"~*?:\\/ ])')


def _lucene_format(values: list[str] | str) -> str:
    if isinstance(values, str):
        return values  # the "All" value, inserted as it is
    return "(" + " OR ".join('"' + _LUCENE_SPECIAL.sub(r"\\\1", v) + '"' for v in values) + ")"


def interpolate(query: str, variables: dict[str, list[str] | str]) -> str:
    out = query
    for name, value in variables.items():
        out = out.replace(f"${name}", _lucene_format(value))
    assert "$" not in out, f"uninterpolated variable in {out!r}"
    return out


ALL = {"node": "*", "namespace": "*"}  # both variables' allValue


# --- the request Grafana's Elasticsearch data source sends for a query -----------------------------------

def grafana_request(t: es_models.Dataquery, lucene: str) -> dict:
    def bucket(agg) -> dict:
        s = agg.settings
        if agg.type_val == "terms":
            body = {"field": agg.field, "size": int(s.size), "order": {"_count": s.order},
                    "min_doc_count": int(s.min_doc_count)}
            return {"terms": body}
        assert agg.type_val == "date_histogram", agg.type_val
        return {"date_histogram": {"field": agg.field, "min_doc_count": int(s.min_doc_count),
                                   "extended_bounds": {"min": FROM_MS, "max": TO_MS}, "format": "epoch_millis",
                                   "fixed_interval": "30d"}}  # what "auto" gives for this range

    metrics = {m.id_val: {m.type_val: {"field": m.field}} for m in t.metrics if m.type_val != "count"}
    aggs: dict = {}
    node = aggs
    for agg in t.bucket_aggs:
        body = bucket(agg)
        node[agg.id_val] = body
        node = body.setdefault("aggs", {})
    node.update(metrics)
    return {"size": 0, "query": {"bool": {"filter": [
        {"range": {t.time_field: {"gte": FROM_MS, "lte": TO_MS, "format": "epoch_millis"}}},
        {"query_string": {"analyze_wildcard": True, "query": lucene}}]}}, "aggs": aggs}


# --- an independent translation of the Lucene subset the dashboard uses -------------------------------

_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|([A-Za-z_@][\w.@]*):|(AND|OR|NOT)(?=[\s()]|$)|([^\s()"]+))')


def lucene_to_dsl(text: str) -> dict:
    toks: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenize Lucene at {text[pos:]!r}"
        kind = ("(", ")", "str", "field", "op", "word")[next(i for i, g in enumerate(m.groups()) if g is not None)]
        toks.append((kind, next(g for g in m.groups() if g is not None)))
        pos = m.end()
    i = 0

    def peek(kind=None, val=None):
        if i >= len(toks):
            return False
        k, v = toks[i]
        return (kind is None or k == kind) and (val is None or v == val)

    def take():
        nonlocal i
        i += 1
        return toks[i - 1]

    def value(field, tok):
        kind, v = tok
        if kind == "str":
            return {"term": {field: re.sub(r"\\(.)", r"\1", v[1:-1])}}
        if v == "*":
            return {"exists": {"field": field}}
        assert "*" not in v and "?" not in v, f"unsupported wildcard {v!r}"
        return {"term": {field: int(v) if v.isdigit() else v}}

    def expr():
        parts = [conj()]
        while peek("op", "OR"):
            take()
            parts.append(conj())
        return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}

    def conj():
        parts = [neg()]
        while peek("op", "AND"):
            take()
            parts.append(neg())
        return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}

    def neg():
        if peek("op", "NOT"):
            take()
            return {"bool": {"must_not": [neg()]}}
        return primary()

    def primary():
        if peek("("):
            take()
            q = expr()
            assert take()[0] == ")"
            return q
        kind, field = take()
        assert kind == "field", f"expected field:value in {text!r}, got {field!r}"
        if field == "_exists_":
            return {"exists": {"field": take()[1]}}
        if peek("("):
            take()
            values = [value(field, take())]
            while peek("op", "OR"):
                take()
                values.append(value(field, take()))
            assert take()[0] == ")"
            return values[0] if len(values) == 1 else {"bool": {"should": values, "minimum_should_match": 1}}
        return value(field, take())

    q = expr()
    assert i == len(toks), f"trailing tokens in {text!r}"
    return q


def fields_of(lucene: str) -> set[str]:
    return {m.group(2) or m.group(1) for m in re.finditer(r"(?:_exists_:([\w.@]+))|([A-Za-z@][\w.@]*):", lucene)}


def test_lucene_translation_is_exact():
    assert lucene_to_dsl('event.action:"exec" AND _exists_:x.y AND NOT h:("a" OR "b\\-c")') == {"bool": {"filter": [
        {"term": {"event.action": "exec"}}, {"exists": {"field": "x.y"}},
        {"bool": {"must_not": [{"bool": {"should": [{"term": {"h": "a"}}, {"term": {"h": "b-c"}}],
                                         "minimum_should_match": 1}}]}}]}}
    assert lucene_to_dsl("host.name:*") == {"exists": {"field": "host.name"}}
    assert interpolate("host.name:$node", {"node": ["node-a"]}) == 'host.name:("node\\-a")'
    assert fields_of('a.b:"x" AND _exists_:c.d AND e:("1" OR "2")') == {"a.b", "c.d", "e"}


# --- indexed events ---------------------------------------------------------------------------------------

def policy_alert():
    from tests.unit.exporters.formats.test_ecs_format import EXTRA

    return decode_json(next(t for t in EXTRA if '"type":"policy_action"' in t).replace('"id":"x-11"', '"id":"g-pol"'))


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    if noida_binary() is None:
        from tests.conftest import server_unavailable

        server_unavailable("noida-db not installed (servers extra)")
    from elasticsearch import Elasticsearch

    with NoidaServer(tmp_path_factory.mktemp("noida-gdash") / "data") as server:
        ex = ElasticsearchExporter("es", ElasticsearchConfig.model_validate(
            {"type": "elasticsearch", "hosts": [server.url], "namespace": "gdash"}))
        ex.start()
        events = dashboard_events() + pod_events(tmp_path_factory.mktemp("pods")) + [policy_alert()]
        assert ex.send(ex.encode(events)).outcome is Outcome.DONE
        ex.close()
        with Elasticsearch(server.url) as es:
            es.indices.refresh(index=INDEX)
            yield es


def _search(es, t, variables):
    lucene = interpolate(t.query, variables)
    body = grafana_request(t, lucene)
    resp = es.search(index=INDEX, **body)
    mirror = es.search(index=INDEX, size=0, aggs=body["aggs"], query={"bool": {"filter": [
        body["query"]["bool"]["filter"][0], lucene_to_dsl(lucene)]}})
    assert resp["hits"]["total"] == mirror["hits"]["total"], f"query_string and term DSL disagree on {lucene!r}"
    assert resp["aggregations"] == mirror["aggregations"], lucene
    return resp


def _leaf_rows(aggs: dict, ids: list[str], path=()) -> list[tuple]:
    """Walk nested bucket aggregations: one row (keys..., doc_count) per innermost bucket."""
    if not ids:
        return [(*path, aggs.get("doc_count"))]
    rows = []
    for b in aggs[ids[0]]["buckets"]:
        rows += _leaf_rows(b, ids[1:], (*path, b["key"]))
    return rows


def test_every_query_names_only_fields_siemhub_emits():
    for p in _panels():
        for t in p.targets:
            named = fields_of(t.query) | {a.field for a in t.bucket_aggs} | {m.field for m in t.metrics
                                                                              if m.type_val != "count"}
            assert named, p.title
            missing = named - set(ecs.FIELDS)
            assert not missing, f"{p.title}: {missing} are not fields the ECS format emits"


def test_every_panel_query_runs_and_returns_data(indexed):
    for p in _panels():
        for t in p.targets:
            resp = _search(indexed, t, ALL)
            assert resp["hits"]["total"]["value"] > 0, f"{p.title}: no hits for {t.query!r}"
            ids = [a.id_val for a in t.bucket_aggs]
            rows = _leaf_rows(resp["aggregations"], ids)
            # every bucket level found the field in the documents (a misspelt field gives no buckets)
            assert any(r[-1] for r in rows), f"{p.title}: empty buckets"
            for m in t.metrics:
                if m.type_val != "count":
                    assert any(_metric_values(resp["aggregations"], ids, m.id_val)), f"{p.title}: {m.field} empty"


def _metric_values(aggs: dict, ids: list[str], metric_id: str) -> list:
    if not ids:
        v = aggs.get(metric_id, {}).get("value")
        return [v] if v is not None else []
    return [v for b in aggs[ids[0]]["buckets"] for v in _metric_values(b, ids[1:], metric_id)]


def _panel(title: str):
    return next(p for p in _panels() if p.title == title)


def test_execs_by_namespace_and_pod_count_every_pod(indexed):
    t = _panel("Process executions over time by namespace and pod").targets[0]
    got: dict[tuple[str, str], int] = {}
    for ns, pod, _when, n in _leaf_rows(_search(indexed, t, ALL)["aggregations"], [a.id_val for a in t.bucket_aggs]):
        got[(ns, pod)] = got.get((ns, pod), 0) + n
    want = {(ns, name): n for (ns, name, *_), n in PODS.items()}
    want[("shop", "web-1")] = 4  # the Kibana test's execs in a pod
    want[("shop", "web-7d9f-x2k")] += 1  # and its kubectl exec
    assert got == want
    # the namespace variable narrows it; the node variable with a node that has none empties it
    only = _leaf_rows(_search(indexed, t, {"node": "*", "namespace": ["payments"]})["aggregations"],
                      [a.id_val for a in t.bucket_aggs])
    assert {(r[0], r[1]) for r in only if r[-1]} == {("payments", "api-0")}
    none = _search(indexed, t, {"node": ["node-b"], "namespace": "*"})
    assert none["hits"]["total"]["value"] == 0


def test_kubectl_exec_sessions(indexed):
    t = _panel("kubectl exec sessions by namespace and pod").targets[0]
    rows = _leaf_rows(_search(indexed, t, ALL)["aggregations"], [a.id_val for a in t.bucket_aggs])
    assert rows == [("shop", "web-7d9f-x2k", "nginx", "/bin/sh", 1)]


def test_policy_hits_by_severity_and_rule(indexed):
    t = _panel("Policy hits by rule").targets[0]
    rows = _leaf_rows(_search(indexed, t, {"node": ["node-a"], "namespace": "*"})["aggregations"],
                      [a.id_val for a in t.bucket_aggs])
    assert rows == [("fim", "high", "sigkill", 1)]
    t = _panel("Policy hits by severity").targets[0]
    rows = [r for r in _leaf_rows(_search(indexed, t, ALL)["aggregations"], [a.id_val for a in t.bucket_aggs]) if r[-1]]
    assert [(r[0], r[-1]) for r in rows] == [("high", 1)]


def test_outbound_connections_and_file_changes(indexed):
    t = _panel("Outbound connections by destination").targets[0]
    rows = _leaf_rows(_search(indexed, t, ALL)["aggregations"], [a.id_val for a in t.bucket_aggs])
    assert [(r[0], r[1]) for r in rows] == [("::1", 443)]
    t = _panel("File integrity changes").targets[0]
    rows = _leaf_rows(_search(indexed, t, ALL)["aggregations"], [a.id_val for a in t.bucket_aggs])
    assert [r[0] for r in rows] == ["/etc/passwd.tmp"]  # the rename; the read of /etc/shadow is no change
