"""File sensor decoding from hand-built kernel messages (no kernel needed), the watch-list trie entries,
and the message mirror against the header's constants."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siemhub.collector.sensors.file import FileEnforceRule, FileSensorConfig
from siemhub.collector.process_cache import ProcessCache
from siemhub.collector.sensors import SensorContext
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.file import FileSensor, build_watch_entries, lpm_key, open_flag_names
from tests.unit.kmsg import Harness, exec_msg, make_proc

INCLUDE = Path(__file__).resolve().parents[3] / "bpf" / "include" / "siemhub.h"


def file_msg(pid: int, *, op: int = m.FILE_OPEN, path: bytes = b"/etc/shadow", target: bytes | None = None,
             ktime: int = 6 * 10**9, start: int = 5 * 10**9, tid: int | None = None, result: int = 3,
             flags: int = 0, mode: int = 0, arg_uid: int = 0xFFFFFFFF, arg_gid: int = 0xFFFFFFFF,
             kflags: int = m.FILE_BY_FD, rule: int = 0, ino: int = 819, comm: bytes = b"cat",
             size: int | None = None) -> bytes:
    data = path + b"\0" + (target + b"\0" if target is not None else b"")
    tlen = len(target) + 1 if target is not None else 0
    total = m.FILE.size + len(data)
    return m.FILE.pack(m.MSG_FILE, total if size is None else size, ktime, pid, pid if tid is None else tid,
                       start, result, ino, 2049, 1000, 1000, op, flags, mode, arg_uid, arg_gid, kflags, rule,
                       len(path) + 1, tlen, comm) + data


class FileHarness(Harness):
    def __init__(self, proc_root, enforce=()):
        super().__init__(proc_root)
        cfg = FileSensorConfig(watch=["/etc/shadow"], enforce=list(enforce), pending={"max_wait": 0})
        self.file = FileSensor(cfg, SensorContext(self.node, self.clock, self.ids, self.metrics, self.cache,
                                                  self.emitted.extend))

    def decode_file(self, *msgs):
        from siemhub.collector.sensors.file import _flat
        return self.file.decode(list(msgs)) + _flat(self.file.pending.drain())


@pytest.fixture
def h(tmp_path):
    make_proc(tmp_path, 1, ppid=0, start_ticks=1, comm=b"init", exe=b"/sbin/init", cmdline=b"init\0")
    return FileHarness(tmp_path)


def _known_cat(h, pid=4242):
    h.decode(exec_msg(100, ppid=1, ktime=2 * 10**9, start=2 * 10**9, filename=b"/bin/bash", comm=b"bash"))
    h.decode(exec_msg(pid, ppid=100, ktime=5 * 10**9, start=5 * 10**9, pstart=2 * 10**9, filename=b"/bin/cat",
                      args=[b"cat", b"/etc/shadow"], comm=b"cat"))


def test_read_of_shadow_names_process_and_parent(h):
    _known_cat(h)
    (e,) = h.decode_file(file_msg(4242, flags=0o2000000))
    assert e.type == "file_access" and e.severity == "low"
    assert e.file.operation == "open" and e.file.path == "/etc/shadow"
    assert e.file.flags == ["O_RDONLY", "O_CLOEXEC"] and e.file.inode == 819 and e.file.result == 3
    assert e.process.binary == "/bin/cat" and e.process.pid == 4242
    assert e.parent.binary == "/bin/bash" and e.parent.pid == 100
    assert e.file.mode is None


def test_event_waits_for_the_exec_of_its_image(h):
    """Decoded before the exec that made `cat` (still the forked bash): it waits, then names cat."""
    h.decode(exec_msg(100, ppid=1, ktime=2 * 10**9, start=2 * 10**9, filename=b"/bin/bash", comm=b"bash"))
    h.file.pending.max_age = 10
    assert h.file.decode([file_msg(4242)]) == []
    assert len(h.file.pending) == 1
    h.decode(exec_msg(4242, ppid=100, ktime=5 * 10**9, start=5 * 10**9, pstart=2 * 10**9, filename=b"/bin/cat",
                      comm=b"cat"))
    from siemhub.collector.sensors.file import _flat
    (e,) = _flat(h.file.pending.drain())
    assert e.process.binary == "/bin/cat" and e.parent.pid == 100



def test_a_shell_that_execs_a_shell_waits_for_the_process_sensor(h):
    """sh exec'd sh, whose open is decoded before the second exec: same pid, same comm, so only the
    process sensor's read-up-to time tells the images apart (attribution.py ExecGate)."""
    import time
    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    start = now - 3 * 10**9
    h.decode(exec_msg(100, ppid=1, ktime=2 * 10**9, start=2 * 10**9, filename=b"/bin/bash", comm=b"bash"))
    h.decode(exec_msg(4242, ppid=100, ktime=now - 2 * 10**9, start=start, pstart=2 * 10**9, filename=b"/bin/sh",
                      args=[b"sh", b"-c", b"exec sh -c 'cat < /etc/shadow'"], comm=b"sh"))
    h.cache.exec_horizon = lambda: now - 10**9
    assert h.file.decode([file_msg(4242, start=start, ktime=now, comm=b"sh")]) == []
    assert len(h.file.gate) == 1 and h.file.ready([]) == []
    h.decode(exec_msg(4242, ppid=100, ktime=now - 1000, start=start, pstart=2 * 10**9, filename=b"/bin/sh",
                      args=[b"sh", b"-c", b"cat < /etc/shadow"], comm=b"sh"))
    h.cache.exec_horizon = lambda: now
    (e,) = h.file.ready([])
    assert e.process.args == ["sh", "-c", "cat < /etc/shadow"]
    assert e.process.exec_id == h.cache.exec_id(4242, now - 1000)
    assert h.file.counters()["settle_expired"] == 0
    # once the process sensor is past an event, it goes at once
    (e,) = h.file.decode([file_msg(4242, start=start, ktime=now - 10, comm=b"sh")])
    assert e.process.exec_id == h.cache.exec_id(4242, now - 1000)

def test_rename_chown_chmod_unlink_write(h):
    _known_cat(h)
    evs = h.decode_file(
        file_msg(4242, op=m.FILE_RENAME, path=b"/tmp/w/new", target=b"/tmp/w/passwd", flags=1, kflags=0,
                 result=0, ino=0),
        file_msg(4242, op=m.FILE_CHOWN, path=b"/tmp/w/passwd", arg_uid=0, arg_gid=0xFFFFFFFF, kflags=0, result=0),
        file_msg(4242, op=m.FILE_CHMOD, path=b"/tmp/w/passwd", mode=0o104755, kflags=0, result=-1),
        file_msg(4242, op=m.FILE_UNLINK, path=b"/tmp/w/d", flags=0x200, kflags=0, result=0),
        file_msg(4242, op=m.FILE_WRITE, path=b"/tmp/w/passwd", result=0),
    )
    ren, chown, chmod, unl, wr = (e.file for e in evs)
    assert ren.operation == "rename" and ren.target == "/tmp/w/passwd" and ren.flags == ["RENAME_NOREPLACE"]
    assert ren.inode is None and ren.result == 0
    assert chown.uid == 0 and chown.gid is None
    assert chmod.mode == 0o4755 and chmod.result == -1
    assert unl.flags == ["AT_REMOVEDIR"]
    assert wr.operation == "write" and wr.result is None
    assert all(e.severity == "medium" for e in evs)


def test_open_flags_mode_and_kernel_flags(h):
    _known_cat(h)
    (e,) = h.decode_file(file_msg(4242, flags=0o1101, mode=0o644, kflags=m.FILE_BY_FD | m.FILE_CREATED))
    assert e.file.flags == ["O_WRONLY", "O_CREAT", "O_TRUNC", "created"]
    assert e.file.mode == 0o644 and e.severity == "medium"
    (e,) = h.decode_file(file_msg(4242, op=m.FILE_UNLINK, path=b"etc/x", kflags=m.FILE_RELATIVE))
    assert "relative_path" in e.file.flags and "unnormalized_path" in e.file.flags
    (e,) = h.decode_file(file_msg(4242, op=m.FILE_UNLINK, path=b"/etc/../etc/shadow", kflags=0))
    assert "unnormalized_path" in e.file.flags
    (e,) = h.decode_file(file_msg(4242, path=b"/etc/\xff", kflags=m.FILE_BY_FD))
    assert e.file.path == "/etc/\\xff" and "non_utf8_path" in e.file.flags


def test_sigkill_adds_a_policy_action(tmp_path):
    make_proc(tmp_path, 1, ppid=0, start_ticks=1)
    h = FileHarness(tmp_path, enforce=[FileEnforceRule(path="/etc/shadow", operations=["open_read"])])
    _known_cat(h)
    fa, pa = h.decode_file(file_msg(4242, kflags=m.FILE_BY_FD | m.FILE_KILLED, rule=1))
    assert fa.type == "file_access" and fa.severity == "high" and fa.tags == ["sigkill"]
    assert pa.type == "policy_action" and pa.policy.policy == "file.enforce"
    assert pa.policy.action == "sigkill" and pa.policy.enforced and pa.policy.rule == "/etc/shadow"
    assert pa.process.pid == 4242


def test_malformed_messages_are_counted(h):
    _known_cat(h)
    assert h.decode_file(file_msg(4242, size=10)) == []
    assert h.decode_file(file_msg(4242, op=99)) == []
    assert h.decode_file(b"\x01" + bytes(200)) == []
    assert h.file.decode_errors == 3


def test_unknown_process_is_flagged_after_the_wait(h):
    (e,) = h.decode_file(file_msg(777))
    assert e.process.pid == 777 and "missing_process" in e.process.flags and e.process.comm == "cat"


def test_watch_entries_dirs_files_and_enforcement(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    rule = FileEnforceRule(path=str(d / "secret"), operations=["open_read", "write"])
    entries = build_watch_entries(["/nonexistent-x/file", str(d)], [rule])
    root = str(d).encode()
    assert entries[b"/nonexistent-x/file\0"] == (0, 0, 0)   # missing files are watched by name
    assert entries[root + b"/"] == (0, 0, 0) and entries[root + b"\0"] == (0, 0, 0)
    assert entries[root + b"/secret\0"] == (m.FILE_ENF["open_read"] | m.FILE_ENF["write"], 1, 0)
    key = lpm_key(b"/etc/\0")
    assert len(key) == 4 + m.FILE_KEY_MAX and int.from_bytes(key[:4], "little") == 48


def test_watch_writes_entries_report_changes_unless_a_full_watch_covers_them(tmp_path):
    from siemhub.collector.sensors.file import REPORT_CHANGES

    entries = build_watch_entries(["/etc/", "/var/log/app.log"], [], ["/proc/sys/", "/etc/hosts", "/var/log/"])
    assert REPORT_CHANGES and not REPORT_CHANGES & m.FILE_ENF["open_read"]
    assert entries[b"/proc/sys/"] == (0, 0, REPORT_CHANGES)  # only changes under /proc/sys
    assert entries[b"/etc/hosts\0"][2] == 0  # inside a fully watched directory: everything
    assert entries[b"/var/log/"][2] == REPORT_CHANGES
    assert entries[b"/var/log/app.log\0"][2] == 0  # a full watch below a watch_writes one wins (longest match)


def test_watch_through_a_symlink_adds_the_real_path(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    entries = build_watch_entries([str(tmp_path / "link") + "/"], [])
    assert str(real).encode() + b"/" in entries and str(tmp_path / "link").encode() + b"/" in entries


def test_config_rejects_relative_paths_and_unknown_operations():
    with pytest.raises(Exception, match="absolute"):
        FileSensorConfig(watch=["etc/passwd"])
    with pytest.raises(Exception):
        FileEnforceRule(path="/etc/shadow", operations=["explode"])
    assert "/etc/shadow" in FileSensorConfig().watch and "/etc/ld.so.preload" in FileSensorConfig().watch


def test_open_flag_names():
    assert open_flag_names(0) == ["O_RDONLY"]
    assert open_flag_names(0o2 | 0o2000) == ["O_RDWR", "O_APPEND"]
    assert "O_TMPFILE" in open_flag_names(0o20200002) and "O_DIRECTORY" not in open_flag_names(0o20200002)


def test_mirror_constants_match_the_header():
    text = INCLUDE.read_text()

    def define(name):
        mm = re.search(rf"#define\s+{name}\s+(?:\(1U << (\d+)\)|(\d+))", text) or re.search(rf"\b{name}\s*=\s*(\d+)", text)
        assert mm, name
        g = [x for x in mm.groups() if x is not None][0]
        return 1 << int(g) if "1U <<" in mm.group(0) else int(g)

    assert m.MSG_FILE == define("SH_MSG_FILE")
    assert m.FILE_PATH_MAX == define("SH_FILE_PATH_MAX") and m.FILE_KEY_MAX == define("SH_FILE_KEY_MAX")
    for name in ("OPEN", "WRITE", "UNLINK", "RENAME", "CHMOD", "CHOWN", "TRUNCATE"):
        assert getattr(m, f"FILE_{name}") == define(f"SH_FILE_{name}")
    for name in ("TRUNC_PATH", "TRUNC_TARGET", "RELATIVE", "RELATIVE_TARGET", "KILLED", "CREATED", "BY_FD",
                 "NO_PATH"):
        assert getattr(m, f"FILE_{name}") == define(f"SH_FILE_{name}")
    for op, bit in m.FILE_ENF.items():
        assert bit == define(f"SH_FILE_ENF_{op.upper()}")


def test_struct_format_reads_each_field_at_its_offset():
    raw = m.FILE.pack(m.MSG_FILE, 0, 0, *range(1, 18), b"abcdefghijklmnop")
    assert len(raw) == m.SIZES["sh_msg_file"] == 112
    fields = m.FILE.unpack_from(raw)
    names = ["type", "size", "ktime", *m.FILE_FIELDS]
    for name, off in m.FILE_FIELDS.items():
        v = fields[names.index(name)]
        if name == "comm":
            assert raw[off:off + 16] == v
        else:
            width = {"start_boottime": 8, "result": 8, "ino": 8, "path_len": 2, "target_len": 2}.get(name, 4)
            assert int.from_bytes(raw[off:off + width], "little", signed=name == "result") == v, name


def test_below_entries_name_every_directory_with_watch_entries_under_it():
    """The kernel's verdict cache calls a directory "nothing watched inside" only when it is not here."""
    from siemhub.collector.sensors.file import below_entries

    entries = build_watch_entries(["/etc/passwd", "/etc/ssh/", "/var/lib/kubelet/config.yaml", "/"], [])
    below = below_entries(entries)
    assert below == {b"/": 1, b"/etc/": 5, b"/var/": 5, b"/var/lib/": 9, b"/var/lib/kubelet/": 17}
    assert b"/etc/ssh/" not in below, "a watched directory with nothing listed under it is a plain prefix"
    assert below_entries(build_watch_entries(["/etc/ssh/", "/etc/ssh/sshd_config"], []))[b"/etc/ssh/"] == 9
