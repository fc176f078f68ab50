"""Tests for siemhub.collector.config: the embedded default, a documented config, and every kind of
broken config reported as `file:line: field: reason`."""
from __future__ import annotations

import pytest

from siemhub.collector import config
from siemhub.collector.config import ConfigError
from siemhub.collector.sensors.process import ProcessSensorConfig
from siemhub.exporters.file import FileConfig, FileExporter
from siemhub.exporters.stdout import StdoutExporter

DOCUMENTED = """\
sensors:
  process: {}
exporters:
  out: {type: file, path: /tmp/siemhub-check/events.jsonl, format: native}
routes:
  - {name: everything, to: [out]}
"""

# The base every broken case starts from; line numbers below refer to the text of each case.
BASE = """\
exporters:
  out:
    type: file
    path: events.jsonl
routes:
  - name: everything
    to: [out]
"""


def write(tmp_path, text: str | bytes, name: str = "agent.yaml") -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


def problems_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    err = info.value
    assert str(err) == "\n".join(err.problems)
    return err.problems


# --- configs that load ------------------------------------------------------------------------------


def test_embedded_default_loads():
    cfg = config.load(None)
    assert cfg.source == "<embedded default.yaml>"
    assert set(cfg.exporters) == {"file", "live"}
    file_cls, file_cfg = cfg.exporters["file"]
    live_cls, live_cfg = cfg.exporters["live"]
    assert file_cls is FileExporter and file_cfg.path == "var/events.jsonl" and file_cfg.format == "native"
    assert live_cls is StdoutExporter and live_cfg.format == "compact"
    assert (live_cfg.batch.max_events, live_cfg.batch.max_wait) == (256, 0.2)
    a = cfg.agent
    assert a.sensors.process is not None
    assert [(r.name, r.to, r.final) for r in a.routes] == [("everything", ["file", "live"], False)]
    assert a.metrics.listen == "127.0.0.1:9464"
    assert a.status_interval == 60


def test_documented_config_loads_exactly_as_written(tmp_path):
    path = write(tmp_path, DOCUMENTED)
    cfg = config.load(path)
    assert cfg.source == path
    assert list(cfg.exporters) == ["out"]
    cls, ecfg = cfg.exporters["out"]
    assert cls is FileExporter
    assert isinstance(ecfg, FileConfig)
    assert (ecfg.type, ecfg.path, ecfg.format) == ("file", "/tmp/siemhub-check/events.jsonl", "native")
    # everything not written takes its documented default
    assert ecfg.model_dump() == FileConfig(type="file", path="/tmp/siemhub-check/events.jsonl").model_dump()
    a = cfg.agent
    assert a.sensors.process == ProcessSensorConfig()
    assert len(a.routes) == 1
    r = a.routes[0]
    assert (r.name, r.to, r.final) == ("everything", ["out"], False)
    assert r.match == config.MatchConfig()
    assert a.metrics == config.MetricsConfig()
    # parse() of the same text gives the same result, with its own source name
    again = config.parse(DOCUMENTED, "other.yaml")
    assert again.agent == a and again.source == "other.yaml"


# --- broken configs: one problem each, exact `file:line: field` prefix -----------------------------------

BROKEN = {
    "yaml_syntax": (
        "exporters:\n"
        "  out: {type: file, path: events.jsonl\n"
        "routes:\n"
        "  - {name: everything, to: [out]}\n",
        3, "YAML syntax error: ",
    ),
    "unknown_top_level_key": (BASE + "colour: red\n", 8, "colour: unknown field"),
    "unknown_key_in_exporter": (
        BASE.replace("    path: events.jsonl\n", "    path: events.jsonl\n    compression: zstd\n"),
        5, "exporters.out.compression: unknown field",
    ),
    "missing_required_field": (
        BASE.replace("    path: events.jsonl\n", ""), 2, "exporters.out.path: Field required",
    ),
    "wrong_type": (
        BASE.replace("    path: events.jsonl\n", "    path: events.jsonl\n    batch:\n      max_events: many\n"),
        6, "exporters.out.batch.max_events: Input should be a valid integer",
    ),
    "unknown_exporter_type": (
        BASE.replace("type: file", "type: pigeon"), 3, "exporters.out.type: unknown exporter type 'pigeon'",
    ),
    "exporter_without_type": (
        BASE.replace("    type: file\n", ""), 2, "exporters.out: needs a 'type'",
    ),
    "route_names_missing_exporter": (
        BASE.replace("to: [out]", "to: [out, archive]"), 7, "routes[0].to[1]: unknown exporter 'archive'",
    ),
    "route_target_not_a_string": (
        BASE.replace("to: [out]", "to: [[out]]"), 7, "routes[0].to[0]: Input should be a valid string",
    ),
    "route_without_targets": (
        BASE.replace("to: [out]", "to: []"), 7, "routes[0].to: List should have at least 1 item",
    ),
    "format_not_supported": (
        BASE.replace("    path: events.jsonl\n", "    path: events.jsonl\n    format: compact\n"),
        5, "exporters.out.format: format 'compact' is not supported by file (supported: native,",
    ),
    "bad_severity": (
        BASE.replace("    to: [out]\n", "    to: [out]\n    match: {min_severity: urgent}\n"),
        8, "routes[0].match.min_severity: Input should be 'info', 'low', 'medium', 'high' or 'critical' "
           "(got 'urgent')",
    ),
    "metrics_listen_without_port": (
        BASE + "metrics:\n  listen: localhost\n", 9, "metrics.listen: Value error, expected host:port",
    ),
    "metrics_listen_port_out_of_range": (
        BASE + "metrics:\n  listen: 127.0.0.1:99999\n", 9, "metrics.listen: Value error, expected host:port",
    ),
    "args_max_bytes_not_power_of_two": (
        "sensors:\n  process:\n    args_max_bytes: 3000\n" + BASE,
        3, "sensors.process.args_max_bytes: Value error, must be a power of two",
    ),
    "unset_environment_variable": (
        BASE.replace("path: events.jsonl", "path: ${SIEMHUB_TEST_UNSET_VAR}/events.jsonl"),
        4, "exporters.out.path: environment variable SIEMHUB_TEST_UNSET_VAR is not set",
    ),
    "empty_file": ("", 1, "(top level): the file is empty"),
    "only_comments": ("# nothing here yet\n", 1, "(top level): the file is empty"),
    "top_level_list": ("- exporters\n- routes\n", 1, "(top level): expected a mapping of settings"),
    "top_level_scalar": ("just words\n", 1, "(top level): expected a mapping of settings"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_config_names_file_line_and_field(tmp_path, monkeypatch, case):
    monkeypatch.delenv("SIEMHUB_TEST_UNSET_VAR", raising=False)
    text, line, expected = BROKEN[case]
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: {expected}"), problems[0]


def test_unreadable_and_non_utf8_files(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert problems_of(missing) == [f"{missing}:0: cannot read: No such file or directory"]
    binary = write(tmp_path, b"exporters: \xff\xfe\n", "binary.yaml")
    assert problems_of(binary) == [f"{binary}:0: not UTF-8 text"]


def test_every_problem_is_reported_sorted_by_line(tmp_path):
    text = (
        "metrics: {listen: nowhere}\n"  # 1
        "routes:\n"  # 2
        "  - name: everything\n"  # 3
        "    to: [out, missing]\n"  # 4
        "colour: red\n"  # 5
        "exporters:\n"  # 6
        "  out:\n"  # 7
        "    type: file\n"  # 8
        "  other:\n"  # 9
        "    type: pigeon\n"  # 10
    )
    path = write(tmp_path, text)
    problems = problems_of(path)
    expected = [
        (1, "metrics.listen: Value error, expected host:port"),
        (4, "routes[0].to[1]: unknown exporter 'missing'"),
        (5, "colour: unknown field"),
        (7, "exporters.out.path: Field required"),
        (10, "exporters.other.type: unknown exporter type 'pigeon'"),
    ]
    assert len(problems) == len(expected), problems
    for got, (line, prefix) in zip(problems, expected):
        assert got.startswith(f"{path}:{line}: {prefix}"), got


# --- environment variables -----------------------------------------------------------------------------

ENV_CONFIG = """\
exporters:
  out:
    type: file
    path: ${SIEMHUB_T_DIR}/events-${SIEMHUB_T_NAME:-default}.jsonl
    batch: {max_events: "${SIEMHUB_T_BATCH:-64}"}
routes:
  - {name: everything, to: [out]}
"""


def test_env_reference_and_default(monkeypatch):
    monkeypatch.setenv("SIEMHUB_T_DIR", "spool")
    monkeypatch.delenv("SIEMHUB_T_NAME", raising=False)
    monkeypatch.delenv("SIEMHUB_T_BATCH", raising=False)
    ecfg = config.parse(ENV_CONFIG, "env.yaml").exporters["out"][1]
    assert ecfg.path == "spool/events-default.jsonl"
    assert ecfg.batch.max_events == 64


def test_env_value_wins_over_default(monkeypatch):
    monkeypatch.setenv("SIEMHUB_T_DIR", "/srv/x")
    monkeypatch.setenv("SIEMHUB_T_NAME", "node7")
    monkeypatch.setenv("SIEMHUB_T_BATCH", "7")
    ecfg = config.parse(ENV_CONFIG, "env.yaml").exporters["out"][1]
    assert ecfg.path == "/srv/x/events-node7.jsonl"
    assert ecfg.batch.max_events == 7


def test_env_set_to_empty_string_is_used_not_the_default(monkeypatch):
    monkeypatch.setenv("SIEMHUB_T_DIR", "d")
    monkeypatch.setenv("SIEMHUB_T_NAME", "")
    ecfg = config.parse(ENV_CONFIG, "env.yaml").exporters["out"][1]
    assert ecfg.path == "d/events-.jsonl"


SECRET = "s3cr3t-hunter2-token"


def test_secret_not_echoed_when_another_field_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("SIEMHUB_T_SECRET", SECRET)
    text = BASE.replace("path: events.jsonl",
                        "path: /spool/${SIEMHUB_T_SECRET}/events.jsonl\n    batch: {max_events: many}")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems[0].startswith(f"{path}:5: exporters.out.batch.max_events: ")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


@pytest.mark.parametrize(("old", "new", "line", "prefix"), [
    ("    path: events.jsonl\n", "    path: events.jsonl\n    fsync: ${SIEMHUB_T_SECRET}\n",
     5, "exporters.out.fsync: Input should be 'never', 'batch' or 'interval' (got '${SIEMHUB_T_SECRET}')"),
    ("    path: events.jsonl\n", "    path: events.jsonl\n    format: ${SIEMHUB_T_SECRET}\n",
     5, "exporters.out.format: format '${SIEMHUB_T_SECRET}' is not supported by file"),
    ("type: file", "type: ${SIEMHUB_T_SECRET}",
     3, "exporters.out.type: unknown exporter type '${SIEMHUB_T_SECRET}'"),
    ("to: [out]", 'to: [out, "${SIEMHUB_T_SECRET}"]',
     7, "routes[0].to[1]: unknown exporter '${SIEMHUB_T_SECRET}'"),
], ids=["literal_field", "format", "exporter_type", "route_target"])
def test_secret_not_echoed_when_its_own_field_fails(tmp_path, monkeypatch, old, new, line, prefix):
    # The message shows the reference as written, never the value it expanded to.
    monkeypatch.setenv("SIEMHUB_T_SECRET", SECRET)
    path = write(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert len(info.value.problems) == 1, info.value.problems
    assert info.value.problems[0].startswith(f"{path}:{line}: {prefix}"), info.value.problems[0]
    assert SECRET not in str(info.value)


def test_secret_from_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-from-file\n")
    cfg = config.parse(
        "exporters:\n  out: {type: file, path: /tmp/x.jsonl}\nroutes: [{name: all, to: [out]}]\n"
        f"metrics: {{auth: {{username: prom, password: \"${{file:{secret}}}\"}}}}\n", "c.yaml")
    assert cfg.agent.metrics.auth.password == "s3cr3t-from-file"
    with pytest.raises(config.ConfigError) as err:
        config.parse(
            "exporters:\n  out: {type: file, path: /tmp/x.jsonl}\nroutes: [{name: all, to: [out]}]\n"
            f"metrics: {{auth: {{username: prom, password: \"${{file:{tmp_path}/missing}}\"}}}}\n", "c.yaml")
    assert str(err.value).startswith("c.yaml:4: metrics.auth.password: cannot read secret file")


def test_metrics_endpoint_with_basic_auth():
    import base64
    import urllib.error
    import urllib.request

    from siemhub.collector.metrics import Metrics

    m = Metrics()
    m.events_unrouted.inc(3)
    server, _thread = m.serve("127.0.0.1", 0, "prom", "pa55")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=5)
        assert denied.value.code == 401
        bad = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"prom:nope").decode()})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, timeout=5)
        good = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(b"prom:pa55").decode()})
        body = urllib.request.urlopen(good, timeout=5).read().decode()
        assert "siemhub_events_unrouted_total 3.0" in body
    finally:
        server.shutdown()
