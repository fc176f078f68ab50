"""The ECS format against ECS's own field definitions (shared/reference/ecs/ecs_flat.yml) and against
golden files (tests/golden/ecs_<type>.json; regenerate deliberately with SIEMHUB_UPDATE_GOLDEN=1).

Every field the format emits must: be in ecs.FIELDS (so the index template maps it explicitly); and,
outside `siemhub.*`, exist in ECS with a compatible type; event.kind/category/type must use ECS's
allowed values and category/type pairs ECS expects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from siemhub.collector.core.event import decode_json
from siemhub.exporters.formats import ecs, get_format

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"


def _ecs_flat_path() -> Path:
    # Vendored in the repository (tests/reference/README.md), so the check runs on every checkout.
    return REPO / "tests" / "reference" / "ecs" / "ecs_flat.yml"


@pytest.fixture(scope="module")
def ecs_flat() -> dict:
    path = _ecs_flat_path()
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


_BASE = '"schema_version":"1.0","node":{"name":"node-a","labels":{"zone":"eu-1"}}'
_PROC = ('{"exec_id":"bm9kZS1hOjcwMDA6NDI0Mg==","pid":4242,"tid":4242,"ppid":1000,'
         '"parent_exec_id":"bm9kZS1hOjEwMDA6MTAwMA==","uid":1000,"euid":0,"gid":1000,"egid":0,"auid":1000,'
         '"binary":"/usr/bin/curl","args":["curl","-s","https://example.com/"],"cwd":"/home/alice","comm":"curl",'
         '"start_time":"2023-11-14T22:13:27.000000123Z","flags":["truncated_args"],"cgroup_id":4096,'
         '"container":{"id":"3f2a9c","runtime":"containerd"},'
         '"pod":{"namespace":"shop","name":"web-7d9f","labels":{"app":"web","tier":"front"},'
         '"container":{"name":"nginx","image":"registry:5000/nginx:1.25"},"workload":"web","workload_kind":"Deployment",'
         '"uid":"1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9","qos_class":"Burstable"}}')
_PARENT = ('{"exec_id":"bm9kZS1hOjEwMDA6MTAwMA==","pid":1000,"tid":1000,"ppid":1,"uid":1000,"euid":1000,'
           '"gid":1000,"egid":1000,"binary":"/usr/bin/bash","args":["-bash"],"cwd":"/home/alice","comm":"bash",'
           '"start_time":"2023-11-14T22:13:21.000000000Z","flags":["procfs"]}')

EVENTS = {
    "process_exec": '{"id":"00000000deadbeef-1","time":"2023-11-14T22:13:27.000000123Z","type":"process_exec",'
                    f'"severity":"info",{_BASE},"process":{_PROC},"parent":{_PARENT},"tags":["k8s"]}}',
    "process_exit": '{"id":"00000000deadbeef-2","time":"2023-11-14T22:13:29.000000456Z","type":"process_exit",'
                    f'"severity":"low",{_BASE},"process":{_PROC},"parent":{_PARENT},'
                    '"exit":{"code":2,"duration_ns":2000000333}}',
    "agent_status": '{"id":"00000000deadbeef-3","time":"2023-11-14T22:13:31.000000000Z","type":"agent_status",'
                    f'"severity":"medium",{_BASE},"status":{{"counters":{{"process_ringbuf_lost_exec":3,'
                    '"process_ringbuf_lost_exit":1,"process_decode_errors":2,"exporter_es_sent":1234,'
                    '"exporter_es_dropped_queue_full":5,"process_cache_entries":321}}}',
}
# variants that exercise the other branches (not golden)
EXTRA = [
    '{"id":"x-4","time":"2023-11-14T22:13:29Z","type":"process_exit","severity":"info",' + _BASE + ','
    '"process":{"exec_id":"e","pid":7,"ppid":1,"parent_exec_id":"p","binary":"/bin/sleep","args":["sleep","9"]},'
    '"exit":{"signal":"SIGKILL","core_dumped":true,"duration_ns":5}}',
    '{"id":"x-5","time":"2023-11-14T22:13:29Z","type":"process_exec","severity":"critical",' + _BASE + ','
    '"process":{"exec_id":"e","pid":7,"comm":"kworker","flags":["procfs","missing_parent"]}}',
    # the other sensors' bodies
    '{"id":"x-6","time":"2023-11-14T22:13:30Z","type":"file_access","severity":"high",' + _BASE + ','
    f'"process":{_PROC},"parent":{_PARENT},'
    '"file":{"operation":"open","path":"/etc/shadow","flags":["O_RDONLY"],"inode":819,"result":3}}',
    '{"id":"x-7","time":"2023-11-14T22:13:30Z","type":"file_access","severity":"info",' + _BASE + ','
    f'"process":{_PROC},'
    '"file":{"operation":"rename","path":"/etc/passwd.tmp","target":"/etc/passwd","flags":["O_CREAT"],'
    '"mode":33188,"uid":0,"gid":0,"result":-13}}',
    '{"id":"x-8","time":"2023-11-14T22:13:30Z","type":"network_close","severity":"info",' + _BASE + ','
    f'"process":{_PROC},'
    '"network":{"protocol":"tcp","family":"ipv6","direction":"outbound","source_ip":"::1","source_port":40000,'
    '"destination_ip":"::1","destination_port":443,"bytes_sent":10,"bytes_received":20,"duration_ns":5,'
    '"dns_query":"example.com"}}',
    '{"id":"x-9","time":"2023-11-14T22:13:30Z","type":"network_accept","severity":"info",' + _BASE + ','
    f'"process":{_PROC},'
    '"network":{"protocol":"tcp","family":"ipv4","direction":"inbound","source_ip":"10.0.0.9","source_port":5555,'
    '"destination_ip":"10.0.0.1","destination_port":22}}',
    '{"id":"x-12","time":"2023-11-14T22:13:30Z","type":"dns_query","severity":"info",' + _BASE + ','
    f'"process":{_PROC},'
    '"network":{"protocol":"udp","family":"ipv4","direction":"outbound","source_ip":"10.0.0.5","source_port":41000,'
    '"destination_ip":"10.0.0.53","destination_port":53,"dns_query":"exa\\\\\\\\mple.com",'
    '"dns":{"id":48879,"type":"AAAA","flags":["escaped_name"]}}}',
    '{"id":"x-10","time":"2023-11-14T22:13:30Z","type":"privilege_change","severity":"high",' + _BASE + ','
    f'"process":{_PROC},'
    '"privilege":{"operation":"setresuid","old_uid":1000,"new_uid":0,"old_gid":1000,"new_gid":0,'
    '"new_caps":["CAP_SYS_ADMIN"],"target_pid":7,"name":"m","source":"/dev/sda","target":"/mnt","result":0}}',
    '{"id":"x-11","time":"2023-11-14T22:13:30Z","type":"policy_action","severity":"high",' + _BASE + ','
    f'"process":{_PROC},"tags":["policy:fim"],'
    '"policy":{"policy":"fim","rule":"shadow","action":"sigkill","enforced":true,"reason":"read /etc/shadow"}}',
]


def _leaves(obj, prefix=""):
    """(dotted path, value) for every leaf; list elements share the list's path; flattened fields stop."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}{k}"
            if ecs.FIELDS.get(path, {}).get("type") == "flattened":
                yield path, v
            else:
                yield from _leaves(v, path + ".")
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v, prefix)
    else:
        yield prefix.rstrip("."), obj


_COMPATIBLE = {
    "keyword": {"keyword", "wildcard", "constant_keyword"},
    "wildcard": {"keyword", "wildcard"},
    "constant_keyword": {"constant_keyword", "keyword"},
    "date": {"date", "date_nanos"},
    "long": {"long"},
    "boolean": {"boolean"},
    "object": {"flattened"},
    "ip": {"ip"},
    "flattened": {"flattened"},
}
_PY = {"keyword": str, "wildcard": str, "constant_keyword": str, "date_nanos": str, "long": int,
       "boolean": bool, "flattened": dict, "ip": str}


def _all_docs():
    return [ecs.to_ecs(decode_json(t)) for t in (*EVENTS.values(), *EXTRA)]


def test_every_emitted_field_is_mapped_and_typed():
    for doc in _all_docs():
        for path, value in _leaves(doc):
            assert path in ecs.FIELDS, f"{path} is emitted but not in ecs.FIELDS (the template would not map it)"
            want = _PY[ecs.FIELDS[path]["type"]]
            assert isinstance(value, want) and not (want is int and isinstance(value, bool)), (path, value)


def test_every_ecs_field_exists_in_ecs_with_compatible_type(ecs_flat):
    for path, spec in ecs.FIELDS.items():
        if path.startswith("siemhub."):
            continue
        assert path in ecs_flat, f"{path} is not an ECS field"
        ecs_type = ecs_flat[path]["type"]
        assert spec["type"] in _COMPATIBLE[ecs_type], f"{path}: mapped {spec['type']}, ECS says {ecs_type}"
        ecs_multi = {m["name"]: m["type"] for m in ecs_flat[path].get("multi_fields", [])}
        for name, sub in spec.get("fields", {}).items():
            assert ecs_multi.get(name) == sub["type"], f"{path}.{name}: ECS multi-fields are {ecs_multi}"


def test_siemhub_namespace_is_not_in_ecs(ecs_flat):
    assert not [k for k in ecs_flat if k.startswith("siemhub.")]


def test_event_classification_uses_allowed_values(ecs_flat):
    allowed = {f: {v["name"]: v for v in ecs_flat[f"event.{f}"]["allowed_values"]} for f in ("kind", "category", "type")}
    for etype, (kind, cats, types, _, _) in ecs.EVENT_CLASS.items():
        assert kind in allowed["kind"], etype
        for c in cats or ():
            assert c in allowed["category"], etype
            expected = allowed["category"][c].get("expected_event_types") or []
            assert set(types or ()) <= set(expected), f"{etype}: {types} not expected for category {c}: {expected}"
        for t in types or ():
            assert t in allowed["type"], etype
    for doc in _all_docs():
        ev = doc["event"]
        assert ev["kind"] in allowed["kind"]
        assert set(ev.get("category", ())) <= set(allowed["category"])
        assert set(ev.get("type", ())) <= set(allowed["type"])


def test_process_fields():
    exe, ext, status = (ecs.to_ecs(decode_json(EVENTS[t]), namespace="prod") for t in EVENTS)
    p = exe["process"]
    assert p["entity_id"] == "bm9kZS1hOjcwMDA6NDI0Mg==" and p["pid"] == 4242
    assert p["executable"] == "/usr/bin/curl" and p["name"] == "curl"
    assert p["args"] == ["curl", "-s", "https://example.com/"] and p["args_count"] == 3
    assert p["command_line"] == "curl -s https://example.com/"
    assert p["working_directory"] == "/home/alice"
    assert p["user"] == {"id": "0"} and p["real_user"] == {"id": "1000"} and p["group"] == {"id": "0"}
    assert p["parent"]["entity_id"] == "bm9kZS1hOjEwMDA6MTAwMA==" and p["parent"]["name"] == "bash"
    assert exe["user"] == {"id": "0"}
    assert exe["event"]["category"] == ["process"] and exe["event"]["type"] == ["start"]
    assert exe["data_stream"] == {"type": "logs", "dataset": "siemhub.process", "namespace": "prod"}
    assert exe["orchestrator"]["resource"]["label"] == ["app:web", "tier:front"]
    assert exe["container"]["image"] == {"name": "registry:5000/nginx", "tag": ["1.25"]}
    assert exe["siemhub"]["process"]["flags"] == ["truncated_args"]
    assert ext["process"]["exit_code"] == 2 and ext["process"]["end"] == ext["@timestamp"]
    assert ext["event"]["duration"] == 2000000333
    assert status["siemhub"]["status"]["lost_events"] == 4
    assert status["siemhub"]["status"]["dropped_events"] == 5
    assert status["event"]["kind"] == "metric" and "category" not in status["event"]
    killed = ecs.to_ecs(decode_json(EXTRA[0]))
    assert "exit_code" not in killed["process"] and killed["siemhub"]["exit"]["signal"] == "SIGKILL"
    assert killed["process"]["parent"] == {"entity_id": "p", "pid": 1}


def test_mappings_cover_fields():
    m = ecs.mappings()
    assert m["dynamic"] is False
    assert m["properties"]["process"]["properties"]["parent"]["properties"]["pid"] == {"type": "long"}
    assert m["properties"]["@timestamp"] == {"type": "date_nanos"}


def test_format_is_registered():
    f = get_format("ecs")
    lines = f.encode_lines([decode_json(t) for t in EVENTS.values()]).splitlines()
    assert [json.loads(x)["event"]["id"] for x in lines] == ["00000000deadbeef-1", "00000000deadbeef-2",
                                                               "00000000deadbeef-3"]


UDP_FLOW = ('{"id":"x-flow","time":"2026-11-25T22:21:30.5Z","type":"network_flow","severity":"info",' + _BASE + ','
            '"process":{"exec_id":"bm9kZS1hOjcwMDA6NDI0Mg==","pid":4242,"binary":"/usr/bin/rsyslogd","args":["rsyslogd"]},'
            '"network":{"protocol":"udp","family":"ipv6","direction":"outbound","source_ip":"fd00::2",'
            '"source_port":41000,"destination_ip":"fd00::514","destination_port":514,"bytes_sent":5000,'
            '"bytes_received":0,"datagrams_sent":50,"datagrams_received":0,"first_seen":"2026-11-25T22:21:28Z",'
            '"last_seen":"2026-11-25T22:21:30Z","duration_ns":2000000000,"flow_end":"close"}}')
EXTRA.append(UDP_FLOW)

# the other sensors' types with a golden file of their own
GOLDEN_EVENTS = {**EVENTS, "dns_query": next(t for t in EXTRA if '"type":"dns_query"' in t), "network_flow": UDP_FLOW}


@pytest.mark.parametrize("etype", list(GOLDEN_EVENTS))
def test_ecs_golden(etype):
    doc = ecs.to_ecs(decode_json(GOLDEN_EVENTS[etype]))
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"ecs_{etype}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        print(f"golden file rewritten: {path.name} (review the diff)")  # then compared as usual
    assert path.exists(), f"missing {path.name}; create it with SIEMHUB_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"the ECS document of {etype} changed; if deliberate, update docs/ecs-mapping.md and regenerate "
        "with SIEMHUB_UPDATE_GOLDEN=1")


def test_dns_query_fields():
    e = decode_json(GOLDEN_EVENTS["dns_query"])
    assert e.network.dns_query == "exa\\\\mple.com"  # a backslash in the label, escaped by the sensor
    doc = ecs.to_ecs(e)
    assert doc["dns"] == {"question": {"name": e.network.dns_query, "type": "AAAA"}, "type": "query", "id": "48879"}
    assert doc["event"]["action"] == "dns_query" and doc["data_stream"]["dataset"] == "siemhub.network"
    assert doc["dns"] == {"question": {"name": e.network.dns_query, "type": "AAAA"}, "type": "query", "id": "48879"}
    assert doc["network"] == {"transport": "udp", "type": "ipv4", "direction": "egress", "protocol": "dns"}
    assert doc["destination"] == {"ip": "10.0.0.53", "port": 53} and doc["source"]["port"] == 41000
    assert doc["siemhub"]["dns"] == {"flags": ["escaped_name"]}
    assert doc["process"]["entity_id"] == "bm9kZS1hOjcwMDA6NDI0Mg=="


def test_capabilities_go_to_ecs_thread_capabilities(ecs_flat):
    """ECS process.thread.capabilities.{effective,permitted}: arrays of CAP_* names (the reference's
    pattern), mapped as keywords; a process without capabilities has none."""
    import re

    from siemhub.collector.core.event import EVENT_BASE, Caps, Event, Node, Process

    ref = ecs_flat
    p = Process(exec_id="e", pid=7, tid=7, binary="/usr/bin/ping",
                caps=Caps(effective=["CAP_NET_RAW"], permitted=["CAP_NET_RAW", "CAP_NET_ADMIN"]))
    doc = ecs.to_ecs(Event(id="i", time="2024-01-02T03:04:05.000000006Z", type="process_exec", node=Node(name="n"),
                           process=p, **EVENT_BASE))
    assert doc["process"]["thread"] == {"id": 7, "capabilities": {"effective": ["CAP_NET_RAW"],
                                                                  "permitted": ["CAP_NET_RAW", "CAP_NET_ADMIN"]}}
    for kind in ("effective", "permitted"):
        assert ecs.FIELDS[f"process.thread.capabilities.{kind}"]["type"] == ref[f"process.thread.capabilities.{kind}"]["type"]
        pattern = ref[f"process.thread.capabilities.{kind}"]["pattern"]
        assert all(re.fullmatch(pattern, c) for c in doc["process"]["thread"]["capabilities"][kind])
    bare = ecs.to_ecs(Event(id="j", time="2024-01-02T03:04:05.000000006Z", type="process_exec", node=Node(name="n"),
                            process=Process(exec_id="f", pid=8, tid=8), **EVENT_BASE))
    assert bare["process"]["thread"] == {"id": 8}


def test_shared_processes_are_mapped_once_and_never_changed_by_a_document():
    """to_ecs memoizes the mapping of each (immutable, shared) Process: documents built from shared
    processes equal those built from fresh copies, and what one document adds (parent, exit, the
    privilege change of user.changes) never shows in another."""
    import copy

    import msgspec

    from siemhub.collector.core.event import Exit, Privilege

    base = decode_json((Path(__file__).resolve().parents[3] / "golden" / "native_process_exec.json").read_bytes())
    exit_ = msgspec.structs.replace(base, id="x2", type="process_exit", exit=Exit(code=1, duration_ns=5))
    priv = msgspec.structs.replace(base, id="x3", type="privilege_change",
                                   privilege=Privilege(operation="setuid", old_uid=1000, new_uid=0, new_gid=0))
    first = ecs.to_ecs(base)
    docs = [ecs.to_ecs(e) for e in (base, exit_, priv, base)]
    ecs.clear_memos()
    fresh = [ecs.to_ecs(copy.deepcopy(e)) for e in (base, exit_, priv, base)]
    assert docs == fresh
    assert docs[0] == docs[3] == first
    assert "end" not in docs[3]["process"] and "changes" not in docs[3]["user"]
    assert docs[2]["user"]["changes"] == {"id": "0", "group": {"id": "0"}}
    assert docs[0]["process"]["parent"] is docs[1]["process"]["parent"]  # shared, not rebuilt


def test_udp_flow_fields():
    doc = ecs.to_ecs(decode_json(UDP_FLOW))
    assert doc["event"]["action"] == "flow" and doc["event"]["type"] == ["connection", "end"]
    assert doc["source"] == {"ip": "fd00::2", "port": 41000, "bytes": 5000, "packets": 50}
    assert doc["destination"] == {"ip": "fd00::514", "port": 514, "bytes": 0, "packets": 0}
    assert doc["network"] == {"transport": "udp", "type": "ipv6", "direction": "egress", "bytes": 5000, "packets": 50}
    assert doc["event"]["start"] == "2026-11-25T22:21:28Z" and doc["event"]["end"] == "2026-11-25T22:21:30Z"
    assert doc["siemhub"]["flow_end"] == "close"


def test_encoded_documents_are_the_json_of_to_ecs():
    """encode_one (and the format's encode_lines) splice shared parts as JSON encoded once: the result must
    be the JSON of to_ecs, for every event type, exits with and without a code, processes with and without
    a parent object, pods with the node's cluster, privilege changes (which extend `user`), and for
    documents built again from the memos."""
    import msgspec

    from siemhub.collector.core.event import Exit, Node, Privilege

    golden = [decode_json(p.read_bytes()) for p in sorted(GOLDEN.glob("native_*.json"))]
    events = [decode_json(t) for t in (*EVENTS.values(), *EXTRA, UDP_FLOW)] + golden
    more = []
    for e in events:
        if e.process is None:
            continue
        more += [msgspec.structs.replace(e, id="x1", type="process_exit", exit=Exit(signal="SIGKILL", core_dumped=True)),
                 msgspec.structs.replace(e, id="x2", parent=None),
                 msgspec.structs.replace(e, id="x3", node=Node(name="n2", cluster="prod-eu")),
                 msgspec.structs.replace(e, id="x4", type="privilege_change",
                                         privilege=Privilege(operation="setuid", old_uid=1000, new_uid=0))]
    events += more
    assert len(events) > 20
    for round_ in range(2):  # cold, then from the memos
        for e in events:
            want = ecs.to_ecs(e, namespace="prod")
            assert json.loads(ecs.encode_one(e, namespace="prod")) == json.loads(json.dumps(want)), (round_, e.id)
        lines = get_format("ecs").encode_lines(events).splitlines()
        assert [json.loads(x) for x in lines] == [json.loads(json.dumps(ecs.to_ecs(e))) for e in events]
    ecs.clear_memos()
