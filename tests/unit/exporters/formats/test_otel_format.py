"""The OpenTelemetry format: the mapping of each event type (golden files tests/golden/otel_<type>.json,
regenerate deliberately with SIEMHUB_UPDATE_GOLDEN=1), the wire encoder against opentelemetry-proto
(parsed back, and byte-equal to the request built from the proto messages), and the rules of
docs/otel-mapping.md (semantic-convention names, value types, the deprecated event.name attribute
never used)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process, decode_json
from siemhub.exporters.formats import otel
from tests.unit.exporters.formats.test_ecs_format import EVENTS, EXTRA

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"
OBSERVED = 1_700_000_100_000_000_000
ALL = [decode_json(t) for t in (*EVENTS.values(), *EXTRA)]
GOLDEN_EVENTS = {e.type: e for e in reversed(ALL)}  # one of each type (the first in ALL wins)


def _decode(data: bytes) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest.FromString(data)


def _records(req: ExportLogsServiceRequest) -> list:
    return [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]


@pytest.mark.parametrize("etype", sorted(GOLDEN_EVENTS))
def test_otel_golden(etype):
    req = _decode(otel.encode_request([GOLDEN_EVENTS[etype]], OBSERVED, kubernetes=True,
                                      service_version="1.0.0"))
    text = json.dumps(MessageToDict(req), indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"otel_{etype}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        print(f"golden file rewritten: {path.name} (review the diff)")
    assert path.exists(), f"missing {path.name}; create it with SIEMHUB_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"the OTLP record of {etype} changed; if deliberate, update docs/otel-mapping.md and regenerate "
        "with SIEMHUB_UPDATE_GOLDEN=1")


def test_wire_encoding_equals_the_proto_message_request():
    extra = {"deployment.environment.name": "prod", "team.id": 7, "x.ratio": 0.5, "x.flag": True}
    wire = otel.encode_request(ALL, OBSERVED, kubernetes=True, resource=extra, service_version="2.0")
    ref = otel.request_message(ALL, OBSERVED, kubernetes=True, resource=extra, service_version="2.0")
    assert _decode(wire) == ref
    assert wire == ref.SerializeToString()  # same field order: byte for byte


def test_one_resource_per_node_in_order_of_first_appearance():
    a, b = ALL[0], ALL[1]
    other = decode_json(EVENTS["process_exec"].replace('"name":"node-a"', '"name":"node-b"'))
    req = _decode(otel.encode_request([a, other, b], OBSERVED))
    hosts = [{kv.key: kv.value.string_value for kv in rl.resource.attributes}["host.name"] for rl in req.resource_logs]
    assert hosts == ["node-a", "node-b"]
    assert [len(rl.scope_logs[0].log_records) for rl in req.resource_logs] == [2, 1]
    assert req.resource_logs[0].scope_logs[0].scope.name == "siemhub"


def test_record_fields_of_an_exec():
    e = decode_json(EVENTS["process_exec"])
    (r,) = _records(_decode(otel.encode_request([e], OBSERVED)))
    assert r.time_unix_nano == 1_700_000_007_000_000_123  # 2023-11-14T22:13:27.000000123Z
    assert r.observed_time_unix_nano == OBSERVED
    assert r.severity_number == 9 and r.severity_text == "info"
    assert r.event_name == "siemhub.process_exec"
    assert r.body.string_value == "bash executed /usr/bin/curl -s https://example.com/"
    a = {kv.key: kv.value for kv in r.attributes}
    assert "event.name" not in a  # deprecated: the record's own event_name carries it
    assert a["process.pid"].int_value == 4242 and a["process.parent_pid"].int_value == 1000
    assert a["process.executable.path"].string_value == "/usr/bin/curl"
    assert a["process.executable.name"].string_value == "curl"
    assert [v.string_value for v in a["process.command_args"].array_value.values] == ["curl", "-s", "https://example.com/"]
    assert a["process.working_directory"].string_value == "/home/alice"
    assert a["process.user.id"].int_value == 0 and a["process.real_user.id"].int_value == 1000
    assert a["process.creation.time"].string_value == "2023-11-14T22:13:27.000000123Z"
    assert a["container.id"].string_value == "3f2a9c"
    assert a["k8s.pod.name"].string_value == "web-7d9f" and a["k8s.namespace.name"].string_value == "shop"
    assert a["k8s.pod.uid"].string_value == "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
    assert a["siemhub.process.exec_id"].string_value == "bm9kZS1hOjcwMDA6NDI0Mg=="
    assert a["log.record.uid"].string_value == e.id


def test_network_file_exit_and_policy_attributes():
    by_type: dict = {}
    for r in _records(_decode(otel.encode_request(ALL, OBSERVED))):  # the first record of each type
        by_type.setdefault(r.event_name, {kv.key: kv.value for kv in r.attributes})
    accept = by_type["siemhub.network_accept"]  # inbound: the server is this host, the peer the client
    assert accept["network.transport"].string_value == "tcp" and accept["network.type"].string_value == "ipv4"
    assert accept["server.address"].string_value == "10.0.0.1" and accept["server.port"].int_value == 22
    assert accept["network.peer.address"].string_value == "10.0.0.9"
    assert accept["network.peer.port"].int_value == 5555
    dns = by_type["siemhub.dns_query"]  # outbound: the server and the peer are the destination
    assert dns["server.address"].string_value == "10.0.0.53" and dns["network.peer.port"].int_value == 53
    assert dns["dns.question.name"].string_value == "exa\\\\mple.com"
    flow = by_type["siemhub.network_flow"]  # UDP flow: datagram counts and why it ended
    assert flow["network.transport"].string_value == "udp" and flow["network.peer.port"].int_value == 514
    assert flow["siemhub.network.datagrams_sent"].int_value == 50
    assert flow["siemhub.network.datagrams_received"].int_value == 0
    assert flow["siemhub.network.flow_end"].string_value == "close"
    exit_ = by_type["siemhub.process_exit"]
    assert exit_["process.exit.code"].int_value == 2
    f = by_type["siemhub.file_access"]
    assert f["file.path"].string_value == "/etc/shadow" and f["file.name"].string_value == "shadow"
    assert f["file.directory"].string_value == "/etc"
    pol = by_type["siemhub.policy_action"]
    assert pol["siemhub.policy.name"].string_value == "fim" and pol["siemhub.policy.enforced"].bool_value is True
    killed = otel.attributes(decode_json(EXTRA[0]))
    assert "process.exit.code" not in killed and killed["siemhub.exit.signal"] == "SIGKILL"


_SEMCONV = re.compile(r"^(process|thread|container|k8s|file|network|server|source|destination|dns|log)\.")


def test_attribute_names_are_semconv_or_siemhub():
    """Every attribute is either in a semantic-convention namespace or under siemhub.*; none is the
    deprecated event.name."""
    for e in ALL:
        for key in otel.attributes(e):
            assert key != "event.name"
            assert key.startswith("siemhub.") or _SEMCONV.match(key), key


def test_severity_numbers_are_ordered():
    nums = [otel.SEVERITY[s][0] for s in ("info", "low", "medium", "high", "critical")]
    assert nums == sorted(nums) and len(set(nums)) == 5 and all(1 <= n <= 24 for n in nums)


@pytest.mark.parametrize("text,want", [
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T00:00:01.5Z", 1_500_000_000),
    ("2023-11-14T22:13:20.000000001Z", 1_700_000_000_000_000_001),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000_000_000_000),
])
def test_unix_nanos(text, want):
    assert otel.unix_nanos(text) == want


def test_body_is_bounded():
    p = Process(exec_id="x", pid=1, binary="/bin/echo", args=["/bin/echo", "a" * 5000])
    e = Event(id="1", time="2026-01-01T00:00:00Z", type="process_exec", node=Node(name="n"), process=p,
              **EVENT_BASE)
    assert len(otel.body(e)) == otel.BODY_MAX and otel.body(e).endswith("...")
    # the attribute keeps the whole argument
    assert otel.attributes(e)["process.command_args"][1] == "a" * 5000


_text = st.text(max_size=40)
_scalar = st.one_of(_text, st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(_scalar, st.lists(_scalar, max_size=4)), min_size=1, max_size=8))
def test_any_value_encoding_matches_protobuf(values):
    """The hand-written AnyValue/KeyValue encoding against protobuf's own, for any value type."""
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    for i, v in enumerate(values):
        got = KeyValue.FromString(otel.key_value(f"k{i}", v))
        want = KeyValue(key=f"k{i}", value=otel._any_message(v))
        assert got == want


def test_cache_keeps_types_apart():
    enc = otel.LogsEncoder(service_version="1")
    one = enc._attributes({"a": 1})
    true = enc._attributes({"a": True})
    assert one != true
