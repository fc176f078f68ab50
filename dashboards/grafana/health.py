"""The "siemhub Health" dashboard on Prometheus, over the metrics siemhub serves on /metrics
(collector/metrics.py, the Kafka source's in collector/sources/kafka.py, the policy engine's).

Metric names are the exposition names prometheus_client writes: counters end in `_total`, the batch
latency histogram is `_bucket`/`_sum`/`_count`. siemhub itself labels series only by sensor, exporter,
reason, kind, topic and partition; the `namespace` and `node` labels the variables select on are
target labels the scrape attaches (deploy/prometheus/prometheus.yml shows the relabelling: Kubernetes
pod namespace and node name, or a static `node` label on a single host). With "All" the selectors
are `.*`, which also matches a series without the label, so a plain single-host scrape works too.
tests/integration/test_grafana_dashboards.py parses every expression and checks its metric and label
names against a live agent's and a live aggregator's /metrics.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import common, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

UID = "siemhub-health"
TITLE = "siemhub Health"
DATASOURCE_UID = "siemhub-prometheus"

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", node=~"$node"'
RI = "$__rate_interval"
# A series every agent and aggregator has from its start (one per exporter, set to 0 when it starts).
ANCHOR = "siemhub_exporter_queue_depth"


def _target(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().ref_id(ref).datasource(DS).expr(expr).legend_format(legend).range()


def _legend() -> common.VizLegendOptions:
    return common.VizLegendOptions().show_legend(True).display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM)


def _series(title: str, description: str, targets: list[prometheus.Dataquery], unit: str = "short",
            w: int = 12) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(8)
         .legend(_legend()).line_width(1).fill_opacity(10))
    for t in targets:
        p = p.with_target(t)
    return p


def _variables(d: db.Dashboard) -> db.Dashboard:
    def label_var(name: str, label: str, query: str) -> db.QueryVariable:
        return (db.QueryVariable(name).label(label).datasource(DS).query(query)
                .multi(True).include_all(True).all_value(".*").sort(VariableSort.ALPHABETICAL_ASC)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .current(VariableOption(selected=True, text=["All"], value=["$__all"])))

    return (d.with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus")
                            .current(VariableOption(selected=True, text="siemhub Prometheus", value=DATASOURCE_UID)))
            .with_variable(label_var("namespace", "Namespace", f"label_values({ANCHOR}, namespace)"))
            .with_variable(label_var("node", "Node", f'label_values({ANCHOR}{{namespace=~"$namespace"}}, node)')))


def build() -> db.Dashboard:
    d = (db.Dashboard(TITLE).uid(UID).tags(["siemhub", "health"]).time("now-6h", "now").refresh("30s")
         .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
         .description("siemhub agents and aggregators: sensors, delivery, process cache, Kafka consumer lag."))
    d = _variables(d)

    d = d.with_row(db.Row("Sensors"))
    d = d.with_panel(_series(
        "Events per second by sensor", "Messages read from the kernel's ring buffers, per node and sensor.",
        [_target(f"sum by (node, sensor) (rate(siemhub_sensor_events_total{{{SEL}}}[{RI}]))", "{{node}} {{sensor}}")],
        unit="ops"))
    d = d.with_panel(_series(
        "Ring-buffer losses", "Messages the kernel could not put in a full ring buffer (lost for good), "
        "by sensor and message kind. Anything above zero means the agent reads too slowly.",
        [_target(f"sum by (node, sensor, kind) (increase(siemhub_ringbuf_lost_events_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{sensor}} {{kind}}")]))
    d = d.with_panel(_series(
        "Decode errors", "Kernel messages that could not be decoded, by sensor and reason.",
        [_target(f"sum by (node, sensor, reason) (increase(siemhub_decode_errors_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{sensor}} {{reason}}")]))
    d = d.with_panel(_series(
        "Filtered in the kernel", "Events dropped in the kernel by ignore filters (by design, not a loss).",
        [_target(f"sum by (node, sensor) (rate(siemhub_kernel_filtered_events_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{sensor}}")], unit="ops"))

    d = d.with_row(db.Row("Delivery"))
    d = d.with_panel(_series(
        "Events sent per second by exporter", "Events the backends acknowledged, next to those queued for them.",
        [_target(f"sum by (node, exporter) (rate(siemhub_exporter_events_sent_total{{{SEL}}}[{RI}]))",
                 "sent {{node}} {{exporter}}"),
         _target(f"sum by (node, exporter) (rate(siemhub_events_routed_total{{{SEL}}}[{RI}]))",
                 "queued {{node}} {{exporter}}", "B")], unit="ops"))
    d = d.with_panel(_series(
        "Queue depth", "Events waiting in each exporter's buffer (memory queue bound: buffer.max_events).",
        [_target(f"max by (node, exporter) (siemhub_exporter_queue_depth{{{SEL}}})", "{{node}} {{exporter}}")]))
    d = d.with_panel(_series(
        "Dropped events by reason", "Events not delivered, by exporter and reason (queue_full, "
        "retries_exhausted_*, rejected items, shutdown_deadline, ...).",
        [_target(f"sum by (node, exporter, reason) (increase(siemhub_exporter_events_dropped_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{exporter}} {{reason}}")]))
    d = d.with_panel(_series(
        "Dead letters by reason", "Events written to the dead-letter destination, by exporter and reason.",
        [_target(f"sum by (node, exporter, reason) (increase(siemhub_exporter_dead_lettered_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{exporter}} {{reason}}")]))
    d = d.with_panel(_series(
        "Retries by reason", "Send attempts that will be retried, by exporter and reason.",
        [_target(f"sum by (node, exporter, reason) (increase(siemhub_exporter_retries_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{exporter}} {{reason}}")]))
    mapping = ValueMap(options={"0": ValueMappingResult(text="closed", color="green", index=0),
                                "1": ValueMappingResult(text="open", color="red", index=1),
                                "2": ValueMappingResult(text="half-open", color="orange", index=2)})
    d = d.with_panel(
        statetimeline.Panel().title("Circuit breaker state").description(
            "Per exporter: closed (sending), open (backend failing; one probe per cool-down), half-open (probing).")
        .datasource(DS).span(12).height(8).mappings([mapping])
        .show_value(VisibilityMode.AUTO).legend(_legend()).fill_opacity(70).line_width(0)
        .with_target(_target(f"max by (node, exporter) (siemhub_exporter_circuit_state{{{SEL}}})",
                             "{{node}} {{exporter}}")))
    d = d.with_panel(_series(
        "Batch latency", "Time to encode and send one batch: p50 and p99 per exporter, and the mean.",
        [_target("histogram_quantile(0.99, sum by (le, exporter) "
                 f"(rate(siemhub_exporter_batch_seconds_bucket{{{SEL}}}[{RI}])))", "p99 {{exporter}}"),
         _target("histogram_quantile(0.5, sum by (le, exporter) "
                 f"(rate(siemhub_exporter_batch_seconds_bucket{{{SEL}}}[{RI}])))", "p50 {{exporter}}", "B"),
         _target(f"sum by (exporter) (rate(siemhub_exporter_batch_seconds_sum{{{SEL}}}[{RI}])) / "
                 f"sum by (exporter) (rate(siemhub_exporter_batch_seconds_count{{{SEL}}}[{RI}]))",
                 "mean {{exporter}}", "C")], unit="s"))
    d = d.with_panel(_series(
        "Disk buffer size", "Bytes of each exporter's disk buffer (buffer.type: disk).",
        [_target(f"max by (node, exporter) (siemhub_exporter_buffer_bytes{{{SEL}}})", "{{node}} {{exporter}}")],
        unit="bytes"))

    d = d.with_row(db.Row("Process cache"))
    d = d.with_panel(_series(
        "Process cache size", "Processes the agent's process cache holds, per node.",
        [_target(f"max by (node) (siemhub_process_cache_entries{{{SEL}}})", "{{node}}")]))
    d = d.with_panel(_series(
        "Process cache lookups", "Parent lookups per second by result (hit, miss, ...).",
        [_target(f"sum by (node, result) (rate(siemhub_process_cache_lookups_total{{{SEL}}}[{RI}]))",
                 "{{node}} {{result}}")], unit="ops"))

    d = d.with_row(db.Row("Aggregators (Kafka source)"))
    d = d.with_panel(_series(
        "Consumer lag", "Messages in each partition after the group's committed offset (siemhub aggregate).",
        [_target(f"sum by (node, topic, partition) (siemhub_kafka_consumer_lag{{{SEL}}})",
                 "{{node}} {{topic}}/{{partition}}")]))
    d = d.with_panel(_series(
        "Messages consumed per second", "Messages the aggregators read, and those that are not native events.",
        [_target(f"sum by (node, topic) (rate(siemhub_kafka_consumed_messages_total{{{SEL}}}[{RI}]))",
                 "consumed {{node}} {{topic}}"),
         _target(f"sum by (node, topic, reason) (rate(siemhub_kafka_bad_messages_total{{{SEL}}}[{RI}]))",
                 "bad {{node}} {{topic}} {{reason}}", "B")], unit="ops"))
    d = d.with_panel(
        stat.Panel().title("Total consumer lag").description("Sum over every partition the aggregators read.")
        .datasource(DS).span(24).height(4)
        .graph_mode(BigValueGraphMode.AREA).reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .with_target(_target(f"sum(siemhub_kafka_consumer_lag{{{SEL}}})", "lag")))
    return d
