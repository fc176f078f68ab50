"""The OCSF format against the OCSF schemas themselves and against golden files
(tests/golden/ocsf_<type>.json; regenerate deliberately with SIEMHUB_UPDATE_GOLDEN=1).

Validation uses the OCSF schema releases that the `ocsf-json-schema` package ships, turned into JSON
Schema (draft 2020-12, additionalProperties false: an attribute OCSF does not define fails) and checked
with `jsonschema`. py-ocsf-models has no Process Activity class and ocsf-lib needs the OCSF schema server
or repository, so neither can check class 1007 here.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import jsonschema
import ocsf_json_schema
import pytest

from siemhub.collector.core.event import (EVENT_BASE, AgentStatus, Container, Dns, Event, Exit, Network, Node, Pod,
                                     PodContainer, Process)
from siemhub.exporters.formats import get_format, ocsf

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"
VERSIONS = ("1.1.0", "1.3.0", "1.5.0")

PARENT = Process(exec_id="bm9kZS1hOjEwMDA6MTAwMA==", pid=1000, tid=1000, ppid=1, uid=1000, euid=1000, gid=1000,
                 egid=1000, binary="/usr/bin/bash", args=["-bash"], cwd="/home/alice", comm="bash",
                 start_time="2026-11-25T22:00:00.000000000Z")
CHILD = Process(exec_id="bm9kZS1hOjQyNDI6NDI0Mg==", pid=4242, tid=4242, ppid=1000, parent_exec_id=PARENT.exec_id,
                uid=1000, euid=0, gid=1000, egid=0, auid=1000, binary="/usr/bin/curl",
                args=["curl", "-s", "https://example.com/a b"], cwd="/home/alice", comm="curl",
                start_time="2026-11-25T22:21:27.507097186Z", flags=["truncated_args"], cgroup_id=4096,
                container=Container(id="ab" * 32, runtime="containerd"),
                pod=Pod(namespace="web", name="api-7f9c", labels={"app": "api"},
                        container=PodContainer(name="api", image="registry.example/api:1.2"),
                        uid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", qos_class="Burstable"))
NODE = Node(name="node-a", labels={"zone": "eu-1"})


def sample_events() -> dict[str, Event]:
    return {
        "process_exec": Event(id="f00d-1", time="2026-11-25T22:21:27.507097186Z", type="process_exec",
                              node=NODE, process=CHILD, parent=PARENT, **EVENT_BASE),
        "process_exit": Event(id="f00d-2", time="2026-11-25T22:21:29.000123456Z", type="process_exit",
                              node=NODE, process=CHILD, parent=PARENT, severity="low",
                              schema_version=EVENT_BASE["schema_version"],
                              exit=Exit(code=2, duration_ns=1_493_026_270)),
        "agent_status": Event(id="f00d-3", time="2026-11-25T22:22:00.000000000Z", type="agent_status", node=NODE,
                              severity="medium", schema_version=EVENT_BASE["schema_version"],
                              status=AgentStatus(counters={"exporter_siem_sent": 1234})),
        "dns_query": Event(id="f00d-4", time="2026-11-25T22:21:28.000000042Z", type="dns_query", node=NODE,
                           process=CHILD, parent=PARENT, **EVENT_BASE,
                           network=Network(protocol="udp", family="ipv6", direction="outbound", source_ip="fd00::5",
                                           source_port=41000, destination_ip="fd00::53", destination_port=53,
                                           dns_query="example.com", dns=Dns(id=48879, type="AAAA"))),
        "network_flow": Event(id="f00d-5", time="2026-11-25T22:21:30.000000042Z", type="network_flow", node=NODE,
                              process=CHILD, parent=PARENT, **EVENT_BASE,
                              network=Network(protocol="udp", family="ipv4", direction="inbound", source_ip="10.0.0.9",
                                              source_port=5353, destination_ip="10.0.0.5", destination_port=514,
                                              bytes_sent=40, bytes_received=1000, datagrams_sent=1,
                                              datagrams_received=10, first_seen="2026-11-25T22:21:28Z",
                                              last_seen="2026-11-25T22:21:29.5Z", duration_ns=1_500_000_000,
                                              flow_end="exit")),
    }


@pytest.fixture(scope="module")
def validators():
    out = {}
    for version in VERSIONS:
        schema = ocsf_json_schema.OcsfJsonSchemaEmbedded(ocsf_json_schema.get_ocsf_schema(version=version))
        out[version] = {
            1007: jsonschema.Draft202012Validator(schema.get_class_schema("process_activity", profiles=["container"])),
            0: jsonschema.Draft202012Validator(schema.get_class_schema("base_event")),
            4003: jsonschema.Draft202012Validator(schema.get_class_schema("dns_activity", profiles=["host", "container"])),
            4001: jsonschema.Draft202012Validator(schema.get_class_schema("network_activity", profiles=["host", "container"])),
        }
    return out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("etype", ["process_exec", "process_exit", "agent_status", "dns_query", "network_flow"])
def test_valid_against_ocsf_schema(validators, version, etype):
    obj = ocsf.to_obj(sample_events()[etype])
    errors = sorted(validators[version][obj["class_uid"]].iter_errors(obj), key=str)
    assert not errors, f"OCSF {version} rejects {etype}:\n" + "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20])


def test_process_activity_fields():
    exe = ocsf.to_obj(sample_events()["process_exec"])
    assert (exe["class_uid"], exe["category_uid"], exe["activity_id"], exe["type_uid"]) == (1007, 1, 1, 100701)
    assert exe["time"] == 1795645287507  # ms, truncated
    assert exe["severity_id"] == 1
    p = exe["process"]
    assert p["pid"] == 4242 and p["uid"] == CHILD.exec_id
    assert p["file"]["path"] == "/usr/bin/curl" and p["name"] == "curl"
    assert shlex.split(p["cmd_line"]) == CHILD.args  # argv survives, spaces included
    assert p["parent_process"]["pid"] == 1000
    assert p["user"] == {"uid": "1000"}
    assert exe["actor"]["process"]["pid"] == 1000  # the parent launched it
    assert exe["device"]["hostname"] == "node-a"
    assert exe["metadata"]["product"]["name"] == "siemhub" and exe["metadata"]["version"] == ocsf.OCSF_VERSION
    assert exe["metadata"]["uid"] == "f00d-1"
    ext = ocsf.to_obj(sample_events()["process_exit"])
    assert (ext["activity_id"], ext["type_uid"], ext["exit_code"], ext["duration"]) == (2, 100702, 2, 1493)
    assert ext["actor"]["process"]["pid"] == 4242 and ext["severity_id"] == 2
    status = ocsf.to_obj(sample_events()["agent_status"])
    assert (status["class_uid"], status["activity_id"]) == (0, 99)


def test_dns_activity_fields(validators):
    e = sample_events()["dns_query"]
    obj = ocsf.to_obj(e)
    assert (obj["class_uid"], obj["category_uid"], obj["activity_id"], obj["type_uid"]) == (4003, 4, 1, 400301)
    assert obj["query"] == {"hostname": "example.com", "type": "AAAA", "packet_uid": 48879}
    assert obj["dst_endpoint"] == {"ip": "fd00::53", "port": 53}
    assert obj["src_endpoint"] == {"hostname": "node-a", "ip": "fd00::5", "port": 41000}
    assert obj["connection_info"]["protocol_name"] == "udp" and obj["connection_info"]["protocol_ver_id"] == 6
    assert obj["actor"]["process"]["uid"] == CHILD.exec_id
    # a datagram whose name could not be read: no query object (its hostname is required), the rest stays
    e.network.dns_query, e.network.dns = None, Dns(id=7, flags=["malformed"])
    e.network.source_ip = e.network.source_port = None
    obj = ocsf.to_obj(e)
    assert "query" not in obj and obj["unmapped"]["dns_flags"] == ["malformed"] and obj["unmapped"]["dns_id"] == 7
    assert obj["src_endpoint"] == {"hostname": "node-a"}
    for version in VERSIONS:
        assert not list(validators[version][4003].iter_errors(obj)), version


def test_epoch_ms():
    assert ocsf.epoch_ms("1970-01-01T00:00:01.999999999Z") == 1999
    assert ocsf.epoch_ms("2000-02-29T12:00:00Z") == 951825600000
    assert ocsf.epoch_ms("2026-11-25T22:21:27.5Z") == 1795645287500


def test_encode_lines_one_line_per_event():
    batch = list(sample_events().values())
    lines = get_format("ocsf").encode_lines(batch).splitlines()
    assert [json.loads(x)["metadata"]["uid"] for x in lines] == [e.id for e in batch]


@pytest.mark.parametrize("etype", ["process_exec", "process_exit", "agent_status", "dns_query", "network_flow"])
def test_ocsf_matches_golden(etype):
    text = json.dumps(ocsf.to_obj(sample_events()[etype]), indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"ocsf_{etype}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        print(f"golden file rewritten: {path.name} (review the diff)")  # then compared as usual
    assert path.exists(), f"missing {path.relative_to(REPO)}; create it with SIEMHUB_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"the OCSF form of {etype} changed; if deliberate, regenerate with SIEMHUB_UPDATE_GOLDEN=1 and review")


def test_udp_flow_is_network_activity():
    obj = ocsf.to_obj(sample_events()["network_flow"])
    assert (obj["class_uid"], obj["activity_id"], obj["type_uid"]) == (4001, 2, 400102)
    # inbound: the peer is the source; what it sent us is bytes_out of the flow
    assert obj["traffic"] == {"bytes_out": 1000, "bytes_in": 40, "packets_out": 10, "packets_in": 1,
                              "bytes": 1040, "packets": 11}
    assert obj["src_endpoint"] == {"ip": "10.0.0.9", "port": 5353} and obj["connection_info"]["direction_id"] == 1
    assert (obj["start_time"], obj["end_time"], obj["duration"]) == (1795645288000, 1795645289500, 1500)
    assert obj["unmapped"]["flow_end"] == "exit"
