"""Kibana saved objects and detection rules: the ndjson parses, every visualization, saved search and
rule query runs against indexed siemhub events and finds them, and `siemhub dashboards install`
sends exactly the requests Kibana documents.

The server is noida-db, an Elasticsearch API *emulator* (not Elasticsearch); there is no Kibana here:
KQL is translated by the small translator below (only the subset the bundled objects use: `field :
"value"`, `field : value*` wildcards, `field : *` exists, `field : (a or b)`, and/or/not, parentheses),
and `install` is checked against a local HTTP stub that verifies each request the way Kibana's
saved-objects and detection-rules import APIs specify them. Pod-enriched events come from the process
sensor's decode path with a fake kubelet tree, and (marked bpf) from a real agent whose process runs in
a kubepods-style cgroup.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from siemhub.collector.cli import main as cli
from siemhub.collector.core.event import Event, decode_json
from siemhub.dashboards import kibana
from siemhub.exporters.base import Outcome
from siemhub.exporters.elasticsearch import ElasticsearchConfig, ElasticsearchExporter
from siemhub.exporters.formats import ecs
from tests.servers.noida import NoidaServer, noida_binary

# --- KQL subset -> Elasticsearch query DSL -------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(>=|<=|>|<|:)|([^\s():<>"]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"cannot tokenize KQL at {text[pos:]!r}"
        out.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    return out


def kql_to_dsl(text: str) -> dict:
    toks = _tokens(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take(expected=None):
        nonlocal pos
        tok = toks[pos]
        assert expected is None or tok == expected, f"expected {expected!r}, got {tok!r} in {text!r}"
        pos += 1
        return tok

    def value_query(field, raw):
        if raw.startswith('"'):
            return {"term": {field: json.loads(raw)}}
        if raw == "*":
            return {"exists": {"field": field}}
        if "*" in raw:
            return {"wildcard": {field: {"value": raw}}}
        return {"term": {field: int(raw) if raw.lstrip("-").isdigit() else raw}}

    def expr():
        parts = [conj()]
        while peek() == "or":
            take()
            parts.append(conj())
        return parts[0] if len(parts) == 1 else {"bool": {"should": parts, "minimum_should_match": 1}}

    def conj():
        parts = [neg()]
        while peek() == "and":
            take()
            parts.append(neg())
        return parts[0] if len(parts) == 1 else {"bool": {"filter": parts}}

    def neg():
        if peek() == "not":
            take()
            return {"bool": {"must_not": [neg()]}}
        return primary()

    def primary():
        if peek() == "(":
            take("(")
            q = expr()
            take(")")
            return q
        field = take()
        op = take()
        if op in (">=", "<=", ">", "<"):
            return {"range": {field: {{">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}[op]: json.loads(take())}}}
        assert op == ":", f"unsupported operator {op!r} in {text!r}"
        if peek() == "(":
            take("(")
            values = [value_query(field, take())]
            while peek() == "or":
                take()
                values.append(value_query(field, take()))
            take(")")
            return values[0] if len(values) == 1 else {"bool": {"should": values, "minimum_should_match": 1}}
        return value_query(field, take())

    q = expr()
    assert pos == len(toks), f"trailing tokens in {text!r}: {toks[pos:]}"
    return q


def test_kql_translation_is_exact():
    assert kql_to_dsl('event.action : "exec" and process.executable : (/tmp/* or /dev/shm/*)') == {"bool": {"filter": [
        {"term": {"event.action": "exec"}},
        {"bool": {"should": [{"wildcard": {"process.executable": {"value": "/tmp/*"}}},
                             {"wildcard": {"process.executable": {"value": "/dev/shm/*"}}}], "minimum_should_match": 1}}]}}
    assert kql_to_dsl("siemhub.exit.signal : * and not x : 3") == {"bool": {"filter": [
        {"exists": {"field": "siemhub.exit.signal"}}, {"bool": {"must_not": [{"term": {"x": 3}}]}}]}}


def aggs_to_dsl(vis_aggs: list[dict]) -> dict:
    """Kibana aggregation-based visualization aggs -> nested ES aggs (buckets in order, metrics inside)."""
    metrics = {a["id"]: {a["type"]: {"field": a["params"]["field"]}} for a in vis_aggs
               if a["schema"] == "metric" and a["type"] != "count"}
    root: dict = {}
    node = root
    for a in (a for a in vis_aggs if a["schema"] != "metric"):
        p = a["params"]
        if a["type"] == "date_histogram":
            body = {"date_histogram": {"field": p["field"], "fixed_interval": "1h", "min_doc_count": p["min_doc_count"]}}
        else:
            assert a["type"] == "terms", a
            body = {"terms": {"field": p["field"], "size": p["size"]}}
        node[a["id"]] = body
        node = body.setdefault("aggs", {})
    node.update(metrics)
    return root


# --- indexed events --------------------------------------------------------------------------------

_N = 0


def _exec(binary, args, parent_binary="/usr/bin/bash", *, etype="process_exec", exit_=None, pod=True):
    global _N
    _N += 1
    pod_json = (',"pod":{"namespace":"shop","name":"web-1","container":{"name":"web","image":"nginx:1.25"}}'
                if pod else "")
    ev = {"id": f"dash-{_N}", "time": "2026-11-25T22:21:27.507097186Z", "type": etype, "schema_version": "1.0",
          "severity": "info", "node": {"name": "node-a"}}
    text = json.dumps(ev)[:-1] + (
        f',"process":{{"exec_id":"e{_N}","pid":{1000 + _N},"ppid":99,"uid":33,"euid":33,"binary":{json.dumps(binary)},'
        f'"args":{json.dumps(args)},"cwd":"/"{pod_json}}},'
        f'"parent":{{"exec_id":"p{_N}","pid":99,"binary":{json.dumps(parent_binary)},'
        f'"args":[{json.dumps(parent_binary.rsplit("/", 1)[-1])}]}}'
        + (f',"exit":{json.dumps(exit_)}' if exit_ else "") + "}")
    return decode_json(text)


def kubectl_exec() -> Event:
    """A shell started with `kubectl exec` in a pod: it joined the container's namespaces (native fields
    as the process sensor writes them; the flag itself is tested against the kernel in tests/e2e)."""
    return decode_json(
        '{"id":"dash-kexec","time":"2026-11-25T22:21:28Z","type":"process_exec","schema_version":"1.2",'
        '"severity":"info","node":{"name":"node-a"},"process":{"exec_id":"kx","pid":4000,"ppid":3990,"uid":0,'
        '"euid":0,"binary":"/bin/sh","args":["sh","-i"],"cwd":"/","flags":["namespace_entry"],'
        '"entered_namespaces":["mnt","pid","net","uts","ipc"],"container":{"id":"' + "a1" * 32 + '",'
        '"runtime":"containerd"},"pod":{"namespace":"shop","name":"web-7d9f-x2k","container":{"name":"nginx"},'
        '"uid":"1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9","qos_class":"Burstable"}},'
        '"parent":{"exec_id":"kp","pid":3990,"binary":"/usr/bin/runc","args":["runc","exec"]}}')


def dashboard_events():
    status = decode_json('{"id":"dash-status","time":"2026-11-25T22:21:30Z","type":"agent_status","schema_version":"1.0",'
                         '"severity":"medium","node":{"name":"node-a"},"status":{"counters":{"process_ringbuf_lost_exec":2,'
                         '"exporter_es_dropped_queue_full":1,"process_decode_errors":1}}}')
    return [
        _exec("/usr/bin/curl", ["curl", "-s", "http://x"]),
        _exec("/tmp/x86", ["/tmp/x86"]),
        _exec("/bin/sh", ["sh", "-c", "id"], parent_binary="/usr/sbin/nginx"),
        _exec("/usr/bin/nsenter", ["nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "sh"]),
        _exec("/bin/sleep", ["sleep", "100"], etype="process_exit", exit_={"signal": "SIGKILL", "duration_ns": 10}),
        _exec("/bin/true", ["true"], etype="process_exit", exit_={"code": 0, "duration_ns": 10}),
        _exec("/usr/bin/id", ["id"], pod=False),  # on the host: in no pod's series
        kubectl_exec(),
        status,
        *_sensor_bodies(),
    ]


# Pods found the way the agent finds them: exec messages decoded by the process sensor, with the pod uid
# in the cgroup names and a kubelet tree (/var/log/pods, /var/log/containers) naming the pods.
PODS = {  # (namespace, pod, uid, container, container id): execs
    ("shop", "web-7d9f-x2k", "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", "nginx", "a1" * 32): 3,
    ("shop", "cart-0", "2e3d4c5b-6a59-4786-8695-a4b3c2d1e0f8", "cart", "b2" * 32): 1,
    ("payments", "api-0", "3d4c5b6a-5948-4786-9695-a4b3c2d1e0f7", "api", "c3" * 32): 2,
}


def pod_events(base) -> list[Event]:
    from tests.unit.kmsg import TICK, Harness, add_pod, exec_msg, make_proc

    make_proc(base / "proc", 500, ppid=1, start_ticks=10)
    for (ns, name, uid, cname, cid) in PODS:
        add_pod(base / "k8s", ns, name, uid, {cname: cid})
    h = Harness(base / "proc")
    out, pid = [], 3000
    for (ns, name, uid, cname, cid), n in PODS.items():
        for _ in range(n):
            pid += 1
            out.append(h.one(exec_msg(pid, ppid=500, pstart=10 * TICK, args=[b"/bin/true", ns.encode()], cgroup=(
                f"cri-containerd-{cid}.scope".encode(), f"kubepods-burstable-pod{uid.replace('-', '_')}.slice".encode()))))
    assert all(e.process.pod is not None and e.process.pod.name for e in out)
    return out


def _sensor_bodies() -> list[Event]:
    """One event of each of the file, network and privilege sensors (the ECS format's test cases)."""
    from tests.unit.exporters.formats.test_ecs_format import EXTRA

    bodies = [t for t in EXTRA if any(f'"type":"{k}' in t for k in ("file_", "network_", "privilege_"))]
    connect = next(t for t in bodies if '"type":"network_close"' in t).replace(
        '"type":"network_close"', '"type":"network_connect"').replace('"id":"x-8"', '"id":"x-8c"')
    return [decode_json(t) for t in (*bodies, connect)]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    if noida_binary() is None:
        from tests.conftest import server_unavailable

        server_unavailable("noida-db not installed (servers extra)")
    from elasticsearch import Elasticsearch

    with NoidaServer(tmp_path_factory.mktemp("noida-dash") / "data") as server:
        ex = ElasticsearchExporter("es", ElasticsearchConfig.model_validate(
            {"type": "elasticsearch", "hosts": [server.url], "namespace": "dash"}))
        ex.start()
        events = dashboard_events() + pod_events(tmp_path_factory.mktemp("pods"))
        assert ex.send(ex.encode(events)).outcome is Outcome.DONE
        ex.close()
        with Elasticsearch(server.url) as es:
            es.indices.refresh(index="logs-siemhub.*-dash")
            yield es


def _objects():
    rendered = kibana.render()
    saved = [json.loads(line) for line in rendered[kibana.SAVED_OBJECTS].splitlines()]
    rules = [json.loads(line) for line in rendered[kibana.DETECTION_RULES].splitlines()]
    return saved, rules


def test_ndjson_parses_and_references_resolve():
    saved, rules = _objects()
    by_id = {(o["type"], o["id"]) for o in saved}
    kinds = [o["type"] for o in saved]
    assert kinds.count("index-pattern") == 1 and kinds.count("dashboard") == 1
    assert kinds.count("search") >= 3 and kinds.count("visualization") >= 4
    for o in saved:
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in by_id, f"{o['id']} references missing {ref}"
        for key in ("visState", "panelsJSON", "optionsJSON"):
            if key in o["attributes"]:
                assert isinstance(o["attributes"][key], str) and json.loads(o["attributes"][key]) is not None
        meta = o["attributes"].get("kibanaSavedObjectMeta")
        if meta:
            json.loads(meta["searchSourceJSON"])
    dash = next(o for o in saved if o["type"] == "dashboard")
    assert dash["attributes"]["title"] == "siemhub Security Overview"
    panels = json.loads(dash["attributes"]["panelsJSON"])
    assert {p["panelRefName"] for p in panels} == {r["name"] for r in dash["references"]}
    assert len(rules) >= 3 and all(r["type"] == "query" and r["language"] == "kuery" for r in rules)


def _query_of(o) -> str:
    return json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]


def _awaits(o) -> bool:
    return o["attributes"].get("description", "").startswith("Awaits")


def test_every_visualization_query_and_aggregation_runs_and_hits(indexed):
    saved, _ = _objects()
    for o in (o for o in saved if o["type"] == "visualization"):
        vis = json.loads(o["attributes"]["visState"])
        for a in vis["aggs"]:
            field = a["params"].get("field")
            if field and not _awaits(o):
                assert field in ecs.FIELDS, f"{o['id']}: {field} is not a field siemhub emits"
        resp = indexed.search(index="logs-siemhub.*-dash", query=kql_to_dsl(_query_of(o)),
                              aggs=aggs_to_dsl(vis["aggs"]), size=0)
        hits = resp["hits"]["total"]["value"]
        if _awaits(o):
            assert hits == 0
            continue
        assert hits > 0, f"{o['id']}: no hits for {_query_of(o)!r}"
        first = next(a for a in vis["aggs"] if a["schema"] != "metric")
        assert resp["aggregations"][first["id"]]["buckets"], f"{o['id']}: empty buckets"


def test_execs_over_time_by_namespace_and_pod_counts_every_pod(indexed):
    saved, _ = _objects()
    o = next(o for o in saved if o["id"] == "siemhub-execs-over-time")
    vis = json.loads(o["attributes"]["visState"])
    assert [a["params"].get("field") for a in vis["aggs"] if a["schema"] == "group"] == [
        "orchestrator.namespace", "orchestrator.resource.name"]
    resp = indexed.search(index="logs-siemhub.*-dash", query=kql_to_dsl(_query_of(o)),
                          aggs=aggs_to_dsl(vis["aggs"]), size=0)
    got: dict[tuple[str, str], int] = {}
    for when in resp["aggregations"]["2"]["buckets"]:
        for ns in when["3"]["buckets"]:
            for pod in ns["4"]["buckets"]:
                got[(ns["key"], pod["key"])] = got.get((ns["key"], pod["key"]), 0) + pod["doc_count"]
    want = {(ns, name): n for (ns, name, *_), n in PODS.items()}
    want[("shop", "web-1")] = 4  # dashboard_events(): the execs in a pod; the host exec is in none
    want[("shop", "web-7d9f-x2k")] += 1  # and the kubectl exec
    assert got == want
    assert resp["hits"]["total"]["value"] == sum(want.values())


def test_kubectl_exec_sessions_by_pod(indexed):
    saved, _ = _objects()
    o = next(o for o in saved if o["id"] == "siemhub-kubectl-exec-by-pod")
    vis = json.loads(o["attributes"]["visState"])
    resp = indexed.search(index="logs-siemhub.*-dash", query=kql_to_dsl(_query_of(o)),
                          aggs=aggs_to_dsl(vis["aggs"]), size=0)
    rows = [(ns["key"], pod["key"], c["key"], cmd["key"], cmd["doc_count"])
            for ns in resp["aggregations"]["2"]["buckets"] for pod in ns["3"]["buckets"]
            for c in pod["4"]["buckets"] for cmd in c["5"]["buckets"]]
    # only the kubectl exec: not the host's nsenter, not the pods' ordinary execs
    assert rows == [("shop", "web-7d9f-x2k", "nginx", "/bin/sh", 1)]


def test_pod_events_carry_ecs_orchestrator_and_container_fields(indexed):
    hits = indexed.search(index="logs-siemhub.*-dash", query={"term": {"orchestrator.resource.name": "api-0"}},
                          size=10)["hits"]["hits"]
    assert len(hits) == 2
    doc = hits[0]["_source"]
    assert doc["orchestrator"] == {"type": "kubernetes", "namespace": "payments",
                                   "resource": {"type": "pod", "name": "api-0",
                                                "id": "3d4c5b6a-5948-4786-9695-a4b3c2d1e0f7"}}
    assert doc["container"] == {"id": "c3" * 32, "runtime": "containerd", "name": "api"}
    assert doc["siemhub"]["process"]["pod"] == {"qos_class": "Burstable"}


def test_every_saved_search_runs_and_hits(indexed):
    saved, _ = _objects()
    for o in (o for o in saved if o["type"] == "search"):
        hits = indexed.search(index="logs-siemhub.*-dash", query=kql_to_dsl(_query_of(o)))["hits"]["total"]["value"]
        assert (hits == 0) if _awaits(o) else (hits > 0), f"{o['id']}: {hits} hits"


def test_every_detection_rule_matches_its_event_and_only_it(indexed):
    _, rules = _objects()
    expect = {"execution from /tmp": "/tmp/x86", "web server": "/bin/sh", "nsenter": "/usr/bin/nsenter",
              "kubectl exec": "/bin/sh"}
    for r in rules:
        hits = indexed.search(index=r["index"][0].replace("*-*", "*-dash"), query=kql_to_dsl(r["query"]))["hits"]["hits"]
        want = next(v for k, v in expect.items() if k in r["name"])
        assert [h["_source"]["process"]["executable"] for h in hits] == [want], r["name"]


def test_cli_render_writes_the_files(tmp_path):
    result = CliRunner().invoke(cli, ["dashboards", "render", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # the Kibana files, the Splunk app (issue 14) as a directory and as siemhub_app.tgz, and the Grafana
    # dashboards under grafana/ (tests/unit/dashboards/test_grafana_dashboards.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kibana.SAVED_OBJECTS, kibana.DETECTION_RULES,
                                                                 "siemhub_app", "siemhub_app.tgz", "grafana"])
    assert (tmp_path / kibana.SAVED_OBJECTS).read_text() == kibana.render()[kibana.SAVED_OBJECTS]


# --- install against a stub that checks requests as Kibana documents them ----------------------------


class _KibanaStub(BaseHTTPRequestHandler):
    seen: list = []
    fail_with: int | None = None

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        problems = []
        path, _, query = self.path.partition("?")
        if path not in ("/api/saved_objects/_import", "/s/sec/api/saved_objects/_import",
                        "/api/detection_engine/rules/_import", "/s/sec/api/detection_engine/rules/_import"):
            problems.append(f"unexpected path {path}")
        if query != "overwrite=true":
            problems.append(f"query {query}")
        if self.headers.get("kbn-xsrf") is None:
            problems.append("no kbn-xsrf header")
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data; boundary="):
            problems.append(f"content-type {ctype}")
        msg = email.message_from_bytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body,
                                       policy=email.policy.HTTP)
        parts = list(msg.iter_parts()) if msg.is_multipart() else []
        if len(parts) != 1 or parts[0].get_param("name", header="content-disposition") != "file" \
                or not (parts[0].get_filename() or "").endswith(".ndjson"):
            problems.append("expected one form part named file with a .ndjson file name")
        lines = parts[0].get_payload(decode=True).decode().splitlines() if parts else []
        objects = [json.loads(x) for x in lines]
        type(self).seen.append({"path": path, "auth": self.headers.get("Authorization"), "objects": objects,
                                "problems": problems})
        if self.fail_with:
            self.send_response(self.fail_with)
            self.end_headers()
            return
        if problems:
            answer, status = {"statusCode": 400, "error": "Bad Request", "message": "; ".join(problems)}, 400
        elif "saved_objects" in path:
            answer, status = {"success": True, "successCount": len(objects), "successResults": []}, 200
        else:
            answer, status = {"success": True, "success_count": len(objects), "errors": [],
                              "rules_count": len(objects)}, 200
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def kibana_stub():
    _KibanaStub.seen = []
    _KibanaStub.fail_with = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _KibanaStub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _KibanaStub
    server.shutdown()
    server.server_close()


def test_install_imports_through_the_documented_apis(kibana_stub):
    url, stub = kibana_stub
    result = CliRunner().invoke(cli, ["dashboards", "install", "--kibana-url", url, "--space", "sec"],
                                env={"KIBANA_API_KEY": "c2VjcmV0OmtleQ=="})
    assert result.exit_code == 0, result.output
    assert [s["problems"] for s in stub.seen] == [[], []]
    assert [s["path"] for s in stub.seen] == ["/s/sec/api/saved_objects/_import",
                                              "/s/sec/api/detection_engine/rules/_import"]
    assert all(s["auth"] == "ApiKey c2VjcmV0OmtleQ==" for s in stub.seen)
    saved, rules = _objects()
    assert stub.seen[0]["objects"] == saved and stub.seen[1]["objects"] == rules
    assert "c2VjcmV0" not in result.output


def test_install_failure_is_reported(kibana_stub):
    url, stub = kibana_stub
    stub.fail_with = 401
    result = CliRunner().invoke(cli, ["dashboards", "install", "--kibana-url", url, "--username", "elastic",
                                      "--password", "pw-not-shown"])
    assert result.exit_code == 1 and "HTTP 401" in result.output and "pw-not-shown" not in result.output
    assert stub.seen[0]["auth"].startswith("Basic ")


# --- a real agent: a process in a kubepods-style cgroup lands in the namespace-and-pod panel -------


@pytest.mark.bpf
def test_real_agent_pod_exec_lands_in_the_namespace_and_pod_panel(tmp_path):
    """`siemhub run` (process sensor, elasticsearch exporter) with the pod enrichment pointed at a fake
    kubelet tree; /bin/echo runs in a cgroup laid out as the kubelet's systemd driver lays out a pod's
    container. The panel's own query and aggregations find it under its namespace and pod."""
    import os
    import shutil
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    from tests.conftest import bpf_unavailable
    from tests.e2e.test_kubernetes_pods import CGROUP2, _fake_pod, _make_groups, _remove

    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    if noida_binary() is None:
        from tests.conftest import server_unavailable

        server_unavailable("noida-db not installed (servers extra)")
    from elasticsearch import Elasticsearch

    uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
    kubelet = tmp_path / "kubelet"
    _fake_pod(kubelet, "checkout", "pay-5c7d-q9z", uid, "pay", cid)
    siemhub = shutil.which("siemhub", path=str(Path(sys.executable).parent)) or "siemhub"
    marker = f"siemhub-pod-{uuid.uuid4().hex[:8]}"
    with NoidaServer(tmp_path / "noida") as server, Elasticsearch(server.url) as es:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(f"""
sensors:
  process:
    poll_interval: 0.05
    procfs_scan: false
    kubernetes: {{log_pods_dir: "{kubelet}/var/log/pods", log_containers_dir: "{kubelet}/var/log/containers",
                 runtime_dirs: [], cgroup_roots: ["{CGROUP2}"]}}
exporters:
  es: {{type: elasticsearch, hosts: ["{server.url}"], namespace: podagent, batch: {{max_events: 64, max_wait: 0.2}}}}
routes:
  - {{name: all, to: [es]}}
metrics: {{enabled: false}}
status_interval: 0
shutdown_deadline: 5
""")
        leaf, created = _make_groups(["kubepods.slice", "kubepods-besteffort.slice",
                                      f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice",
                                      f"cri-containerd-{cid}.scope"])
        agent = subprocess.Popen([siemhub, "run", "-c", str(cfg), "--duration", "15"], stderr=subprocess.PIPE, text=True)
        saved, _ = _objects()
        panel = next(o for o in saved if o["id"] == "siemhub-execs-over-time")
        vis = json.loads(panel["attributes"]["visState"])
        resp = None
        try:
            deadline = time.monotonic() + 25
            while resp is None and time.monotonic() < deadline and agent.poll() is None:
                subprocess.run(["/bin/sh", "-c", f"echo $$ > {leaf}/cgroup.procs && exec /bin/echo {marker}"],
                               stdout=subprocess.DEVNULL, check=True)
                time.sleep(1.0)
                try:
                    es.indices.refresh(index="logs-siemhub.process-podagent")
                    r = es.search(index="logs-siemhub.process-podagent", size=0, aggs=aggs_to_dsl(vis["aggs"]),
                                  query={"bool": {"filter": [kql_to_dsl(_query_of(panel)),
                                                             {"term": {"process.args": marker}}]}})
                    resp = r if r["hits"]["total"]["value"] else None
                except Exception:  # noqa: BLE001 - the data stream appears with the first bulk
                    pass
        finally:
            agent.terminate()
            _, err = agent.communicate(timeout=30)
            _remove(created)
    if resp is None and ("eBPF unavailable" in err or "BPFUnavailable" in err):
        bpf_unavailable(err.strip().splitlines()[-1])
    assert resp is not None, f"the pod's exec of /bin/echo {marker} did not arrive; agent said:\n{err[-3000:]}"
    keys = {(ns["key"], pod["key"]) for when in resp["aggregations"]["2"]["buckets"]
            for ns in when["3"]["buckets"] for pod in ns["4"]["buckets"]}
    assert keys == {("checkout", "pay-5c7d-q9z")}
