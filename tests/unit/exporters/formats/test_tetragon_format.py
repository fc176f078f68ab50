"""Tetragon-compatible output: shape and field names of Tetragon's JSON export, golden files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from siemhub.collector.core.event import (
    SCHEMA_VERSION, AgentStatus, BinaryProperties, Caps, Container, Event, Exit, Namespaces, Node, Pod,
    PodContainer, Process,
)
from siemhub.exporters.formats import get_format, tetragon

GOLDEN = Path(__file__).resolve().parents[3] / "golden"


def _proc(pid, **kw):
    base = dict(exec_id=f"bm9kZTox{pid}", pid=pid, tid=pid, ppid=pid - 1, parent_exec_id=f"bm9kZTox{pid - 1}",
                uid=1000, euid=0, gid=1000, egid=0, binary="/usr/bin/sudo", args=["sudo", "ls", "-l", "a b", 'q"x'],
                cwd="/home/u", start_time="2024-01-02T03:04:05.000000001Z")
    base.update(kw)
    return Process(**base)


def _events():
    node = Node(name="node-a", labels={"zone": "z1"})
    child = _proc(10, auid=1000, caps=Caps(effective=["CAP_SYS_ADMIN"], permitted=["CAP_SYS_ADMIN", "CAP_BPF"]),
                  ns=Namespaces(mnt=4026532301, net=4026532303), binary_properties=BinaryProperties(setuid=0),
                  container=Container(id="ab" * 32, runtime="containerd"), flags=["truncated_args"],
                  pod=Pod(namespace="shop", name="web-7d9f-x2k", uid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9",
                          qos_class="BestEffort", container=PodContainer(name="nginx")))
    parent = _proc(9, binary="/bin/bash", args=["bash"], cwd="/", flags=["procfs"])
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=node)
    return {
        "process_exec": Event(id="1", time="2024-01-02T03:04:05.000000002Z", type="process_exec", process=child,
                              parent=parent, ancestors=[_proc(8, binary="/sbin/init", args=["init"])], **base),
        "process_exit": Event(id="2", time="2024-01-02T03:04:06Z", type="process_exit", process=child, parent=parent,
                              exit=Exit(signal="SIGKILL", duration_ns=1), **base),
        "agent_status": Event(id="3", time="2024-01-02T03:04:07Z", type="agent_status",
                              status=AgentStatus(counters={"x": 1}), **base),
    }


@pytest.mark.parametrize("kind", ["process_exec", "process_exit", "agent_status"])
def test_matches_golden(kind, monkeypatch):
    monkeypatch.setattr(tetragon, "_HOST_NS", {"mnt": 4026531840, "net": 4026532303})
    got = tetragon.to_obj(_events()[kind])
    path = GOLDEN / f"tetragon_{kind}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(path.read_text())
    assert got == want, f"tetragon output changed: update {path.name} deliberately (SIEMHUB_UPDATE_GOLDEN=1)"


def test_shape_is_tetragons():
    exec_ = tetragon.to_obj(_events()["process_exec"])
    assert set(exec_) >= {"process_exec", "node_name", "time"}
    p = exec_["process_exec"]["process"]
    # proto field names of tetragon.Process
    assert set(p) <= {"exec_id", "pid", "uid", "cwd", "binary", "arguments", "flags", "start_time", "auid", "pod",
                      "docker", "parent_exec_id", "refcnt", "cap", "ns", "tid", "process_credentials",
                      "binary_properties", "user"}
    assert p["arguments"] == 'ls -l "a b" "q\\"x"'
    assert p["flags"] == "execve truncArgs"
    assert p["docker"] == ("ab" * 32)[:31]
    assert p["ns"]["net"] == {"inum": 4026532303, "is_host": tetragon._host_ns().get("net") == 4026532303}
    assert exec_["process_exec"]["parent"]["flags"] == "procFS rootcwd"
    exit_ = tetragon.to_obj(_events()["process_exit"])["process_exit"]
    assert exit_["signal"] == "SIGKILL" and exit_["status"] == 0


def test_registered_and_encodes_lines():
    fmt = get_format("tetragon")
    lines = fmt.encode_lines(list(_events().values())).splitlines()
    assert [next(iter(json.loads(line))) for line in lines] == ["process_exec", "process_exit", "siemhub_agent_status"]
