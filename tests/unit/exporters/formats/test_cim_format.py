"""The CIM format (exporters/formats/cim.py): golden files (tests/golden/cim_<type>.json; regenerate
deliberately with SIEMHUB_UPDATE_GOLDEN=1), every emitted field documented in docs/cim-mapping.md, and
the CIM names and values the Splunk data models expect."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from siemhub.collector.core.event import decode_json
from siemhub.exporters.formats import cim, get_format
from tests.unit.exporters.formats.test_ecs_format import EVENTS, EXTRA

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"

ALL = [decode_json(t) for t in [*EVENTS.values(), *EXTRA]]
# one golden file per event type (the first event of each type)
GOLDEN_EVENTS: dict[str, str] = {}
for _t in [*EVENTS.values(), *EXTRA]:
    GOLDEN_EVENTS.setdefault(json.loads(_t)["type"], _t)


def documented_fields() -> set[str]:
    text = (REPO / "docs" / "cim-mapping.md").read_text(encoding="utf-8")
    out = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            out.update(re.findall(r"`([a-z0-9_]+)`", first))
    return out


def test_every_emitted_field_is_documented():
    doc = documented_fields()
    emitted = {k for e in ALL for k in cim.to_cim(e)}
    assert emitted - doc == set(), "document these in docs/cim-mapping.md"


@pytest.mark.parametrize("etype", sorted(GOLDEN_EVENTS))
def test_cim_golden(etype):
    obj = cim.to_cim(decode_json(GOLDEN_EVENTS[etype]))
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / f"cim_{etype}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
        print(f"golden file rewritten: {path.name} (review the diff)")
    assert path.exists(), f"missing {path.name}; create it with SIEMHUB_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"the CIM object of {etype} changed; if deliberate, update docs/cim-mapping.md and regenerate "
        "with SIEMHUB_UPDATE_GOLDEN=1")


def _by_id(i: str):
    return next(e for e in ALL if e.id == i)


def test_endpoint_processes_fields():
    d = cim.to_cim(_by_id("00000000deadbeef-1"))
    assert d["process"] == "curl -s https://example.com/" and d["process_path"] == "/usr/bin/curl"
    assert d["process_name"] == d["process_exec"] == "curl" and d["process_id"] == 4242
    assert d["parent_process_path"] == "/usr/bin/bash" and d["parent_process_name"] == "bash"
    assert d["parent_process_id"] == 1000 and d["parent_process_guid"] == "bm9kZS1hOjEwMDA6MTAwMA=="
    assert d["user"] == d["user_id"] == "0" and d["dest"] == d["dvc"] == "node-a"
    assert d["action"] == "allowed" and d["vendor_product"] == "siemhub" and d["severity"] == "informational"
    assert d["k8s_namespace"] == "shop" and d["container_image"] == "registry:5000/nginx:1.25"
    # flat: every value is a scalar or a list of scalars, except the documented objects
    for k, v in d.items():
        if k not in ("node_labels", "counters"):
            assert not isinstance(v, dict), k


def test_filesystem_actions():
    read = cim.to_cim(_by_id("x-6"))
    assert (read["action"], read["file_path"], read["file_name"]) == ("read", "/etc/shadow", "shadow")
    rename = cim.to_cim(_by_id("x-7"))
    assert rename["action"] == "modified" and rename["status"] == "failure"
    assert rename["file_target_path"] == "/etc/passwd"


def test_network_traffic_fields():
    d = cim.to_cim(_by_id("x-9"))  # inbound accept
    assert (d["src_ip"], d["src_port"], d["dest_ip"], d["dest_port"]) == ("10.0.0.9", 5555, "10.0.0.1", 22)
    assert d["dest"] == "10.0.0.1" and d["dvc"] == "node-a" and d["transport"] == "tcp"
    assert d["direction"] == "inbound" and d["action"] == "allowed"
    close = cim.to_cim(_by_id("x-8"))
    assert close["action"] == "teardown" and close["bytes_out"] == 10 and close["bytes_in"] == 20
    assert close["bytes"] == 30 and close["duration"] == 5e-9
    flow = cim.to_cim(_by_id("x-flow"))  # UDP flow, outbound: 50 datagrams out, none in
    assert cim.category("network_flow") == "network" and flow["transport"] == "udp" and flow["action"] == "allowed"
    assert (flow["packets_out"], flow["packets_in"], flow["packets"], flow["bytes_out"]) == (50, 0, 50, 5000)
    assert flow["flow_end"] == "close" and flow["duration"] == 2.0
    dns = cim.to_cim(_by_id("x-12"))
    assert dns["query"] and dns["record_type"] == "AAAA" and dns["app"] == "dns"


def test_change_and_alert_fields():
    p = cim.to_cim(_by_id("x-10"))
    assert (p["src_user"], p["user"], p["change_type"]) == ("1000", "0", "privilege")
    pol = cim.to_cim(_by_id("x-11"))
    assert pol["action"] == "blocked" and pol["signature"] == "fim/shadow" and pol["policy_name"] == "fim"
    assert pol["severity"] == "high" and pol["reason"] == "read /etc/shadow" and pol["process_name"] == "curl"


def test_sourcetype_categories_cover_every_event_type():
    from siemhub.collector.core.event import EVENT_TYPES

    assert set(cim.SOURCETYPE_CATEGORY) == set(EVENT_TYPES)
    assert set(cim.SOURCETYPE_CATEGORY.values()) == set(cim.CATEGORIES)


def test_format_is_registered():
    f = get_format("cim")
    lines = f.encode_lines(ALL[:3]).splitlines()
    assert [json.loads(x)["event_id"] for x in lines] == ["00000000deadbeef-1", "00000000deadbeef-2",
                                                           "00000000deadbeef-3"]
