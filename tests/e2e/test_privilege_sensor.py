"""End-to-end: privilege changes made by real processes under a real agent (process + privilege sensors):
uid 0 gained through a setuid-root helper, root dropping to nobody, a module load attempt, ptrace attach,
a tmpfs mount, a BPF program load by another process, and exec of a memfd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import running_agent

pytestmark = pytest.mark.bpf

HELPER_C = r"""
#define _GNU_SOURCE
#include <unistd.h>
int main(void) { return setresuid(0, 0, 0) == 0 ? 0 : 1; }
"""


@pytest.fixture(scope="module")
def priv_agent(tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("priv-agent"), """  process: {poll_interval: 0.05}
  privilege: {poll_interval: 0.05}""")


def _priv(agent, pid, operation, where=lambda p: True):
    """The privilege_change events of pid for `operation` (whose privilege section satisfies `where`),
    once one is there. Events of one process can come out in separate polls: each goes once the process
    sensor has read the execs before it (collector/sensors/attribution.py), so wait for the one wanted."""
    return agent.wait_for(lambda e: e["type"] == "privilege_change" and e["process"]["pid"] == pid
                          and e["privilege"]["operation"] == operation and where(e["privilege"]),
                          what=f"{operation} by {pid}")


def _py(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args])


def test_uid_0_gained_through_setuid_root_helper(priv_agent, tmp_path):
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the setuid helper")
    src, helper = tmp_path / "gain.c", tmp_path / "siemhub-gain-root"
    src.write_text(HELPER_C)
    subprocess.run(["gcc", "-O", "-o", str(helper), str(src)], check=True)
    os.chmod(tmp_path, 0o755)
    os.chown(helper, 0, 0)
    os.chmod(helper, 0o4755)
    p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(helper)])
    assert p.wait(10) == 0
    # setpriv itself (same pid, before it execs the helper) dropped to 65534: reported, and low
    drop = _priv(priv_agent, p.pid, "setresuid", lambda p: p["new_uid"] == 65534)
    # same pid, but the image running at the time: setpriv's drop names setpriv, not the helper it exec'd
    assert drop and drop[0]["severity"] == "low" and "image_replaced" not in drop[0]["process"].get("flags", [])
    assert drop[0]["process"]["binary"].endswith("/setpriv")
    (e,) = _priv(priv_agent, p.pid, "setresuid", lambda p: p["new_uid"] == 0)
    assert e["severity"] == "high" and "image_replaced" not in e["process"].get("flags", [])
    assert e["privilege"]["old_uid"] == 65534 and e["privilege"]["new_uid"] == 0
    assert e["privilege"]["result"] == 0
    assert e["process"]["binary"] == str(helper)
    exec_ev = priv_agent.wait_for(lambda x: x["type"] == "process_exec" and x["process"]["pid"] == p.pid
                                  and x["process"]["binary"] == str(helper))[0]
    assert e["process"]["exec_id"] == exec_ev["process"]["exec_id"]


def test_root_dropping_to_nobody_is_low(priv_agent):
    p = _py("import os; os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)")
    assert p.wait(10) == 0
    (e,) = _priv(priv_agent, p.pid, "setresuid")
    assert e["severity"] == "low"
    assert (e["privilege"]["old_uid"], e["privilege"]["new_uid"]) == (0, 65534)
    (g,) = _priv(priv_agent, p.pid, "setresgid")
    assert (g["privilege"]["old_gid"], g["privilege"]["new_gid"]) == (0, 65534)


def test_module_load_attempt_reported_with_result(priv_agent, tmp_path):
    bogus = tmp_path / "siemhub-bogus.ko"
    bogus.write_bytes(b"not an ELF module\n" * 8)
    code = ("import ctypes, os, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "r = libc.syscall(313, fd, b'', 0)\n"  # finit_module on x86-64
            "sys.exit(0 if r == -1 else 1)\n")
    p = _py(code, str(bogus))
    assert p.wait(10) == 0  # the load failed, as it must
    (e,) = _priv(priv_agent, p.pid, "module_load")
    assert e["severity"] == "high"
    assert e["privilege"]["name"] == "siemhub-bogus.ko"
    assert e["privilege"]["result"] < 0  # -ENOEXEC, or -ENOSYS on a kernel without module support


def test_ptrace_attach(priv_agent):
    victim = subprocess.Popen(["/bin/sleep", "30"])
    code = ("import ctypes, os, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
            "pid = int(sys.argv[1])\n"
            "assert libc.ptrace(16, pid, None, None) == 0\n"  # PTRACE_ATTACH
            "os.waitpid(pid, 0)\n"
            "libc.ptrace(17, pid, None, None)\n")  # PTRACE_DETACH
    try:
        p = _py(code, str(victim.pid))
        assert p.wait(10) == 0
        (e,) = _priv(priv_agent, p.pid, "ptrace")
        assert e["severity"] == "high"
        assert e["privilege"]["target_pid"] == victim.pid
        assert e["privilege"]["name"] == "PTRACE_ATTACH" and e["privilege"]["result"] == 0
    finally:
        victim.kill()
        victim.wait()


def test_mount_tmpfs(priv_agent, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    code = ("import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "assert libc.mount(b'siemhub-test', sys.argv[1].encode(), b'tmpfs', 0, b'size=1m') == 0\n"
            "assert libc.umount2(sys.argv[1].encode(), 0) == 0\n")
    p = _py(code, str(target))
    assert p.wait(10) == 0
    (e,) = _priv(priv_agent, p.pid, "mount")
    assert e["severity"] == "medium"
    b = e["privilege"]
    assert (b["source"], b["target"], b["name"], b["result"]) == ("siemhub-test", str(target), "tmpfs", 0)


def test_bpf_program_load_by_another_process(priv_agent):
    code = r"""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
insns = struct.pack("<BBhi", 0xb7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
ibuf = ctypes.create_string_buffer(insns)
lic = ctypes.create_string_buffer(b"GPL")
attr = bytearray(128)
struct.pack_into("<IIQQ", attr, 0, 1, 2, ctypes.addressof(ibuf), ctypes.addressof(lic))  # SOCKET_FILTER
attr[48:48 + 12] = b"siemhub_test"
abuf = ctypes.create_string_buffer(bytes(attr), 128)
fd = libc.syscall(321, 5, abuf, 128)  # bpf(BPF_PROG_LOAD)
sys.exit(0 if fd >= 0 else 1)
"""
    p = _py(code)
    assert p.wait(10) == 0
    (e,) = _priv(priv_agent, p.pid, "bpf_load")
    assert e["severity"] == "medium"
    assert e["privilege"]["name"] == "siemhub_test" and e["privilege"]["result"] >= 0


def test_exec_of_a_memfd(priv_agent):
    code = ("import os\nfd = os.memfd_create('siemhub-fileless', 0)\n"
            "os.write(fd, open('/bin/true', 'rb').read())\n"
            "os.execv(f'/proc/self/fd/{fd}', ['fileless'])\n")
    p = _py(code)
    assert p.wait(10) == 0
    (e,) = _priv(priv_agent, p.pid, "memfd_exec")
    assert e["severity"] == "medium"
    assert e["privilege"]["name"] == "memfd:siemhub-fileless"
    assert e["privilege"]["target"].startswith("/proc/self/fd/")
    assert e["process"]["args"] == ["fileless"]
