"""The process cache (collector/process_cache.py): the procfs scan links parents, forks copy the
parent's image, exited entries are evicted after their delay, recycled pids are told apart."""

from __future__ import annotations

import time

from siemhub.collector.core.event import Clock, Process
from siemhub.collector.metrics import Metrics
from siemhub.collector.process_cache import ProcessCache

from .kmsg import S, TICK, Harness, exec_msg, exit_msg, make_proc


# =================================================================================================
# ProcessCache
# =================================================================================================


def _cache(root, **kw) -> ProcessCache:
    c = Clock()
    c._offset = 0
    return ProcessCache("node-a", c, Metrics(), proc_root=str(root), **kw)


def _proc(pid: int, ppid: int = 1, **kw) -> Process:
    return Process(exec_id=f"e{pid}-{kw.pop('gen', 0)}", pid=pid, ppid=ppid, binary=f"/bin/p{pid}", **kw)


def test_scan_procfs_links_parents(tmp_path):
    make_proc(tmp_path, 1, ppid=0, start_ticks=1)
    make_proc(tmp_path, 50, ppid=300, start_ticks=40)  # parent has a higher pid: read after the child
    make_proc(tmp_path, 300, ppid=1, start_ticks=30, exe=b"/usr/bin/bash")
    make_proc(tmp_path, 60, ppid=999, start_ticks=41)  # parent gone
    cache = _cache(tmp_path)
    assert cache.scan_procfs() == 4
    p1, p50, p300, p60 = (cache.get(p).proc for p in (1, 50, 300, 60))
    assert p50.parent_exec_id == p300.exec_id
    assert p300.parent_exec_id == p1.exec_id
    assert p60.parent_exec_id is None and p1.parent_exec_id is None
    assert all("procfs" in p.flags for p in (p1, p50, p300, p60))
    assert len({p.exec_id for p in (p1, p50, p300, p60)}) == 4
    assert cache.get(50, 40 * TICK) is not None and cache.get(50, 41 * TICK) is None


def test_add_fork_copies_parent_image(tmp_path):
    cache = _cache(tmp_path)
    parent = _proc(100, args=["/bin/p100", "-x"], cwd="/srv", uid=5, flags=["procfs", "missing_parent",
                                                                           "truncated_args"])
    cache.add_exec(parent, start_ns=10 * S, ktime=11 * S)
    cache.add_fork(200, 100, start_ns=20 * S, ktime=20 * S)
    child = cache.get(200, 20 * S).proc
    assert (child.pid, child.tid, child.ppid) == (200, 200, 100)
    assert child.parent_exec_id == parent.exec_id
    assert child.exec_id not in (parent.exec_id, None)
    assert (child.binary, child.args, child.cwd, child.uid) == (parent.binary, parent.args, parent.cwd, parent.uid)
    # image flags carry over; clone is added; procfs / missing_parent described the parent's record
    assert child.flags == ["truncated_args", "clone"]
    assert child.start_time == cache.clock.from_boot(20 * S)
    # a fork of a fork is still one clone flag
    cache.add_fork(300, 200, start_ns=30 * S, ktime=30 * S)
    assert cache.get(300).proc.flags == ["truncated_args", "clone"]
    # the parent's own entry is untouched
    assert cache.get(100).proc is parent
    # fork from an unknown parent: nothing to copy
    cache.add_fork(400, 12345, start_ns=40 * S, ktime=40 * S)
    assert cache.get(400) is None


def test_mark_exited_then_evict_after_delay(tmp_path):
    cache = _cache(tmp_path, exit_delay=30.0)
    cache.add_exec(_proc(10), start_ns=S, ktime=S)
    cache.add_exec(_proc(11), start_ns=S, ktime=S)
    e = cache.get(10)
    cache.mark_exited(10, e)
    assert e.exited
    now = time.monotonic()
    assert cache.evict(now=now + 29) == 0
    assert cache.get(10) is e  # still resolvable for late events
    assert cache.evict(now=now + 31) == 1
    assert cache.get(10) is None and cache.get(11) is not None
    assert cache.evicted == 1


def test_evicting_an_exited_pid_spares_its_successor(tmp_path):
    cache = _cache(tmp_path, exit_delay=1.0)
    cache.add_exec(_proc(10), start_ns=S, ktime=S)
    cache.mark_exited(10, cache.get(10))
    cache.add_exec(_proc(10, gen=2), start_ns=5 * S, ktime=5 * S)  # pid reused
    assert cache.evict(now=time.monotonic() + 10) == 0
    assert cache.get(10, 5 * S).proc.exec_id == "e10-2"


def test_max_entries_evicts_exited_first_then_oldest(tmp_path):
    cache = _cache(tmp_path, max_entries=4, exit_delay=300.0)
    for pid in (1, 2, 3, 4):
        cache.add_exec(_proc(pid), start_ns=pid * S, ktime=pid * S)
    cache.mark_exited(3, cache.get(3))
    cache.add_exec(_proc(5), start_ns=5 * S, ktime=5 * S)
    assert sorted(cache._by_pid) == [1, 2, 4, 5]  # the exited one went first, not the oldest live one
    assert len(cache) == 4
    # no exited entry left (exits can be lost): the bound still holds, the oldest live entry goes
    for pid in range(6, 50):
        cache.add_exec(_proc(pid), start_ns=pid * S, ktime=pid * S)
        assert len(cache) <= 4
    assert sorted(cache._by_pid) == [46, 47, 48, 49]


def test_get_rejects_a_recycled_pid(tmp_path):
    cache = _cache(tmp_path)
    cache.add_exec(_proc(10), start_ns=100 * S, ktime=100 * S)
    assert cache.get(10, 100 * S) is not None
    assert cache.get(10, 100 * S + TICK - 1) is not None  # same tick: /proc cannot tell them apart
    assert cache.get(10, 250 * S) is None
    assert cache.get(10) is not None  # without a start time, any holder of the pid


def test_failed_lookup_does_not_replace_a_known_process_with_its_procfs_copy(proc_root):
    # pid 500 is known from its exec and is also in /proc (it is alive)
    make_proc(proc_root, 500, ppid=1, start_ticks=9 * S // TICK, exe=b"/bin/known")
    h = Harness(proc_root)
    ex = h.one(exec_msg(500, ktime=10 * S, start=9 * S, filename=b"/bin/known"))
    # a late exec whose parent was an older process under pid 500: not found, and no side effect
    orphan = h.one(exec_msg(600, ppid=500, pstart=2 * S))
    assert orphan.parent is None and "missing_parent" in orphan.process.flags
    out = h.one(exit_msg(500, ktime=12 * S, start=9 * S))
    assert out.process.exec_id == ex.process.exec_id  # still the image its exec reported
    assert out.exit.duration_ns == 2 * S and "procfs" not in out.process.flags


def test_resolve_falls_back_to_procfs_with_start_check(tmp_path):
    make_proc(tmp_path, 42, ppid=1, start_ticks=700, exe=b"/usr/bin/vim")
    cache = _cache(tmp_path)
    assert cache.resolve(42, 701 * TICK) is None  # /proc has a different process under that pid
    e = cache.resolve(42, 700 * TICK)
    assert e is not None and e.proc.binary == "/usr/bin/vim" and "procfs" in e.proc.flags
    assert cache.resolve(4343) is None and cache.resolve(0) is None
