"""The "siemhub Security Overview" dashboard on an Elasticsearch data source over siemhub's ECS data
streams (logs-siemhub.*-*): the panels of the Kibana dashboard (dashboards/kibana), as Grafana panels.

Queries are Lucene (the Elasticsearch data source's query language) kept to `field:"value"`,
`field:(a OR b)`, `_exists_:field`, AND/OR/NOT and parentheses, so that
tests/integration/test_grafana_dashboards.py can run each of them exactly against indexed ECS events.
Every field named here is one exporters/formats/ecs.py emits (the test checks it against ecs.FIELDS).

Variables: `datasource` (an Elasticsearch data source), `node` (host.name) and `namespace`
(orchestrator.namespace). `node` filters every panel; `namespace` filters the panels about pods only:
an event on the host itself has no namespace, and "All" (`*`) would hide it elsewhere.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import elasticsearch as es
from grafana_foundation_sdk.builders import common, piechart, table, timeseries
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

UID = "siemhub-security-overview"
TITLE = "siemhub Security Overview"
DATASOURCE_UID = "siemhub-es"  # the provisioned data source (provisioning.py); the variable can switch it

DS = DataSourceRef(type_val="elasticsearch", uid="${datasource}")
NODE = "host.name:$node"
NAMESPACE = "orchestrator.namespace:$namespace"
POD = 'orchestrator.type:"kubernetes"'


def _and(*parts: str) -> str:
    return " AND ".join(parts)


def _terms(agg_id: str, field: str, size: int = 10) -> es.Terms:
    return es.Terms().id(agg_id).field(field).settings(
        es.ElasticsearchTermsSettings().size(str(size)).order("desc").order_by("_count").min_doc_count("1"))


def _histogram(agg_id: str) -> es.DateHistogram:
    # Grafana wants the date histogram last among the bucket aggregations of a time series
    return es.DateHistogram().id(agg_id).field("@timestamp").settings(
        es.ElasticsearchDateHistogramSettings().interval("auto").min_doc_count("0"))


def _query(lucene: str, buckets: list, metrics: list | None = None) -> es.Dataquery:
    return (es.Dataquery().ref_id("A").datasource(DS).query(lucene).time_field("@timestamp")
            .metrics(metrics or [es.Count().id("1")]).bucket_aggs(buckets))


def _legend() -> common.VizLegendOptions:
    return (common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.RIGHT))


def _series(title: str, description: str, q: es.Dataquery, w: int = 12) -> timeseries.Panel:
    return (timeseries.Panel().title(title).description(description).datasource(DS).with_target(q)
            .span(w).height(9).unit("short").legend(_legend()).line_width(1).fill_opacity(10))


def _table(title: str, description: str, q: es.Dataquery, w: int = 12) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(DS).with_target(q).span(w).height(9)
            .show_header(True))


def _variables(d: db.Dashboard) -> db.Dashboard:
    def terms_var(name: str, label: str, field: str) -> db.QueryVariable:
        # The Elasticsearch data source's variable query: the terms of one field (Grafana's docs)
        return (db.QueryVariable(name).label(label).datasource(DS)
                .query(json.dumps({"find": "terms", "field": field, "size": 500}))
                .multi(True).include_all(True).all_value("*").sort(VariableSort.ALPHABETICAL_ASC)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .current(VariableOption(selected=True, text=["All"], value=["$__all"])))

    return (d.with_variable(db.DatasourceVariable("datasource").label("Data source").type("elasticsearch")
                            .current(VariableOption(selected=True, text="siemhub Elasticsearch",
                                                    value=DATASOURCE_UID)))
            .with_variable(terms_var("node", "Node", "host.name"))
            .with_variable(terms_var("namespace", "Namespace", "orchestrator.namespace")))


def build() -> db.Dashboard:
    d = (db.Dashboard(TITLE).uid(UID).tags(["siemhub", "security"]).time("now-24h", "now").refresh("1m")
         .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
         .description("Process, Kubernetes, policy, network and file activity seen by siemhub (ECS data streams)."))
    d = _variables(d)

    d = d.with_row(db.Row("Processes and pods"))
    d = d.with_panel(_series(
        "Process executions over time by namespace and pod",
        "Execs in Kubernetes pods (pod found through the cgroup path and the kubelet's directories), "
        "one series per namespace and pod.",
        _query(_and('event.action:"exec"', POD, NAMESPACE, NODE),
               [_terms("3", "orchestrator.namespace"), _terms("4", "orchestrator.resource.name"), _histogram("2")])))
    d = d.with_panel(_table(
        "Top executed binaries", "The executables run most often (process.executable).",
        _query(_and('event.action:"exec"', NODE), [_terms("2", "process.executable", 20)])))
    d = d.with_panel(_table(
        "kubectl exec sessions by namespace and pod",
        "Processes that entered a pod's namespaces from outside (kubectl exec, crictl exec): the process "
        "sensor's namespace_entry flag.",
        _query(_and('event.action:"exec"', 'siemhub.process.flags:"namespace_entry"', POD, NAMESPACE, NODE),
               [_terms("2", "orchestrator.namespace", 20), _terms("3", "orchestrator.resource.name", 20),
                _terms("4", "container.name"), _terms("5", "process.executable", 20)])))
    d = d.with_panel(_table(
        "Namespace entry (nsenter, kubectl exec)", "nsenter and runc runs by command line and node.",
        _query(_and('event.action:"exec"', 'process.name:("nsenter" OR "runc")', NODE),
               [_terms("2", "process.command_line", 20), _terms("3", "host.name")])))
    d = d.with_panel(
        piechart.Panel().title("Processes ended by a signal").description("Exits by the signal that ended them.")
        .datasource(DS).span(12).height(9)
        .legend(piechart.PieChartLegendOptions().show_legend(True).display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.RIGHT))
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["sum"]))
        .hide_from(common.HideSeriesConfig().legend(False).tooltip(False).viz(False))
        .with_target(_query(_and('event.action:"end"', "_exists_:siemhub.exit.signal", NODE),
                            [_terms("2", "siemhub.exit.signal")])))
    d = d.with_panel(_table(
        "Privilege changes", "setuid/setgid/capset/mount and the like, by executable and operation.",
        _query(_and("_exists_:siemhub.privilege.operation", NODE),
               [_terms("2", "process.executable", 20), _terms("3", "siemhub.privilege.operation")])))

    d = d.with_row(db.Row("Policies"))
    d = d.with_panel(_series(
        "Policy hits by severity", "policy_action alerts over time, one series per severity (log.level).",
        _query(_and('event.kind:"alert"', 'event.action:"policy_action"', NODE),
               [_terms("3", "log.level"), _histogram("2")])))
    d = d.with_panel(_table(
        "Policy hits by rule", "policy_action alerts by policy (rule.name), severity and action.",
        _query(_and('event.kind:"alert"', 'event.action:"policy_action"', NODE),
               [_terms("2", "rule.name", 20), _terms("3", "log.level"), _terms("4", "siemhub.policy.action")])))

    d = d.with_row(db.Row("Network and files"))
    d = d.with_panel(_table(
        "Outbound connections by destination", "Connections processes opened, by destination address and port.",
        _query(_and('event.action:"connect"', "_exists_:destination.ip", NODE),
               [_terms("2", "destination.ip", 20), _terms("3", "destination.port", 10),
                _terms("4", "process.executable", 10)])))
    d = d.with_panel(_table(
        "File integrity changes", "Writes, renames, chmod/chown and deletions of watched files.",
        _query(_and('event.category:"file"', 'event.type:("change" OR "creation" OR "deletion")', NODE),
               [_terms("2", "file.path", 20), _terms("3", "process.executable", 10)])))

    d = d.with_row(db.Row("Agent"))
    d = d.with_panel(_series(
        "Agent losses (ring buffer, drops, decode errors)",
        "From the agents' agent_status events: the highest counts reported per node "
        "(the Prometheus health dashboard has them per sensor and exporter).",
        _query(_and('event.action:"agent_status"', NODE),
               [_terms("3", "host.name"), _histogram("2")],
               [es.Max().id("1").field("siemhub.status.lost_events"),
                es.Max().id("4").field("siemhub.status.dropped_events"),
                es.Max().id("5").field("siemhub.status.decode_errors")]), w=24))
    return d
