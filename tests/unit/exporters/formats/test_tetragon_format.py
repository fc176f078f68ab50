"""Tetragon-compatible output: shape and field names of Tetragon's JSON export, golden files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from siemhub.collector.core.event import (
    SCHEMA_VERSION, AgentStatus, BinaryProperties, Caps, Container, Event, Exit, File, Namespaces, Network, Node,
    Pod, PodContainer, PolicyAction, Privilege, Process,
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



# --- file, network and privilege events: process_kprobe as Tetragon's own policies write them ------------


def _kprobe_events():
    node = Node(name="node-a")
    cat = _proc(20, binary="/usr/bin/cat", args=["cat", "/etc/shadow"], cwd="/root")
    shell = _proc(19, binary="/bin/bash", args=["bash"], cwd="/root")
    curl = _proc(30, binary="/usr/bin/curl", args=["curl", "http://169.254.169.254/"])
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=node)
    tcp = dict(protocol="tcp", family="ipv4", direction="outbound", source_ip="10.0.0.5", source_port=40000,
               destination_ip="169.254.169.254", destination_port=80)
    return {
        "file_read": Event(id="k1", time="2024-01-02T03:04:05Z", type="file_access", process=cat, parent=shell,
                           file=File(operation="open", path="/etc/shadow", flags=["O_RDONLY"], result=3),
                           tags=["policy:fim-sensitive-files"], **base),
        "file_write": Event(id="k2", time="2024-01-02T03:04:05Z", type="file_access", process=cat, parent=shell,
                            file=File(operation="open", path="/etc/passwd", flags=["O_WRONLY", "O_TRUNC"]), **base),
        "file_rename": Event(id="k3", time="2024-01-02T03:04:05Z", type="file_access", process=cat,
                             file=File(operation="rename", path="/etc/cron.d/a", target="/etc/cron.d/b", result=0),
                             **base),
        "file_sigkill": Event(id="k4", time="2024-01-02T03:04:05Z", type="policy_action", process=cat, parent=shell,
                              file=File(operation="open", path="/srv/vault/key", flags=["O_RDONLY"]),
                              policy=PolicyAction(policy="vault", rule="read", action="sigkill", enforced=True),
                              **{**base, "severity": "high"}),
        "network_connect": Event(id="k5", time="2024-01-02T03:04:05Z", type="network_connect", process=curl,
                                 network=Network(**tcp), **base),
        "network_accept": Event(id="k6", time="2024-01-02T03:04:05Z", type="network_accept", process=curl,
                                network=Network(protocol="tcp", family="ipv6", direction="inbound",
                                                source_ip="fd00::9", source_port=50000, destination_ip="fd00::5",
                                                destination_port=443), **base),
        "network_close": Event(id="k7", time="2024-01-02T03:04:05Z", type="network_close", process=curl,
                               network=Network(**tcp, bytes_sent=10, bytes_received=20, duration_ns=5), **base),
        "setuid": Event(id="k8", time="2024-01-02T03:04:05Z", type="privilege_change", process=cat,
                        privilege=Privilege(operation="setuid", old_uid=1000, new_uid=0, result=0),
                        tags=["policy:privilege-escalation"], **{**base, "severity": "high"}),
        "ptrace": Event(id="k9", time="2024-01-02T03:04:05Z", type="privilege_change", process=cat,
                        privilege=Privilege(operation="ptrace", name="PTRACE_ATTACH", target_pid=77, result=0),
                        **base),
    }


@pytest.mark.parametrize("kind", list(_kprobe_events()))
def test_kprobe_matches_golden(kind):
    got = tetragon.to_obj(_kprobe_events()[kind])
    path = GOLDEN / f"tetragon_kprobe_{kind}.json"
    if os.environ.get("SIEMHUB_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(path.read_text())
    assert got == want, f"tetragon output changed: update {path.name} deliberately (SIEMHUB_UPDATE_GOLDEN=1)"


def test_kprobe_shapes_are_tetragons():
    ev = _kprobe_events()
    fim = tetragon.to_obj(ev["file_read"])["process_kprobe"]
    # as Tetragon's file-monitoring policy writes a read of a watched file
    assert fim["function_name"] == "security_file_permission"
    assert fim["args"] == [{"file_arg": {"path": "/etc/shadow"}}, {"int_arg": 4}]
    assert fim["return"] == {"int_arg": 0} and fim["action"] == "KPROBE_ACTION_POST"  # the open's fd 3: allowed
    assert fim["policy_name"] == "fim-sensitive-files" and fim["process"]["binary"] == "/usr/bin/cat"
    assert set(fim) <= {"process", "parent", "function_name", "args", "return", "action", "policy_name", "ancestors"}
    assert tetragon.to_obj(ev["file_write"])["process_kprobe"]["args"][1] == {"int_arg": 2}
    kill = tetragon.to_obj(ev["file_sigkill"])["process_kprobe"]
    assert (kill["action"], kill["policy_name"]) == ("KPROBE_ACTION_SIGKILL", "vault")
    conn = tetragon.to_obj(ev["network_connect"])["process_kprobe"]
    assert conn["function_name"] == "tcp_connect"
    assert conn["args"] == [{"sock_arg": {"family": "AF_INET", "type": "SOCK_STREAM", "protocol": "IPPROTO_TCP",
                                          "saddr": "10.0.0.5", "daddr": "169.254.169.254", "sport": 40000,
                                          "dport": 80, "state": "TCP_SYN_SENT"}}]
    acc = tetragon.to_obj(ev["network_accept"])["process_kprobe"]
    # the socket's own end is saddr: for an accepted connection, our listening address
    assert acc["return"]["sock_arg"]["saddr"] == "fd00::5" and acc["return"]["sock_arg"]["dport"] == 50000
    su = tetragon.to_obj(ev["setuid"])["process_kprobe"]
    assert (su["function_name"], su["args"], su["policy_name"]) == ("__sys_setuid", [{"int_arg": 0}],
                                                                    "privilege-escalation")
    pt = tetragon.to_obj(ev["ptrace"])["process_kprobe"]
    assert pt["args"] == [{"int_arg": 16}, {"int_arg": 77}]


def test_what_has_no_kprobe_shape_keeps_the_wrapper():
    node = Node(name="node-a")
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=node, process=_proc(5))
    dns = Event(id="d", time="2024-01-02T03:04:05Z", type="dns_query", network=Network(
        protocol="udp", family="ipv4", direction="outbound", destination_ip="10.0.0.53", destination_port=53,
        dns_query="example.com"), **base)
    post = Event(id="p", time="2024-01-02T03:04:05Z", type="policy_action", file=File(operation="open", path="/x"),
                 policy=PolicyAction(policy="p", action="post"), **base)
    assert list(tetragon.to_obj(dns))[0] == "siemhub_dns_query"
    assert list(tetragon.to_obj(post))[0] == "siemhub_policy_action"  # its file_access is the kprobe already
