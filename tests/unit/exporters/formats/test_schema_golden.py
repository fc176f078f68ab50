"""Golden files: the native JSON of one event per event type, built from fixed inputs through the real
code paths (the process sensor's decode(), the agent's status_event()), compared byte for byte.

A difference here is a schema change a SIEM consumer can notice. If it is deliberate: bump
SCHEMA_VERSION in collector/core/event.py, update docs/schema.md, then regenerate the golden files with
SIEMHUB_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node, encode_json

from tests.unit.kmsg import TICK, Harness, add_bundle, add_pod, exec_msg, exit_msg, make_clock, make_ids, make_proc

REPO = Path(__file__).resolve().parents[4]
GOLDEN = REPO / "tests" / "golden"
SCHEMA_DOC = REPO / "docs" / "schema.md"
TYPES = ("process_exec", "process_exit", "agent_status", "dns_query")
# keys below these are data (label names, counter names), not schema fields
MAPS = {"labels", "counters"}

CHANGE_HELP = (
    "The native JSON of a {type} event changed ({what}).\n"
    "This is a schema change a SIEM consumer can notice. If it is deliberate:\n"
    "  1. bump SCHEMA_VERSION in collector/core/event.py (now {version!r}),\n"
    "  2. document the change in docs/schema.md,\n"
    "  3. regenerate: SIEMHUB_UPDATE_GOLDEN=1 pytest tests/unit/exporters/formats/test_schema_golden.py, and review the diff.\n"
    "If it is not deliberate, fix the code, not the golden file."
)


def _process_events(tmp_path: Path) -> dict[str, Event]:
    proc = tmp_path / "proc"
    make_proc(proc, 1000, ppid=1, start_ticks=100, comm=b"bash", exe=b"/usr/bin/bash", cmdline=b"-bash\0",
              cwd=b"/home/alice", uids=(1000,) * 4, gids=(1000,) * 4, loginuid=b"1000")
    # the kubelet's directories for the pod of the container below (tests/unit/kmsg.py: add_pod)
    uid = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
    add_pod(tmp_path / "k8s", "shop", "web-7d9f-x2k", uid, {"curl": "ab" * 32})
    add_bundle(tmp_path / "k8s", "ab" * 32, {  # containerd's OCI bundle of the container: its image
        "io.kubernetes.cri.container-name": "curl", "io.kubernetes.cri.image-name": "docker.io/curlimages/curl:8.5.0",
        "io.kubernetes.cri.sandbox-name": "web-7d9f-x2k", "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-uid": uid})
    h = Harness(proc, node=Node(name="node-a", labels={"zone": "eu-1"}))
    start = 7 * 10**9 - 250_000
    exe = h.one(exec_msg(4242, ppid=1000, pstart=100 * TICK, ktime=7 * 10**9 + 123, start=start,
                         filename=b"/usr/bin/curl", args=[b"curl", b"-s", b"https://example.com/"],
                         cwd=[b"home", b"alice"], uid=1000, gid=1000, euid=0, egid=0, auid=1000,
                         cgroup_id=4096, comm=b"curl", flags=0, cap_eff=(1 << 21) | (1 << 12),
                         cap_prm=(1 << 21) | (1 << 12) | (1 << 7),
                         ns=(4026532301, 4026532302, 4026532303, 4026531837, 4026532304, 4026532305, 4026531835),
                         cgroup=(b"cri-containerd-" + b"ab" * 32 + b".scope",
                                 b"kubepods-besteffort-pod1f2e3d4c_5b6a_4978_8695_a4b3c2d1e0f9.slice")))
    ext = h.one(exit_msg(4242, ktime=9 * 10**9 + 456, code=2 << 8, start=start))
    return {"process_exec": exe, "process_exit": ext, "dns_query": _dns_query(h, start)}


def _dns_query(h: Harness, start: int) -> Event:
    """The network sensor's decode() of an AAAA query curl sent (before its exit, through the same cache)."""
    import ipaddress
    import struct

    from siemhub.collector.sensors.network import NetworkSensorConfig
    from siemhub.collector.sensors import SensorContext
    from siemhub.collector.sensors import messages as m
    from siemhub.collector.sensors.network import NetworkSensor

    net = NetworkSensor(NetworkSensorConfig(settle=0, pending={"max_wait": 0}),
                        SensorContext(h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    query = (struct.pack(">6H", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00" + struct.pack(">HH", 28, 1))
    net.decode([m.DNS.pack(m.MSG_DNS, m.DNS.size, 8 * 10**9 + 789, 4242, 4243, start, len(query), 10, 41000, 53,
                           len(query), m.DNS_SENDMMSG, 1, 0, ipaddress.ip_address("fd00::5").packed,
                           ipaddress.ip_address("fd00::53").packed, query)])
    (e,) = net.join.ready(force=True)
    return e


def _agent_status() -> Event:
    """Agent.status_event() on a stand-in agent with fixed counters, time and id."""
    from siemhub.collector.agent import Agent

    class _Cache:  # len() needs a real __len__
        evicted = 7

        def __len__(self) -> int:
            return 321

    class _Clock(type(make_clock())):
        __slots__ = ()

        def now(self) -> str:
            return self.from_boot(11 * 10**9)

    clock = _Clock()
    clock._offset = make_clock()._offset
    stub = SimpleNamespace(
        cache=_Cache(),
        sensors=[SimpleNamespace(name="process", counters=lambda: {"ringbuf_lost_exec": 0, "decode_errors": 2})],
        pipeline=SimpleNamespace(runners={"siem": SimpleNamespace(sent=1234, dropped={"queue_full": 5})}),
        ids=make_ids(), clock=clock, node=Node(name="node-a", labels={"zone": "eu-1"}),
    )
    return Agent.status_event(stub)


@pytest.fixture
def events(tmp_path) -> dict[str, Event]:
    return {**_process_events(tmp_path), "agent_status": _agent_status()}


def _pretty(e: Event) -> str:
    return json.dumps(json.loads(encode_json(e)), indent=2, ensure_ascii=False) + "\n"


def _key_paths(obj, prefix: str = "") -> list[str]:
    """Every key, dotted, in document order (list elements share their list's path)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}{k}"
            out.append(path)
            if k not in MAPS:
                out += _key_paths(v, path + ".")
    elif isinstance(obj, list):
        for v in obj:
            out += [p for p in _key_paths(v, prefix) if p not in out]
    return out


@pytest.mark.parametrize("etype", TYPES)
def test_native_json_matches_golden(events, etype):
    e = events[etype]
    assert e.type == etype
    text = _pretty(e)
    path = GOLDEN / f"native_{etype}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"golden file rewritten: {path.name} (review the diff)")  # then compared as usual
    assert path.exists(), f"missing golden file {path.relative_to(REPO)}; create it with SIEMHUB_UPDATE_GOLDEN=1"
    want_text = path.read_text(encoding="utf-8")
    want, got = json.loads(want_text), json.loads(text)
    help_ = lambda what: CHANGE_HELP.format(type=etype, what=what, version=SCHEMA_VERSION)  # noqa: E731
    assert got == want, help_("values or fields differ") + f"\n--- golden\n{want_text}\n+++ now\n{text}"
    assert _key_paths(got) == _key_paths(want), help_("key order differs")
    assert text == want_text, help_("bytes differ")


def test_golden_schema_version_is_current():
    for etype in TYPES:
        obj = json.loads((GOLDEN / f"native_{etype}.json").read_text(encoding="utf-8"))
        assert obj["schema_version"] == SCHEMA_VERSION, (
            f"native_{etype}.json says schema {obj['schema_version']!r}, the code says {SCHEMA_VERSION!r}: "
            "regenerate the golden files (SIEMHUB_UPDATE_GOLDEN=1) after a deliberate schema change")


def test_every_golden_key_is_documented():
    assert SCHEMA_DOC.exists(), "docs/schema.md documents the native format: it must exist"
    doc = SCHEMA_DOC.read_text(encoding="utf-8")
    missing = []
    for etype in TYPES:
        obj = json.loads((GOLDEN / f"native_{etype}.json").read_text(encoding="utf-8"))
        for path in _key_paths(obj):
            leaf = path.rsplit(".", 1)[-1]
            # documented in backticks, as the dotted path or as the field name inside its section's table
            if f"`{path}`" not in doc and f"`{leaf}`" not in doc:
                missing.append(f"{etype}: {path}")
    assert not missing, "fields present in the native JSON but not documented in docs/schema.md:\n" + "\n".join(
        sorted(set(missing)))
    for etype in TYPES:
        assert etype in doc, f"event type {etype} is not documented in docs/schema.md"
