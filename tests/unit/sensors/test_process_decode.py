"""Decoding of raw kernel messages by ProcessSensor.decode() (never load()ed), against a fake /proc
tree under tmp_path (the procfs reader and the process cache have their own test files)."""

from __future__ import annotations

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siemhub.collector.core.event import unescape_bytes
from siemhub.collector.sensors import messages as m

from tests.unit.kmsg import INIT_START, S, NO_AUID, TICK, Harness, exec_msg, exit_msg, fork_msg


# =================================================================================================
# ProcessSensor.decode: exec
# =================================================================================================


def test_exec_event_fields(h):
    ktime, start = 5 * S + 7, 5 * S - 100
    e = h.one(exec_msg(4242, tid=4243, ppid=1, pstart=INIT_START * TICK, ktime=ktime, start=start,
                       filename=b"/usr/bin/env", args=[b"env", b"A=1", b"", b"x y"], cwd=[b"srv", b"app data"],
                       uid=1000, gid=100, euid=0, egid=0, auid=NO_AUID, comm=b"env", cgroup_id=77))
    p = e.process
    assert e.type == "process_exec" and e.time == h.clock.from_boot(ktime) and e.severity == "info"
    assert (p.pid, p.tid, p.ppid) == (4242, 4243, 1)
    assert p.binary == "/usr/bin/env"
    assert p.args == ["env", "A=1", "", "x y"]
    assert p.cwd == "/srv/app data"  # components arrive leaf-first
    assert (p.uid, p.euid, p.gid, p.egid) == (1000, 0, 100, 0)
    assert p.auid is None
    assert p.comm == "env" and p.cgroup_id == 77
    assert p.flags == []
    assert p.exec_id == h.cache.exec_id(4242, ktime)
    assert e.parent is not None and e.parent.pid == 1 and e.parent.binary == "/usr/lib/systemd/systemd"
    assert p.parent_exec_id == e.parent.exec_id
    assert h.cache.get(4242, start).proc is p
    assert h.errors() == 0


@pytest.mark.parametrize("auid, want", [(NO_AUID, None), (0, 0), (1000, 1000)])
def test_exec_auid(h, auid, want):
    assert h.one(exec_msg(10, auid=auid)).process.auid == want


def test_exec_cwd_root_and_unknown(h):
    assert h.one(exec_msg(10, cwd=[])).process.cwd == "/"
    e = h.one(exec_msg(11, cwd=[], flags=m.EXEC_TRUNC_CWD))
    assert e.process.cwd is None and "truncated_cwd" in e.process.flags


def test_parent_resolved_from_cache_after_fork(h):
    # bash (exec seen) forks a subshell that never execs; the subshell forks and execs curl
    h.one(exec_msg(100, ppid=1, pstart=INIT_START * TICK, ktime=10 * S, start=9 * S, filename=b"/bin/bash"))
    assert h.decode(fork_msg(200, 100, ktime=11 * S)) == []
    assert h.decode(fork_msg(300, 200, ktime=12 * S)) == []
    e = h.one(exec_msg(300, ppid=200, pstart=11 * S, ktime=13 * S, start=12 * S, filename=b"/usr/bin/curl"))
    sub = h.cache.get(200).proc
    assert e.parent is not None and e.parent.pid == 200
    assert e.parent.binary == "/bin/bash" and "clone" in e.parent.flags
    assert e.process.parent_exec_id == sub.exec_id == e.parent.exec_id
    assert sub.parent_exec_id == h.cache.get(100).proc.exec_id
    assert "missing_parent" not in e.process.flags


def test_unknown_parent_is_flagged(h):
    e = h.one(exec_msg(10, ppid=5555, pstart=3 * S))
    assert e.parent is None and e.process.parent_exec_id is None
    assert "missing_parent" in e.process.flags


@pytest.mark.parametrize("filename, binary", [
    (b"./bin/tool", "/opt/x/bin/tool"), (b"tool", "/opt/x/tool"), (b"../y", "/opt/y"), (b"/abs/z", "/abs/z")])
def test_relative_filename_made_absolute(h, filename, binary):
    assert h.one(exec_msg(10, filename=filename, cwd=[b"opt", b"x"])).process.binary == binary


@pytest.mark.parametrize("kflags, flag", [(m.EXEC_TRUNC_ARGS, "truncated_args"),
                                          (m.EXEC_TRUNC_FILENAME, "truncated_binary"),
                                          (m.EXEC_TRUNC_CWD, "truncated_cwd"),
                                          (m.EXEC_ARGS_FAULT, "args_unreadable")])
def test_truncation_flags(h, kflags, flag):
    e = h.one(exec_msg(10, flags=kflags, cwd=[b"a"]))
    assert flag in e.process.flags
    assert h.one(exec_msg(11, cwd=[b"a"])).process.flags == []


def test_truncated_args_keep_the_partial_last_argument(h):
    msg = exec_msg(10, args=[b"a", b"bcdef"], flags=m.EXEC_TRUNC_ARGS)
    # cut the argv area after "bc" as the kernel does when it runs out of room (no final NUL)
    fixed, data = msg[: m.EXEC.size], msg[m.EXEC.size :]
    fn_off = m.EXEC_FIELDS["filename_len"]
    fn_len, args_len = struct.unpack_from("<HH", fixed, fn_off)
    argv = data[fn_len : fn_len + args_len][:4]  # b"a\0bc"
    fixed = bytearray(fixed)
    struct.pack_into("<I", fixed, 4, m.EXEC.size + fn_len + len(argv))
    struct.pack_into("<HHH", fixed, fn_off, fn_len, len(argv), 0)
    e = h.one(bytes(fixed) + data[:fn_len] + argv)
    assert e.process.args == ["a", "bc"] and "truncated_args" in e.process.flags


def test_non_utf8_binary_args_cwd_round_trip(h):
    raw_fn = b"/tmp/\xff\\x41evil"
    raw_args = [b"\xfe\xfe", b"ok", b"a\\b", b""]
    e = h.one(exec_msg(10, filename=raw_fn, args=raw_args, cwd=[b"d\xe9j\xe0"]))
    p = e.process
    assert {"non_utf8_binary", "non_utf8_args", "non_utf8_cwd"} <= set(p.flags)
    assert unescape_bytes(p.binary) == raw_fn
    assert [unescape_bytes(a) for a in p.args] == raw_args
    assert unescape_bytes(p.cwd) == b"/d\xe9j\xe0"
    # valid UTF-8 is never flagged
    q = h.one(exec_msg(11, filename="/usr/bin/caf\u00e9".encode(), args=["\u00e9t\u00e9".encode()])).process
    assert q.binary == "/usr/bin/caf\u00e9" and q.args == ["\u00e9t\u00e9"] and q.flags == []
    # the same command lines again: served from the sensor's memo, with the same flags
    again = h.one(exec_msg(12, filename=raw_fn, args=raw_args, cwd=[b"d\xe9j\xe0"])).process
    assert again.args == p.args and {"non_utf8_binary", "non_utf8_args", "non_utf8_cwd"} <= set(again.flags)
    assert h.one(exec_msg(13, filename="/usr/bin/caf\u00e9".encode(), args=["\u00e9t\u00e9".encode()])).process.flags == []


# =================================================================================================
# ProcessSensor.decode: exit
# =================================================================================================


def _exec_then_exit(h, code, *, pid=4242, exec_k=10 * S, exit_k=12 * S + 5):
    start = exec_k - 1000
    ex = h.one(exec_msg(pid, ktime=exec_k, start=start, ppid=1, pstart=INIT_START * TICK))
    out = h.one(exit_msg(pid, ktime=exit_k, code=code, start=start))
    return ex, out


def test_exit_code(h):
    ex, out = _exec_then_exit(h, 3 << 8)
    assert out.type == "process_exit" and out.time == h.clock.from_boot(12 * S + 5)
    assert out.exit.code == 3 and out.exit.signal is None and out.exit.core_dumped is False
    assert out.exit.duration_ns == 2 * S + 5
    assert out.process.exec_id == ex.process.exec_id  # the same image as its exec
    assert out.parent is not None and out.parent.pid == 1
    assert "missing_process" not in out.process.flags


def test_exit_zero(h):
    _, out = _exec_then_exit(h, 0)
    assert out.exit.code == 0 and out.exit.signal is None


def test_exit_killed_by_sigkill(h):
    _, out = _exec_then_exit(h, 9)
    assert out.exit.signal == "SIGKILL" and out.exit.code is None and not out.exit.core_dumped


def test_exit_core_dumped(h):
    _, out = _exec_then_exit(h, 0x80 | 11)
    assert out.exit.signal == "SIGSEGV" and out.exit.core_dumped is True and out.exit.code is None


def test_exit_marks_entry_exited(h):
    _exec_then_exit(h, 0, pid=77)
    entry = h.cache.get(77)
    assert entry is not None and entry.exited  # resolvable until exit_delay passes
    h.cache.evict(now=time.monotonic() + h.cache.exit_delay + 1)
    assert h.cache.get(77) is None


def test_exit_of_unknown_pid(h):
    out = h.one(exit_msg(31337, ktime=5 * S, code=1 << 8, start=4 * S))
    assert out.process.pid == 31337 and out.process.flags == ["missing_process"]
    assert out.parent is None
    assert out.exit.code == 1 and out.exit.duration_ns is None


def test_exit_of_forked_child_uses_clone(h):
    h.one(exec_msg(100, ktime=10 * S, start=9 * S, filename=b"/bin/bash"))
    h.decode(fork_msg(200, 100, ktime=11 * S))
    out = h.one(exit_msg(200, ktime=15 * S, code=0, start=11 * S))
    assert out.process.binary == "/bin/bash" and "clone" in out.process.flags
    assert out.parent.pid == 100


def test_exit_of_a_child_of_a_subshell_names_both(h):
    """bash 100 forks subshell 200 (never execs), which forks 300 (a pipeline element: exits without
    exec'ing while 200 runs). The kernel sends 200's fork with 300's, ahead of 300's exit."""
    h.one(exec_msg(100, ktime=10 * S, start=9 * S, filename=b"/bin/bash"))
    h.decode(fork_msg(300, 200, ktime=12 * S), fork_msg(200, 100, ktime=11 * S))
    out = h.one(exit_msg(300, ktime=15 * S, start=12 * S))
    assert out.process.binary == "/bin/bash" and "clone" in out.process.flags
    assert out.parent.pid == 200 and "clone" in out.parent.flags
    assert h.sensor.missing == {}


def test_unexeced_parent_deeper_than_the_kernel_sends_is_read_from_the_forks_map(h):
    """A chain of un-exec'd forks longer than the kernel sends ahead: the parent comes from the
    kernel's forks map (fork_source), not lost."""
    h.one(exec_msg(100, ktime=10 * S, start=9 * S, filename=b"/bin/bash"))
    kernel = {200: (100, 11 * S, 11 * S)}
    h.cache.fork_source = kernel.get
    h.decode(fork_msg(300, 200, ktime=12 * S))
    out = h.one(exit_msg(300, ktime=15 * S, start=12 * S))
    assert out.process.binary == "/bin/bash" and out.parent.pid == 200


def test_missing_process_counted_by_cause(h):
    h.sensor._attached_ns = 5 * S
    h.one(exit_msg(31337, ktime=6 * S, start=4 * S))  # started before the sensor attached
    h.decode(fork_msg(31338, 4242, ktime=7 * S))  # its parent was never seen (nor in /proc)
    h.one(exit_msg(31338, ktime=8 * S, start=7 * S))
    h.one(exit_msg(31339, ktime=8 * S, start=7 * S))  # neither fork nor exec seen
    assert h.sensor.missing == {"before_attach": 1, "parent_unknown": 1, "not_seen": 1}
    assert h.sensor.counters()["missing_process_parent_unknown"] == 1
    assert h.metrics.value("siemhub_process_missing_total", cause="not_seen") == 1


def test_reused_pid_is_not_mistaken_for_the_old_process(h):
    old = h.one(exec_msg(700, ktime=1 * S + 10, start=1 * S, filename=b"/bin/old"))
    # a new process got pid 700 (its fork was not seen) and exits: not the old image
    out = h.one(exit_msg(700, ktime=3 * S, code=0, start=2 * S))
    assert out.process.binary == "" and out.process.flags == ["missing_process"]
    assert out.process.exec_id != old.process.exec_id
    assert not h.cache.get(700).exited
    new = h.one(exec_msg(700, ktime=4 * S + 10, start=4 * S, filename=b"/bin/new"))
    # a child of the *old* 700 is not given the new one as parent
    orphan = h.one(exec_msg(800, ppid=700, pstart=1 * S))
    assert orphan.parent is None and "missing_parent" in orphan.process.flags
    child = h.one(exec_msg(801, ppid=700, pstart=4 * S))
    assert child.parent.exec_id == new.process.exec_id
    # a late exit of the old process does not end the new one
    late = h.one(exit_msg(700, ktime=5 * S, code=0, start=1 * S))
    assert late.process.flags == ["missing_process"] and not h.cache.get(700).exited
    done = h.one(exit_msg(700, ktime=6 * S, code=0, start=4 * S))
    assert done.process.exec_id == new.process.exec_id and done.exit.duration_ns == 2 * S - 10


# =================================================================================================
# malformed messages
# =================================================================================================


def _good_exec() -> bytes:
    return exec_msg(10, args=[b"a", b"b"], cwd=[b"x"])


@pytest.mark.parametrize("msg, reason", [
    (b"", "IndexError"),
    (bytes([9]) + b"\0" * 40, "unknown_type"),
    (bytes([0]) * 64, "unknown_type"),
    (_good_exec()[:50], "error"),  # cut inside the fixed part (struct.error)
    (_good_exec()[:-3], "ValueError"),  # cut inside the data
    (_good_exec() + b"junk", "ValueError"),  # more bytes than the size field says
    (exec_msg(10, size=4096), "ValueError"),  # size field wrong
    (exec_msg(10, fn_len=5000), "ValueError"),  # a length field points past the end
    (fork_msg(1, 2, ktime=S)[:20], "error"),
    (exit_msg(1, ktime=S, start=S)[:39], "error"),
], ids=["empty", "type-9", "type-0", "exec-cut-fixed", "exec-cut-data", "exec-extra-bytes", "exec-size-field",
        "exec-fn-len", "fork-cut", "exit-cut"])
def test_malformed_messages_are_counted_never_raised(h, msg, reason):
    before = len(h.cache)
    assert h.decode(msg) == []
    assert h.errors() == 1
    assert h.errors(reason) == 1
    assert len(h.cache) == before


def test_bad_messages_do_not_stop_the_batch(h):
    events = h.decode(b"\x07garbage", _good_exec(), b"", exit_msg(10, ktime=2 * S, start=5 * S), b"\x01short")
    assert [e.type for e in events] == ["process_exec", "process_exit"]
    assert h.errors() == 3


@pytest.mark.parametrize("msg", [fork_msg(300, 1, ktime=S, size=999), exit_msg(1, ktime=S, start=S, size=7),
                                 exit_msg(1, ktime=S, start=S) + b"trailing"],
                         ids=["fork-size-999", "exit-size-7", "exit-trailing-bytes"])
def test_wrong_size_field_on_fork_and_exit_is_a_decode_error(h, msg):
    h.decode(msg)
    assert h.errors() == 1


@pytest.fixture(scope="module")
def fuzz_harness(tmp_path_factory):
    return Harness(tmp_path_factory.mktemp("emptyproc"))


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from([m.MSG_EXEC, m.MSG_FORK, m.MSG_EXIT]), st.binary(max_size=300)).map(
        lambda t: bytes([t[0]]) + t[1]),
))
def test_random_bytes_never_raise(fuzz_harness, msg):
    h = fuzz_harness
    before = h.errors()
    events = h.decode(msg)  # must not raise
    errors = h.errors() - before
    assert errors + len(events) <= 1
    kind = msg[0] if msg else None
    size = {m.MSG_EXEC: m.EXEC.size, m.MSG_FORK: m.FORK.size, m.MSG_EXIT: m.EXIT.size}.get(kind)
    if size is None or len(msg) < size:
        assert errors == 1, "a message that cannot be a kernel message must be counted"
    if kind == m.MSG_EXEC and errors == 0:
        assert m.HDR.unpack_from(msg)[1] == len(msg)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_random_length_fields_never_raise(fuzz_harness, fn_len, args_len, cwd_len):
    h = fuzz_harness
    msg = bytearray(exec_msg(10, filename=b"/bin/x", args=[b"x", b"y"], cwd=[b"a", b"b"]))
    struct.pack_into("<HHH", msg, m.EXEC_FIELDS["filename_len"], fn_len, args_len, cwd_len)
    before = h.errors()
    events = h.decode(bytes(msg))
    fits = m.EXEC.size + fn_len + args_len + cwd_len <= len(msg)
    assert (len(events), h.errors() - before) == ((1, 0) if fits else (0, 1))


# =================================================================================================
# process.py bugs found by these tests (fixed; the tests keep them fixed)
# =================================================================================================


def test_relative_binary_under_non_utf8_cwd_is_restorable(h):
    p = h.one(exec_msg(10, filename=b"./run", cwd=[b"d\xe9"])).process
    raw = unescape_bytes(p.binary) if "non_utf8_binary" in p.flags else p.binary.encode()
    assert raw == b"/d\xe9/run"


def test_exit_parent_is_not_a_recycled_pid(h):
    h.one(exec_msg(300, ktime=1 * S, start=1 * S, filename=b"/bin/parent"))
    child = h.one(exec_msg(400, ppid=300, pstart=1 * S, ktime=2 * S, start=2 * S))
    h.one(exit_msg(300, ktime=3 * S, start=1 * S))
    h.cache.evict(now=time.monotonic() + h.cache.exit_delay + 1)
    h.one(exec_msg(300, ktime=4 * S, start=4 * S, filename=b"/bin/unrelated"))  # pid 300 reused
    out = h.one(exit_msg(400, ktime=5 * S, start=2 * S))
    assert out.parent is None or out.parent.exec_id == child.process.parent_exec_id


def test_image_at_names_the_image_running_at_the_event(h):
    # exec without fork: /bin/setpriv, then the same process execs /bin/true
    first = h.one(exec_msg(900, ktime=10 * S, start=9 * S, filename=b"/bin/setpriv"))
    second = h.one(exec_msg(900, ktime=12 * S, start=9 * S, filename=b"/bin/true"))
    entry = h.cache.get(900)
    img, known = h.cache.image_at(entry, 11 * S)  # between the two execs
    assert known and img.proc.exec_id == first.process.exec_id
    img, known = h.cache.image_at(entry, 13 * S)
    assert known and img.proc.exec_id == second.process.exec_id
    img, known = h.cache.image_at(entry, 9 * S + 1)  # before the first exec: not known any more
    assert not known and img.proc.exec_id == second.process.exec_id


def test_image_at_rebuilds_a_forked_child_before_its_exec(h):
    h.one(exec_msg(950, ktime=20 * S, start=19 * S, filename=b"/bin/bash"))
    h.decode(fork_msg(951, 950, ktime=21 * S, start=21 * S))
    child = h.one(exec_msg(951, ppid=950, pstart=19 * S, ktime=22 * S, start=21 * S, filename=b"/bin/cat"))
    img, known = h.cache.image_at(h.cache.get(951), 21 * S + 5)  # e.g. the shell child opening a redirect
    assert known and img.proc.binary == "/bin/bash" and img.proc.pid == 951 and "clone" in img.proc.flags
    assert img.proc.exec_id != child.process.exec_id


def test_a_reused_namespace_inode_is_not_an_entry(h):
    ns_a = (4026532901, 4026532902, 4026532903, 4026531837, 4026532904, 4026532905, 4026531835)
    host = (4026531840, 4026531836, 4026531833, 4026531837, 4026531838, 4026531839, 4026531835)
    h.one(exec_msg(1000, ppid=1, ktime=1 * S, start=1 * S, ns=host, filename=b"/bin/sh"))
    h.one(exec_msg(1001, ppid=1000, pstart=1 * S, ktime=2 * S, start=2 * S, ns=ns_a, filename=b"/bin/init"))
    joined = h.one(exec_msg(1002, ppid=1000, pstart=1 * S, ktime=3 * S, start=3 * S, ns=ns_a, filename=b"/bin/x"))
    assert "namespace_entry" in joined.process.flags  # 1001 still lives in ns_a: 1002 joined it
    h.decode(exit_msg(1001, ktime=4 * S, start=2 * S), exit_msg(1002, ktime=4 * S, start=3 * S))
    # The namespaces are freed and the kernel hands the same inode numbers to a new container.
    fresh = h.one(exec_msg(1003, ppid=1000, pstart=1 * S, ktime=5 * S, start=5 * S, ns=ns_a, filename=b"/bin/init"))
    assert "namespace_entry" not in fresh.process.flags and fresh.process.entered_namespaces == []


def test_exit_names_the_parent_its_parent_exec_id_names(h):
    """The parent on an exit is the image that started the process (the one `parent_exec_id` names),
    not whatever its parent exec'd since (a shell that `exec`s another program)."""
    shell = h.one(exec_msg(100, ktime=10 * S, start=9 * S, filename=b"/bin/bash"))
    child = h.one(exec_msg(200, ppid=100, pstart=9 * S, ktime=11 * S, start=11 * S - 5, filename=b"/bin/sleep"))
    assert child.process.parent_exec_id == shell.process.exec_id
    h.one(exec_msg(100, ktime=12 * S, start=9 * S, filename=b"/usr/bin/python3"))  # the shell execs
    out = h.one(exit_msg(200, ktime=13 * S, code=0, start=11 * S - 5))
    assert out.parent.exec_id == out.process.parent_exec_id == shell.process.exec_id
    assert out.parent.binary == "/bin/bash"


def test_load_falls_back_to_probe_reads_when_the_kernel_refuses_direct_loads(h, monkeypatch):
    """Kernels before 5.11 lack bpf_get_current_task_btf: the sensor retries the same program compiled
    with every field read through bpf_probe_read_kernel (-DSH_PROBE_READ_ONLY)."""
    from siemhub.collector.sensors import BPFUnavailable

    class FakeMap:
        def clear(self):
            pass

        def update(self, key, value):
            pass

    class FakeBPF:
        maps = {name: FakeMap() for name in ("ignore_exe", "ignore_cgroup", "filters_on", "forks")}

    calls = []

    def fake_open(offsets, defines, maps, pages, before_release=None):
        calls.append(dict(defines))
        if "SH_PROBE_READ_ONLY" not in defines:
            raise BPFUnavailable("loading process/process.bpf.c failed: unknown func bpf_get_current_task_btf")
        h.sensor._bpf = FakeBPF()

    monkeypatch.setattr(h.sensor, "_open", fake_open)
    monkeypatch.setattr(h.sensor.config, "procfs_scan", False)
    h.sensor.load()
    assert [c.get("SH_PROBE_READ_ONLY") for c in calls] == [None, 1]
    assert h.cache.fork_source == h.sensor.fork_info


# =================================================================================================
# KernelSensor.poll: a burst is routed in chunks
# =================================================================================================


class _FakeRing:
    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.limits: list[int] = []
        self.caught_up = False
        self.woken = 0

    def wait(self, timeout: float) -> None:
        pass

    def drain(self, limit: int = 1 << 30) -> list[bytes]:
        self.limits.append(limit)
        out, self.records = self.records[:limit], self.records[limit:]
        self.caught_up = not self.records
        return out

    def pending(self) -> bool:
        return bool(self.records)

    def wake(self) -> None:
        self.woken += 1


def test_a_burst_is_decoded_and_routed_a_chunk_at_a_time(h, monkeypatch):
    """50,000 processes killed at once are 50,000 exit records in the ring: routed all at once they would
    overrun the exporters' bounded queues (drops), so poll() takes them a chunk at a time, each routed
    before the next is read, and stops after a bounded number of chunks (the rest waits in the ring)."""
    from siemhub.collector.sensors import kernel

    monkeypatch.setattr(kernel, "_CHUNK", 10)
    monkeypatch.setattr(kernel, "_CHUNKS_PER_POLL", 3)
    batches: list[int] = []
    horizons: list[int] = []

    def emit(events):  # runs inside poll(): records are out of the ring, maybe not all decoded yet
        batches.append(len(events))
        horizons.append(h.sensor.exec_horizon())

    h.sensor.ctx.emit = emit
    records = [exec_msg(1000 + i, ktime=(10 + i) * S, start=(10 + i) * S) for i in range(45)]
    ring = _FakeRing(records)
    h.sensor._rb, h.sensor._bpf, h.sensor._next_check = ring, object(), float("inf")
    assert h.sensor.poll(0) == 30  # three chunks of 10, then the poll returns
    assert batches == [10, 10, 10] and ring.limits == [10, 10, 10]
    assert h.sensor.exec_horizon() == 0  # records left in the ring: other sensors keep waiting...
    assert ring.woken == 1  # ...and the process sensor's wait is cut short to read them
    before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert h.sensor.poll(0) == 15  # the rest: a chunk of 10, a short one ends the loop
    assert batches == [10, 10, 10, 10, 5] and not ring.records
    assert horizons == [0] * 5  # never "now" while a poll was under way
    # caught up: everything the kernel queued before that poll began is in the cache
    published = h.sensor._read_until
    assert before <= published <= time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    # between polls, with the ring empty, the horizon is now
    asked = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    assert h.sensor.exec_horizon() >= asked
    h.sensor._gen += 1  # a poll that has taken records and not decoded them yet
    assert h.sensor.exec_horizon() == published
    h.sensor._gen += 1
    assert ring.woken == 1  # not while a poll is under way, nor with nothing to read
    ring.records.append(exec_msg(2000, ktime=99 * S, start=99 * S))  # queued, not read yet
    assert h.sensor.exec_horizon() == published
    assert ring.woken == 2


# =================================================================================================
# capabilities: listed only where they tell something (docs/schema.md, `caps`)
# =================================================================================================


@pytest.mark.parametrize("euid, eff, prm, listed", [
    (0, "full", "full", False),  # root with every capability: the default, left out
    (1000, 0, 0, False),  # non-root with none: the default, left out
    (0, 1 << 21, 1 << 21, True),  # root with fewer (a container's bounding set): listed
    (1000, 1 << 13, 1 << 13, True),  # non-root with file capabilities (ping's CAP_NET_RAW): listed
    (1000, 0, 1 << 13, True),  # permitted but not effective: listed
])
def test_caps_only_when_they_differ_from_the_default_for_the_euid(h, euid, eff, prm, listed):
    from siemhub.collector import caps as capnames

    eff = capnames.FULL if eff == "full" else eff
    prm = capnames.FULL if prm == "full" else prm
    e = h.one(exec_msg(5000 + euid % 7 + eff % 5, ppid=1, pstart=INIT_START * TICK, euid=euid, cap_eff=eff,
                       cap_prm=prm))
    if listed:
        assert e.process.caps is not None
        assert e.process.caps.effective == list(capnames.names(eff))
        assert e.process.caps.permitted == list(capnames.names(prm))
    else:
        assert e.process.caps is None


def test_caps_always_lists_the_default_sets_too(tmp_path):
    from siemhub.collector import caps as capnames
    from siemhub.collector.sensors import SensorContext
    from siemhub.collector.sensors.process import ProcessSensor, ProcessSensorConfig

    h = Harness(tmp_path)
    h.sensor = ProcessSensor(ProcessSensorConfig(caps="always", pending={"max_wait": 0}), SensorContext(
        h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    e = h.one(exec_msg(4242, euid=0, cap_eff=capnames.FULL, cap_prm=capnames.FULL))
    assert e.process.caps is not None and len(e.process.caps.effective) == bin(capnames.FULL).count("1")
    e = h.one(exec_msg(4243, euid=1000, uid=1000))
    assert e.process.caps is not None and e.process.caps.effective == [] and e.process.caps.permitted == []
