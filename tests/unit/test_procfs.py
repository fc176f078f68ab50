"""procfs.read_process and list_pids against a fake /proc tree under tmp_path (hostile comm,
non-UTF-8, kernel threads, vanished processes)."""

from __future__ import annotations

import pytest

from siemhub.collector import procfs
from siemhub.collector.core.event import unescape_bytes

from .kmsg import make_proc

# =================================================================================================
# procfs.read_process
# =================================================================================================


def test_read_process_stat_with_hostile_comm(tmp_path):
    make_proc(tmp_path, 123, ppid=45, start_ticks=98765, comm=b"a) (b c) S 1", cmdline=b"x\0")
    info = procfs.read_process(123, str(tmp_path))
    assert info is not None
    assert (info.pid, info.ppid, info.start_ticks) == (123, 45, 98765)
    assert info.comm == "a) (b c) S 1"


def test_read_process_fields(tmp_path):
    make_proc(tmp_path, 77, ppid=1, start_ticks=5, comm=b"sshd", exe=b"/usr/sbin/sshd (deleted)",
              cmdline=b"sshd: alice [priv]\0", cwd=b"/var/empty", uids=(1000, 0, 0, 0), gids=(100, 42, 42, 42),
              loginuid=b"1000")
    info = procfs.read_process(77, str(tmp_path))
    assert info.binary == "/usr/sbin/sshd"  # " (deleted)" stripped
    assert info.args == ["sshd: alice [priv]"]
    assert info.cwd == "/var/empty"
    assert (info.uid, info.euid, info.gid, info.egid) == (1000, 0, 100, 42)
    assert info.auid == 1000
    assert info.flags == ["procfs"]


@pytest.mark.parametrize("loginuid, auid", [(b"4294967295", None), (b"4294967295\n", None), (b"0", 0),
                                            (b"1000\n", 1000), (None, None), (b"", None), (b"junk", None)])
def test_read_process_loginuid(tmp_path, loginuid, auid):
    make_proc(tmp_path, 9, ppid=1, start_ticks=5, loginuid=loginuid)
    assert procfs.read_process(9, str(tmp_path)).auid == auid


def test_read_process_non_utf8(tmp_path):
    raw_args = [b"/opt/\xffbin", b"plain", b"back\\slash", b""]
    make_proc(tmp_path, 10, ppid=1, start_ticks=5, exe=b"/opt/\xffbin", cwd=b"/home/\xe9",
              cmdline=b"\0".join(raw_args) + b"\0")
    info = procfs.read_process(10, str(tmp_path))
    assert {"non_utf8_binary", "non_utf8_args", "non_utf8_cwd"} <= set(info.flags)
    assert [unescape_bytes(a) for a in info.args] == raw_args  # every element escaped, all restorable
    assert unescape_bytes(info.binary) == b"/opt/\xffbin"
    assert unescape_bytes(info.cwd) == b"/home/\xe9"


def test_read_process_kernel_thread_and_vanished(tmp_path):
    make_proc(tmp_path, 2, ppid=0, start_ticks=0, comm=b"kthreadd", exe=None, cmdline=b"", cwd=None)
    info = procfs.read_process(2, str(tmp_path))
    assert info.binary == "[kthreadd]" and info.args == [] and info.cwd is None
    assert procfs.read_process(99999, str(tmp_path)) is None
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "stat").write_bytes(b"3 (x) S")  # cut short while reading
    assert procfs.read_process(3, str(tmp_path)) is None


def test_list_pids_only_numeric(tmp_path):
    for name in ("12", "3", "self", "sys", "1x"):
        (tmp_path / name).mkdir()
    assert procfs.list_pids(str(tmp_path)) == [3, 12]
