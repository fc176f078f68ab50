"""The Splunk app (dashboards/splunk): its .conf files parse (Python's configparser, which reads the
INI-style format Splunk's .conf files use), every shipped policy has a detection search, the Dashboard
Studio view is valid, and every field a saved search or the dashboard names exists in the events the
Splunk exporter emits."""

from __future__ import annotations

import configparser
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET

from click.testing import CliRunner

from siemhub.collector.core.event import Event, PolicyAction, decode_json
from siemhub.dashboards import splunk as app
from siemhub.exporters.splunk import SplunkConfig, SplunkExporter
from tests.unit.exporters.formats.test_ecs_format import EVENTS, EXTRA

# Fields Splunk itself gives every event, and what searches compute.
SPLUNK_FIELDS = {"_time", "_indextime", "host", "source", "sourcetype", "index", "eventtype", "tag", "count"}


def parse_conf(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    cp.optionxform = str  # Splunk's keys are case-sensitive
    cp.SECTCRE = re.compile(r"\[(?P<header>.*)\]")  # .meta files use `[]` for the app-wide stanza
    cp.read_string(text)
    return cp


def test_every_conf_file_parses():
    files = app.render()
    confs = {p: parse_conf(t) for p, t in files.items() if p.endswith((".conf", ".meta"))}
    assert set(confs) == {f"default/{n}.conf" for n in
                          ("app", "props", "eventtypes", "tags", "fields", "macros", "savedsearches")} | {
        "metadata/default.meta"}
    props = confs["default/props.conf"]
    assert props.sections() == [f"siemhub:{c}" for c in ("process", "file", "network", "privilege", "policy", "agent")]
    for st in props.sections():
        assert props[st]["KV_MODE"] == "json" and props[st]["TIME_FORMAT"].startswith("%Y-%m-%dT%H:%M:%S")
        assert re.search(props[st]["TIME_PREFIX"], '{"timestamp": "2023-11-14T22:13:27.000000123Z"}')
    tags = confs["default/tags.conf"]
    assert dict(tags["eventtype=siemhub_process"]) == {"process": "enabled", "report": "enabled"}
    assert dict(tags["eventtype=siemhub_file"]) == {"endpoint": "enabled", "filesystem": "enabled"}
    assert dict(tags["eventtype=siemhub_network"]) == {"network": "enabled", "communicate": "enabled"}
    assert set(confs["default/eventtypes.conf"].sections()) == {s.split("=")[1] for s in tags.sections()}
    assert confs["default/macros.conf"]["siemhub_index"]["definition"] == 'index="siemhub"'
    assert parse_conf(app.render(index="sec")["default/macros.conf"])["siemhub_index"]["definition"] == 'index="sec"'
    assert confs["default/app.conf"]["package"]["id"] == app.APP


def test_a_detection_search_per_shipped_policy():
    from siemhub.collector.policy import library_dir, load_files

    names = {lp.policy.name for lp in load_files([library_dir()])}
    assert len(names) >= 8
    ss = parse_conf(app.render()["default/savedsearches.conf"])
    assert {s.removeprefix("siemhub - ") for s in ss.sections()} == names
    for s in ss.sections():
        name = s.removeprefix("siemhub - ")
        assert f'siemhub_policy="{name}"' in ss[s]["search"] and ss[s]["cron_schedule"]
        assert ss[s]["is_scheduled"] == "1" and 1 <= int(ss[s]["alert.severity"]) <= 6


def test_dashboard_studio_view():
    xml = app.render()[f"default/data/ui/views/{app.VIEW}.xml"]
    root = ET.fromstring(xml)
    assert root.tag == "dashboard" and root.get("version") == "2"
    d = json.loads(root.find("definition").text)
    vizzes = d["visualizations"]
    assert {v["title"] for v in vizzes.values()} == {
        "Process executions over time", "Top binaries", "kubectl exec sessions", "Policy hits", "Network destinations"}
    for v in vizzes.values():
        assert v["dataSources"]["primary"] in d["dataSources"]
    assert {i["item"] for i in d["layout"]["structure"]} == set(vizzes)


# --- every field a search names is emitted ---


def _splunk_names(obj: dict, prefix: str = "") -> set[str]:
    """The field names Splunk's KV_MODE=json gives a JSON object: arrays as `key{}`, objects `key.sub`."""
    out = set()
    for k, v in obj.items():
        name = prefix + k
        if isinstance(v, dict):
            out |= _splunk_names(v, name + ".")
        elif isinstance(v, list):
            out.add(name + "{}")
        else:
            out.add(name)
    return out


def emitted_fields() -> set[str]:
    evs = [decode_json(t) for t in [*EVENTS.values(), *EXTRA]]
    kubectl = next(e for e in evs if e.type == "process_exec")
    evs.append(Event(**{**{f: getattr(kubectl, f) for f in kubectl.__struct_fields__},
                        "tags": ["policy:kubectl-exec", "kubectl-exec"]}))
    connect = next(e for e in evs if e.type == "network_accept")
    evs.append(Event(**{**{f: getattr(connect, f) for f in connect.__struct_fields__}, "type": "network_connect"}))
    evs.append(Event(**{**{f: getattr(kubectl, f) for f in kubectl.__struct_fields__}, "type": "policy_action",
                        "policy": PolicyAction(policy="kubectl-exec", rule="exec-into-container", action="post")}))
    ex = SplunkExporter("s", SplunkConfig.model_validate({"type": "splunk", "url": "http://x:1", "token": "t"}))
    names = set(SPLUNK_FIELDS)
    for line in ex.encode(evs).items:
        env = json.loads(line)
        names |= _splunk_names(env["event"]) | set(env.get("fields", {}))
    return names


_OPTION = re.compile(r"^\w+=")
_GENERATED = {"count"}


def spl_fields(query: str) -> set[str]:
    """Field names an SPL pipeline reads: field=value terms of the search, function arguments, `by`
    clauses and the field lists of table/fields/top/fillnull/sort. Fields a search names with `as` are
    its own (excluded from then on)."""
    q = re.sub(r"`[^`]*`", " ", query)
    q = re.sub(r'"[^"]*"', '""', q)
    used: set[str] = set()
    defined: set[str] = set()
    for n, part in enumerate(q.split("|")):
        words = part.strip().split()
        if not words:
            continue
        if n == 0:  # the search: field=value terms
            used |= {m for m in re.findall(r"([A-Za-z_][\w.{}]*)\s*!?=", part)}
            continue
        cmd, args = words[0], words[1:]
        for m in re.findall(r"\bas\s+(\w+)", part):
            defined.add(m)
        text = re.sub(r"\bas\s+\w+", " ", " ".join(args))
        used |= set(re.findall(r"\w+\(([A-Za-z_][\w.{}]*)\)", text))
        text = re.sub(r"\w+\([^)]*\)", " ", text)
        if cmd in ("stats", "timechart", "chart", "eventstats"):
            _, by, rest = text.partition(" by ")
            text = rest if by else ""
        elif cmd == "sort":
            text = text.replace("-", " ").replace("+", " ")
        elif cmd not in ("table", "fields", "top", "rare", "fillnull", "dedup"):
            continue
        for w in text.replace(",", " ").split():
            if not _OPTION.match(w) and not w.isdigit() and w not in ('""',):
                used.add(w)
    return used - defined - _GENERATED


def all_queries() -> list[str]:
    files = app.render()
    ss = parse_conf(files["default/savedsearches.conf"])
    queries = [ss[s]["search"] for s in ss.sections()]
    ev = parse_conf(files["default/eventtypes.conf"])
    queries += [ev[s]["search"] for s in ev.sections()]
    d = json.loads(ET.fromstring(files[f"default/data/ui/views/{app.VIEW}.xml"]).find("definition").text)
    queries += [ds["options"]["query"] for ds in d["dataSources"].values()]
    return queries


def test_spl_field_extraction():
    assert spl_fields('`m` sourcetype="x" a="1" | fillnull value="-" b c | stats count values(d) as e by f g '
                      '| sort - count | table e f') == {"sourcetype", "a", "b", "c", "d", "f", "g"}


def test_every_field_a_search_or_dashboard_names_is_emitted():
    emitted = emitted_fields()
    missing = {}
    for q in all_queries():
        lost = spl_fields(q) - emitted
        if lost:
            missing[q[:80]] = sorted(lost)
    assert missing == {}
    assert len(all_queries()) >= 8 + 6 + 5


def test_tarball_and_cli_render(tmp_path):
    result = CliRunner().invoke(__import__("siemhub.collector.cli", fromlist=["main"]).main,
                                ["dashboards", "render", "--out", str(tmp_path), "--splunk-index", "sec"])
    assert result.exit_code == 0, result.output
    tgz = tmp_path / app.TARBALL
    assert str(tgz) in result.output
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        assert f"{app.APP}/default/app.conf" in names and f"{app.APP}/metadata/default.meta" in names
        macros = tar.extractfile(f"{app.APP}/default/macros.conf").read().decode()
    assert 'index="sec"' in macros
    assert (tmp_path / app.APP / "default" / "savedsearches.conf").exists()
    # deterministic: the same rendering gives the same archive
    assert app.tarball(app.render()) == app.tarball(app.render())
    assert io.BytesIO(app.tarball(app.render())).getbuffer().nbytes > 1000
