"""PrivilegeSensor.decode on hand-built kernel messages (packed with messages.PRIV): operations, severity
grading, the agent's own BPF loader dropped, bad messages counted."""

from __future__ import annotations

import os

import pytest

from siemhub.collector.sensors.privilege import PrivilegeSensorConfig
from siemhub.collector.kernel.loader_child import LOADER_MODULE
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.privilege import PrivilegeSensor
from siemhub.collector.sensors.process import SensorContext
from tests.unit.kmsg import Harness, exec_msg

SEC = 10**9
CAP_SYS_ADMIN = 1 << 21


def priv_msg(op: int, *, pid: int = 4242, ktime: int = 6 * SEC, start: int = 3 * SEC, result: int = 0,
             arg: int = 0, target_pid: int = 0, old=(1000, 1000), new=(1000, 1000), gids=(1000, 1000, 1000, 1000),
             caps=(0, 0, 0), name: bytes = b"", source: bytes = b"", target: bytes = b"",
             size: int | None = None) -> bytes:
    return m.PRIV.pack(m.MSG_PRIV, m.PRIV.size if size is None else size, ktime, pid, pid, start, op, target_pid,
                       result, arg, old[0], old[1], old[1], old[1], new[0], new[1], new[1], new[1], *gids, *caps,
                       name, source, target)


@pytest.fixture
def h(tmp_path):
    h = Harness(tmp_path)
    h.priv = PrivilegeSensor(PrivilegeSensorConfig(settle=0, pending={"max_wait": 0}), SensorContext(
        h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    h.decode(exec_msg(4242, ppid=1, ktime=3 * SEC, start=3 * SEC, filename=b"/usr/bin/sudo", args=[b"sudo"]))
    return h


def decode(h, *msgs):
    h.priv.decode(list(msgs))
    return h.priv.join.ready(force=True)


@pytest.mark.parametrize("old,new,caps,severity", [
    ((1000, 0), (0, 0), (CAP_SYS_ADMIN, CAP_SYS_ADMIN, CAP_SYS_ADMIN), "high"),   # setuid-root binary -> real root
    ((1000, 1000), (1000, 0), (0, CAP_SYS_ADMIN, CAP_SYS_ADMIN), "high"),         # euid 0 from nobody-ish
    ((0, 0), (65534, 65534), (CAP_SYS_ADMIN, 0, 0), "low"),                        # root dropping
    ((0, 65534), (0, 0), (0, CAP_SYS_ADMIN, CAP_SYS_ADMIN), "medium"),             # root regaining euid: caps
    ((1000, 1000), (1001, 1001), (0, 0, 0), "low"),
])
def test_setresuid_severity(h, old, new, caps, severity):
    (e,) = decode(h, priv_msg(m.PRIV_SETRESUID, old=old, new=new, caps=caps))
    assert e.type == "privilege_change" and e.severity == severity
    p = e.privilege
    assert (p.operation, p.old_uid, p.new_uid, p.result) == ("setresuid", old[0], new[0], 0)
    assert p.new_caps == (["CAP_SYS_ADMIN"] if caps[1] & ~caps[0] else [])
    assert e.process.binary == "/usr/bin/sudo"


def test_gid_0_gained_is_medium(h):
    (e,) = decode(h, priv_msg(m.PRIV_SETGID, gids=(1000, 1000, 0, 0)))
    assert e.severity == "medium" and (e.privilege.old_gid, e.privilege.new_gid) == (1000, 0)


def test_setfsuid_reports_the_filesystem_uid(h):
    msg = bytearray(priv_msg(m.PRIV_SETFSUID, old=(1000, 1000), new=(1000, 1000)))
    msg[m.PRIV_FIELDS["old_fsuid"]:m.PRIV_FIELDS["old_fsuid"] + 4] = (1000).to_bytes(4, "little")
    msg[m.PRIV_FIELDS["new_fsuid"]:m.PRIV_FIELDS["new_fsuid"] + 4] = (0).to_bytes(4, "little")
    (e,) = decode(h, bytes(msg))
    assert (e.privilege.operation, e.privilege.old_uid, e.privilege.new_uid) == ("setfsuid", 1000, 0)


def test_ptrace_module_mount_memfd(h):
    evs = decode(h,
                 priv_msg(m.PRIV_PTRACE, arg=0x4206, target_pid=77, result=0),
                 priv_msg(m.PRIV_MODULE, arg=1, name=b"rootkit.ko", result=-38),
                 priv_msg(m.PRIV_MOUNT, name=b"tmpfs", source=b"none", target=b"/mnt/x", arg=0),
                 priv_msg(m.PRIV_MEMFD_EXEC, name=b"memfd:x", target=b"/proc/self/fd/3"),
                 priv_msg(m.PRIV_BPF_LOAD, arg=1, name=b"", result=5))
    got = [(e.privilege.operation, e.severity) for e in evs]
    assert got == [("ptrace", "high"), ("module_load", "high"), ("mount", "medium"), ("memfd_exec", "medium"),
                   ("bpf_load", "medium")]
    assert (evs[0].privilege.name, evs[0].privilege.target_pid) == ("PTRACE_SEIZE", 77)
    assert (evs[1].privilege.name, evs[1].privilege.result) == ("rootkit.ko", -38)
    assert (evs[2].privilege.source, evs[2].privilege.target, evs[2].privilege.name) == ("none", "/mnt/x", "tmpfs")
    assert evs[3].privilege.name == "memfd:x"
    assert evs[4].privilege.name == "type:1"


def test_the_agents_own_bpf_loader_is_not_reported(h):
    h.decode(exec_msg(5000, ppid=os.getpid(), ktime=4 * SEC, start=4 * SEC, filename=b"/usr/bin/python3",
                      args=[b"python3", b"-m", LOADER_MODULE.encode(), b"7"]))
    assert decode(h, priv_msg(m.PRIV_BPF_LOAD, pid=5000, start=4 * SEC, name=b"x")) == []
    assert h.priv.own_bpf_loads == 1


@pytest.mark.parametrize("msg,reason", [
    (priv_msg(m.PRIV_SETUID, size=100), "length_mismatch"),
    (priv_msg(99), "unknown_operation"),
    (b"\x0a" + bytes(m.PRIV.size - 1), "unknown_type"),
])
def test_bad_messages_are_counted(h, msg, reason):
    assert decode(h, msg) == []
    assert h.metrics.value("siemhub_decode_errors_total", sensor="privilege", reason=reason) == 1
