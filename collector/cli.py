"""The `siemhub` command line."""

from __future__ import annotations

import logging
import sys
import time

import click
import msgspec

from siemhub.collector import config as config_mod
from siemhub.collector.core.event import EVENT_TYPES, decode_json
from siemhub.collector.sensors import BPFUnavailable

CONFIG_HELP = "config file (YAML); the embedded default when omitted"


def _load(path: str | None) -> config_mod.LoadedConfig:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)


def _delivery_extra(c: dict) -> str:
    """`; dead-lettered ...; N left in the disk buffer` for the exit summaries."""
    out = ""
    if c.get("dead_lettered"):
        out += "; dead-lettered " + ", ".join(f"{k}={v}" for k, v in c["dead_lettered"].items())
    if c.get("buffered"):
        out += f"; {c['buffered']} left in the disk buffer for the next start"
    return out


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@click.group()
@click.version_option(package_name="siemhub")
def main() -> None:
    """siemhub: eBPF security events, enriched and delivered to your SIEM."""


@main.command()
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--duration", type=float, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def run(path: str | None, duration: float | None, log_level: str) -> None:
    """Run the agent: sensors, router and exporters."""
    from siemhub.collector.agent import Agent, StartupError

    _logging(log_level)
    cfg = _load(path)
    a = cfg.agent
    sensors = a.sensors.enabled()
    click.echo(f"siemhub: node {a.node.name}; sensors: {', '.join(sensors) or 'none'}; "
               f"exporters: {', '.join(f'{n} ({c.type}/{c.format})' for n, (_, c) in cfg.exporters.items())}; "
               f"routes: {len(a.routes)}; config {cfg.source}", err=True)
    agent = Agent(cfg)
    try:
        counts = agent.run(duration)
    except (BPFUnavailable, StartupError) as exc:
        agent.shutdown()
        what = "eBPF unavailable" if isinstance(exc, BPFUnavailable) else "cannot start"
        click.echo(f"siemhub: {what}: {exc}", err=True)
        sys.exit(1)
    for name, c in counts.items():
        dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
        click.echo(f"siemhub: exporter {name}: sent {c['sent']}, dropped {dropped}"
                   f"{_delivery_extra(c)}", err=True)


@main.command()
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False), help="config file to check")
def validate(path: str) -> None:
    """Check a config file; print each problem as file:line: field: reason."""
    cfg = _load(path)
    a = cfg.agent
    sensors = a.sensors.enabled()
    click.echo(f"{path}: OK ({len(cfg.exporters)} exporters, {len(a.routes)} routes, "
               f"sensors: {', '.join(sensors) or 'none'})")
    if cfg.policies is not None:  # loaded and checked by config.load: errors exit 2 above
        click.echo(f"{path}: policies: {cfg.policies.describe()}")


@main.command()
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False), help="take the sensor settings from this file")
@click.option("-o", "--output", type=click.Choice(["compact", "json"]), default="compact")
@click.option("--type", "types", multiple=True, type=click.Choice(EVENT_TYPES), help="only these event types")
@click.option("--follow", "follow", type=click.Path(dir_okay=False),
              help="instead of running sensors, follow a JSON-lines file a running agent writes")
@click.option("--duration", type=float, help="stop after this many seconds")
def events(path: str | None, output: str, types: tuple[str, ...], follow: str | None, duration: float | None) -> None:
    """Live events in the terminal (like `tetra getevents`)."""
    if follow:
        _follow(follow, output, set(types), duration)
        return
    from siemhub.collector.agent import Agent

    _logging("warning")
    base = _load(path)
    match = f"match: {{types: [{', '.join(types)}]}}" if types else ""
    text = (f"exporters:\n  terminal: {{type: stdout, format: {'native' if output == 'json' else 'compact'},"
            f" batch: {{max_events: 64, max_wait: 0.2}}}}\n"
            f"routes:\n  - {{name: terminal, to: [terminal] {', ' + match if match else ''}}}\n"
            f"metrics: {{enabled: false}}\nstatus_interval: 0\n")
    cfg = config_mod.parse(text, "<events>")
    cfg.agent.sensors = base.agent.sensors
    cfg.agent.node = base.agent.node
    try:
        Agent(cfg).run(duration)
    except BPFUnavailable as exc:
        click.echo(f"siemhub: eBPF unavailable: {exc}", err=True)
        sys.exit(1)


def _follow(path: str, output: str, types: set[str], duration: float | None) -> None:
    from siemhub.exporters.stdout import compact_line

    end = time.monotonic() + duration if duration else float("inf")
    with open(path, "rb") as f:
        f.seek(0, 2)
        buf = b""
        while time.monotonic() < end:
            chunk = f.read()
            if not chunk:
                time.sleep(0.2)
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    e = decode_json(line)
                except msgspec.MsgspecError:
                    continue
                if types and e.type not in types:
                    continue
                click.echo(line.decode() if output == "json" else compact_line(e))


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-c", "--config", "path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning", "error"]))
def replay(file: str, path: str | None, log_level: str) -> None:
    """Feed a JSON-lines file of native events (or dead-letter records) through the router and
    exporters. A dead letter goes back to the exporter it names when the config has it."""
    from siemhub.collector.agent import Pipeline, tune_gc
    from siemhub.collector.sources.replay import ReplayStats, read_batches

    _logging(log_level)
    cfg = _load(path)
    pipe = Pipeline(cfg)
    try:
        pipe.start()
    except Exception as exc:  # noqa: BLE001 - StartupError: name and reason, exit 1
        click.echo(f"siemhub: cannot start: {exc}", err=True)
        sys.exit(1)
    tune_gc()
    stats = ReplayStats()
    with open(file, "rb") as f:
        for events, exporter in read_batches(f, file, stats):  # runs of one destination, ~1 MB each
            to = exporter if exporter in pipe.runners else None
            for i in range(0, len(events), 1000):
                pipe.emit(events[i:i + 1000], wait=True, to=to)
    counts = pipe.stop(cfg.agent.shutdown_deadline)
    good, bad = stats.good, stats.bad
    for line in stats.first_bad:
        click.echo(f"skipped {line}", err=True)
    click.echo(f"replayed {good} events ({stats.dead_letters} from dead letters), "
               f"skipped {bad} unreadable lines", err=True)
    for name, c in counts.items():
        dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
        click.echo(f"exporter {name}: sent {c['sent']}, dropped {dropped}{_delivery_extra(c)}", err=True)
    if bad or any(c["dropped"] for c in counts.values()):
        sys.exit(1)


@main.command()
@click.option("-c", "--config", "path", required=True, type=click.Path(dir_okay=False),
              help="config file with a sources.kafka section")
@click.option("--duration", type=float, help="stop after this many seconds (default: until SIGINT/SIGTERM)")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def aggregate(path: str, duration: float | None, log_level: str) -> None:
    """Aggregator: read events from Kafka (a consumer group) and deliver them to the exporters,
    committing offsets only after the exporters acknowledged them."""
    import signal

    from siemhub.collector.agent import Pipeline, StartupError, tune_gc
    from siemhub.collector.health import Health
    from siemhub.collector.otlp_metrics import OtlpMetricsPusher
    from siemhub.collector.sources.kafka import KafkaSource

    _logging(log_level)
    cfg = _load(path)
    a = cfg.agent
    if a.sources.kafka is None:
        click.echo(f"{path}: sources.kafka: required by `siemhub aggregate`", err=True)
        sys.exit(2)
    k = a.sources.kafka
    click.echo(f"siemhub aggregate: group {k.group_id}, topics {', '.join(k.topics)}, brokers {', '.join(k.brokers)}; "
               f"exporters: {', '.join(f'{n} ({c.type}/{c.format})' for n, (_, c) in cfg.exporters.items())}", err=True)
    pipe = Pipeline(cfg)
    source = KafkaSource(k, pipe, a.shutdown_deadline)
    signal.signal(signal.SIGTERM, source.request_stop)
    signal.signal(signal.SIGINT, source.request_stop)
    server = None
    pusher = None
    health = Health()  # /healthz, /readyz next to /metrics: ready once every exporter started
    health.expect(*(f"exporter {n}" for n in pipe.runners), "kafka source")
    try:
        if a.metrics.enabled:
            host, _, port = a.metrics.listen.rpartition(":")
            server, _thread = pipe.metrics.serve(host.strip("[]"), int(port), health=health)
        if a.metrics.otlp is not None:  # metrics.otlp: the registry (consumer lag...) pushed over OTLP
            pusher = OtlpMetricsPusher(a.metrics.otlp, pipe.metrics.registry, a.node.name).start()
        pipe.start()
        for n in pipe.runners:
            health.up(f"exporter {n}")
        health.up("kafka source")  # it subscribes as run() begins
        tune_gc()
        source.run(duration)
    except (StartupError, OSError) as exc:
        click.echo(f"siemhub aggregate: cannot start: {exc}", err=True)
        pipe.stop(0)
        sys.exit(1)
    health.stopping()
    counts = pipe.stop(a.shutdown_deadline)
    if pusher is not None:
        pusher.stop()  # the final values
    if server is not None:
        server.shutdown()
    stats = source.stats()
    bad = ", ".join(f"{r}={n}" for r, n in stats["bad"].items()) or "none"
    click.echo(f"siemhub aggregate: consumed {stats['consumed']}, skipped {bad}", err=True)
    for name, c in counts.items():
        dropped = ", ".join(f"{k}={v}" for k, v in c["dropped"].items()) or "none"
        click.echo(f"siemhub aggregate: exporter {name}: sent {c['sent']}, dropped {dropped}", err=True)


@main.group()
def dashboards() -> None:
    """Kibana saved objects and detection rules, Grafana dashboards and the Splunk app for siemhub's events."""


_DV_OPTIONS = [
    click.option("--index-pattern", default="logs-siemhub.*-*", show_default=True, help="indices of the data view"),
    click.option("--data-view-id", default="siemhub-logs", show_default=True),
]


def _dv(f):
    for opt in reversed(_DV_OPTIONS):
        f = opt(f)
    return f


@dashboards.command("render")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="directory to write to")
@_dv
# --- Grafana (issue 15) ---
@click.option("--grafana-es-url", default="http://localhost:9200", show_default=True,
              help="Elasticsearch URL of the provisioned Grafana data source")
@click.option("--grafana-prometheus-url", default="http://localhost:9090", show_default=True,
              help="Prometheus URL of the provisioned Grafana data source")
@click.option("--grafana-dashboards-path", default="/var/lib/grafana/dashboards/siemhub", show_default=True,
              help="where Grafana will find the dashboards' JSON (the provider's options.path)")
# --- Splunk (issue 14) ---
@click.option("--splunk-index", default="siemhub", show_default=True, help="index the Splunk app searches")
def dashboards_render(out: str, index_pattern: str, data_view_id: str, grafana_es_url: str = "http://localhost:9200",
                      grafana_prometheus_url: str = "http://localhost:9090",
                      grafana_dashboards_path: str = "/var/lib/grafana/dashboards/siemhub",
                      splunk_index: str = "siemhub") -> None:
    """Write the Kibana ndjson files (saved objects, detection rules), the Grafana dashboards with
    their provisioning files (under OUT/grafana/) and the Splunk app (a directory and the installable
    siemhub_app.tgz) to a directory."""
    from siemhub.dashboards import kibana

    for path in kibana.write(out, index_pattern=index_pattern, data_view_id=data_view_id):
        click.echo(str(path))
    # --- Grafana (issue 15): dashboards + provisioning files under <out>/grafana/ ---
    from pathlib import Path

    from siemhub.dashboards import grafana

    for path in grafana.write(Path(out) / "grafana", es_index=index_pattern, es_url=grafana_es_url,
                              prometheus_url=grafana_prometheus_url, dashboards_path=grafana_dashboards_path):
        click.echo(str(path))
    # issue 14: the Splunk app
    from siemhub.dashboards import splunk as splunk_app

    for path in splunk_app.write(out, index=splunk_index):
        click.echo(str(path))


@dashboards.command("install")
@click.option("--kibana-url", help="e.g. https://kibana.example:5601")
@click.option("--api-key", envvar="KIBANA_API_KEY", help="API key (or env KIBANA_API_KEY)")
@click.option("--username", envvar="KIBANA_USERNAME")
@click.option("--password", envvar="KIBANA_PASSWORD", help="(or env KIBANA_PASSWORD; never echoed)")
@click.option("--space", help="Kibana space id (default space when omitted)")
@click.option("--ca-certs", type=click.Path(dir_okay=False), help="CA bundle to verify Kibana's certificate")
@click.option("--insecure", is_flag=True, help="skip TLS verification")
@click.option("--no-rules", is_flag=True, help="import only the saved objects, not the detection rules")
@_dv
# --- Grafana (issue 15) ---
@click.option("--grafana-url", help="e.g. https://grafana.example:3000 (the Grafana dashboards, HTTP API)")
@click.option("--grafana-token", envvar="GRAFANA_TOKEN", help="service account token, or ${ENV} / ${file:PATH} "
              "(or env GRAFANA_TOKEN; never echoed)")
@click.option("--grafana-ca-certs", type=click.Path(dir_okay=False), help="CA bundle to verify Grafana's certificate")
@click.option("--grafana-folder", default="siemhub", show_default=True, help="folder title (uid: siemhub)")
# --- Splunk (issue 14) ---
@click.option("--splunk-url", help="Splunk management URL, e.g. https://splunk.example:8089 (issue 14)")
@click.option("--splunk-token", envvar="SPLUNK_TOKEN", help="Splunk authentication token (or env SPLUNK_TOKEN)")
@click.option("--splunk-username", envvar="SPLUNK_USERNAME")
@click.option("--splunk-password", envvar="SPLUNK_PASSWORD", help="(or env SPLUNK_PASSWORD; never echoed)")
@click.option("--splunk-index", default="siemhub", show_default=True, help="index to create and search")
def dashboards_install(kibana_url: str | None, api_key: str | None, username: str | None, password: str | None,
                       space: str | None, ca_certs: str | None, insecure: bool, no_rules: bool,
                       index_pattern: str, data_view_id: str, grafana_url: str | None = None,
                       grafana_token: str | None = None, grafana_ca_certs: str | None = None,
                       grafana_folder: str = "siemhub", splunk_url: str | None = None, splunk_token: str | None = None,
                       splunk_username: str | None = None, splunk_password: str | None = None,
                       splunk_index: str = "siemhub") -> None:
    """Import them into Kibana (saved-objects and detection-rules import APIs, overwrite on), post the
    Grafana dashboards to Grafana (folder, then dashboards with overwrite) and/or install the Splunk
    app's index, searches and dashboard through Splunk's REST API."""
    if not kibana_url and not grafana_url and not splunk_url:
        raise click.UsageError("give --kibana-url, --grafana-url or both, and/or --splunk-url")
    if insecure:
        click.echo("siemhub: warning: TLS verification is off (--insecure)", err=True)
    if grafana_url:
        from siemhub.dashboards.grafana import install as grafana_install

        try:
            token = grafana_install.resolve_secret(grafana_token, "--grafana-token")
            grafana_install.install(grafana_url, token=token, ca_certs=grafana_ca_certs, folder_title=grafana_folder,
                                    progress=lambda m: click.echo(m, err=True))
        except grafana_install.InstallError as exc:
            click.echo(f"siemhub dashboards install: {exc}", err=True)
            sys.exit(1)
    if kibana_url:
        from siemhub.dashboards import kibana

        try:
            done = kibana.install(kibana_url, api_key=api_key, username=username, password=password, space=space,
                                  ca_certs=ca_certs, insecure=insecure, rules=not no_rules,
                                  index_pattern=index_pattern, data_view_id=data_view_id)
        except kibana.InstallError as exc:
            click.echo(f"siemhub dashboards install: {exc}", err=True)
            sys.exit(1)
        for name, n in done.items():
            click.echo(f"{name}: {n} objects imported")
    if splunk_url:  # issue 14
        from siemhub.dashboards.splunk import manage

        try:
            service = manage.connect(splunk_url, token=splunk_token, username=splunk_username,
                                     password=splunk_password, ca_certs=ca_certs, insecure=insecure)
            report = manage.install(service, index=splunk_index)
        except manage.ManageError as exc:
            click.echo(f"siemhub dashboards install: splunk: {exc}", err=True)
            sys.exit(1)
        for line in report.lines():
            click.echo(f"splunk: {line}")


# --- issue 14: Splunk ---------------------------------------------------------------------------


@main.group()
def splunk() -> None:
    """Splunk: check that the agents' events arrive (splunk-sdk, REST API)."""


@splunk.command("check")
@click.option("--splunk-url", required=True, help="Splunk management URL, e.g. https://splunk.example:8089")
@click.option("--splunk-token", envvar="SPLUNK_TOKEN", help="authentication token (or env SPLUNK_TOKEN)")
@click.option("--splunk-username", envvar="SPLUNK_USERNAME")
@click.option("--splunk-password", envvar="SPLUNK_PASSWORD", help="(or env SPLUNK_PASSWORD; never echoed)")
@click.option("--index", default="siemhub", show_default=True)
@click.option("--window", default=900, show_default=True, help="seconds of agent_status events to look at")
@click.option("--max-lag", default=60.0, show_default=True, help="fail when an agent's mean lag exceeds this (s)")
@click.option("--ca-certs", type=click.Path(dir_okay=False), help="CA bundle to verify Splunk's certificate")
@click.option("--insecure", is_flag=True, help="skip TLS verification")
def splunk_check(splunk_url: str, splunk_token: str | None, splunk_username: str | None,
                 splunk_password: str | None, index: str, window: int, max_lag: float, ca_certs: str | None,
                 insecure: bool) -> None:
    """Search Splunk for the agents' own agent_status events and report the delivery lag. Exit 1 when
    none arrived in the window or an agent's mean lag is above --max-lag."""
    from siemhub.dashboards.splunk import manage

    if insecure:
        click.echo("siemhub: warning: TLS verification is off (--insecure)", err=True)
    try:
        service = manage.connect(splunk_url, token=splunk_token, username=splunk_username,
                                 password=splunk_password, ca_certs=ca_certs, insecure=insecure, namespace_app="search")
        agents = manage.check(service, index=index, window=window)
    except manage.ManageError as exc:
        click.echo(f"siemhub splunk check: {exc}", err=True)
        sys.exit(1)
    if not agents:
        click.echo(f"siemhub splunk check: no agent_status events in index {index} in the last {window}s "
                   "(is an agent's splunk exporter running with status_interval > 0?)", err=True)
        sys.exit(1)
    bad = False
    for a in agents:
        slow = a.lag_avg > max_lag
        bad = bad or slow
        click.echo(f"{a.host}: {a.events} status events, last {a.last_event_age:.0f}s ago, "
                   f"delivery lag mean {a.lag_avg:.1f}s max {a.lag_max:.1f}s{'  (above --max-lag)' if slow else ''}")
    if bad:
        sys.exit(1)


# --- policies (issue 18: Tetragon TracingPolicy import) ---
@main.group()
def policies() -> None:
    """Policy files (docs/policies.md)."""


@policies.command("import-tetragon")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out-dir", type=click.Path(file_okay=False), help="write <name>.yaml files here "
              "(default: print the policies on stdout)")
def policies_import_tetragon(files: tuple[str, ...], out_dir: str | None) -> None:
    """Convert Tetragon TracingPolicies to siemhub policies; says, per kprobe, selector and action, what
    could not carry over and why (on stderr)."""
    from pathlib import Path

    from siemhub.collector import tetragon_import

    written = 0
    for f in files:
        try:
            converted = tetragon_import.convert_text(Path(f).read_text(), f)
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, the others still convert
            click.echo(f"{f}: not converted: {exc}", err=True)
            continue
        if not converted:
            click.echo(f"{f}: no TracingPolicy in it", err=True)
        for c in converted:
            for note in c.notes:
                click.echo(f"{f}: {c.name}: {note}", err=True)
            if not c.policy:
                continue
            written += 1
            if out_dir:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                target = Path(out_dir) / f"{c.name}.yaml"
                target.write_text(f"# converted from {f} by siemhub policies import-tetragon\n{c.yaml()}")
                click.echo(f"{f}: {c.name}: {len(c.policy['rules'])} rules -> {target}", err=True)
            else:
                click.echo(f"# converted from {f}\n---\n{c.yaml()}", nl=False)
    if not written:
        sys.exit(1)
