"""The process cache: what every event needs to say which process caused it, and its parent.

Keyed by pid (tgid). An entry is one exec image of one process; a fork without exec gets an entry that
copies the parent's image (flag `clone`). Each entry remembers when its process started (boot-time
ticks), so a recycled pid is never mistaken for the process that held it before. Exited processes stay
resolvable for `exit_delay` seconds (late events still find them), then are evicted; the cache size
is bounded. Processes the kernel stream never showed us (started before the agent, or missed) are
read from /proc on demand and flagged `procfs`.
"""

from __future__ import annotations

import base64
import time
from collections import deque

import msgspec

from siemhub.collector import procfs
from siemhub.collector.event import Clock, Process
from siemhub.collector.metrics import Metrics

NO_AUID = 0xFFFFFFFF


class Entry:
    __slots__ = ("proc", "start_tick", "exec_ktime", "exited")

    def __init__(self, proc: Process, start_tick: int, exec_ktime: int | None) -> None:
        self.proc = proc
        self.start_tick = start_tick  # process start, in clock ticks since boot (as /proc/<pid>/stat)
        self.exec_ktime = exec_ktime  # boot-time ns of the exec that made this image, if seen
        self.exited = False


class ProcessCache:
    def __init__(self, node: str, clock: Clock, metrics: Metrics, max_entries: int = 65536,
                 exit_delay: float = 30.0, proc_root: str = "/proc") -> None:
        self.node = node
        self.clock = clock
        self.max_entries = max_entries
        self.exit_delay = exit_delay
        self.proc_root = proc_root
        self._by_pid: dict[int, Entry] = {}
        self._exited: deque[tuple[float, int, Entry]] = deque()
        self._hits = metrics.cache_lookups.labels("hit")
        self._misses = metrics.cache_lookups.labels("procfs")
        self._absent = metrics.cache_lookups.labels("missing")
        self._size = metrics.cache_size
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_pid)

    def exec_id(self, pid: int, ktime: int) -> str:
        """Unique per node and process image: base64 of node:ktime:pid, the form Tetragon uses."""
        return base64.b64encode(f"{self.node}:{ktime}:{pid}".encode()).decode()

    @staticmethod
    def tick(boot_ns: int) -> int:
        return boot_ns // procfs.NS_PER_TICK

    # --- lookups ---

    def get(self, pid: int, start_ns: int | None = None) -> Entry | None:
        """The entry for pid; with start_ns, only if it is the same process (not a recycled pid)."""
        e = self._by_pid.get(pid)
        if e is not None and start_ns is not None and e.start_tick != start_ns // procfs.NS_PER_TICK:
            return None
        return e

    def resolve(self, pid: int, start_ns: int | None = None) -> Entry | None:
        """get(), falling back to /proc for processes the kernel stream has not shown us."""
        e = self.get(pid, start_ns)
        if e is not None:
            self._hits.inc()
            return e
        if pid <= 0:
            return None
        e = self._from_procfs(pid)
        if e is None or (start_ns is not None and e.start_tick != start_ns // procfs.NS_PER_TICK):
            self._absent.inc()
            return None
        self._misses.inc()
        return e

    def _from_procfs(self, pid: int) -> Entry | None:
        info = procfs.read_process(pid, self.proc_root)
        if info is None:
            return None
        old = self._by_pid.get(pid)
        if old is not None and old.start_tick == info.start_ticks:
            return old  # /proc shows the process we already know: keep our entry (its exec_id, exec time)
        parent = self._by_pid.get(info.ppid)
        start_ns = info.start_ticks * procfs.NS_PER_TICK
        proc = Process(
            exec_id=self.exec_id(pid, start_ns), pid=pid, tid=pid, ppid=info.ppid,
            parent_exec_id=parent.proc.exec_id if parent else None,
            uid=info.uid, euid=info.euid, gid=info.gid, egid=info.egid, auid=info.auid,
            binary=info.binary, args=info.args, cwd=info.cwd, comm=info.comm,
            start_time=self.clock.from_boot(start_ns), flags=info.flags,
        )
        e = Entry(proc, info.start_ticks, None)
        self._insert(pid, e)
        return e

    def scan_procfs(self) -> int:
        """Learn every running process (at start-up). Parents are linked after the scan."""
        n = 0
        for pid in procfs.list_pids(self.proc_root):
            if pid not in self._by_pid and self._from_procfs(pid) is not None:
                n += 1
        for e in self._by_pid.values():
            p = e.proc
            if p.parent_exec_id is None and p.ppid:
                parent = self._by_pid.get(p.ppid)
                if parent is not None:
                    e.proc = msgspec.structs.replace(p, parent_exec_id=parent.proc.exec_id)
        return n

    # --- kernel events ---

    def add_exec(self, proc: Process, start_ns: int, ktime: int) -> None:
        self._insert(proc.pid, Entry(proc, start_ns // procfs.NS_PER_TICK, ktime))

    def add_fork(self, pid: int, ppid: int, start_ns: int, ktime: int) -> None:
        """A new process that runs its parent's image until it execs."""
        parent = self.get(ppid)
        if parent is None:
            return  # resolved from /proc when something asks for it
        pp = parent.proc
        # The image flags carry over; procfs / missing_parent described the parent's record, not this child
        # (whose parent is known: it is pp).
        flags = [*[f for f in pp.flags if f not in ("procfs", "missing_parent", "clone")], "clone"]
        proc = msgspec.structs.replace(
            pp, exec_id=self.exec_id(pid, ktime), pid=pid, tid=pid, ppid=ppid, parent_exec_id=pp.exec_id,
            start_time=self.clock.from_boot(start_ns), flags=flags,
        )
        self._insert(pid, Entry(proc, start_ns // procfs.NS_PER_TICK, ktime))

    def mark_exited(self, pid: int, entry: Entry) -> None:
        entry.exited = True
        self._exited.append((time.monotonic() + self.exit_delay, pid, entry))

    def _insert(self, pid: int, e: Entry) -> None:
        old = self._by_pid.pop(pid, None)
        self._by_pid[pid] = e  # (re)inserted last: dict order is age order for the size bound
        if old is None and len(self._by_pid) > self.max_entries:
            self.evict(force=True)

    def evict(self, now: float | None = None, force: bool = False) -> int:
        """Drop exited processes whose delay has passed (or the oldest exited ones, when over size)."""
        now = time.monotonic() if now is None else now
        n = 0
        q = self._exited
        while q and (q[0][0] <= now or (force and len(self._by_pid) > self.max_entries)):
            _, pid, entry = q.popleft()
            if self._by_pid.get(pid) is entry:
                del self._by_pid[pid]
                n += 1
        if force:
            # Exits can be lost (ring buffer full): when no exited entry is left to drop, drop the oldest
            # live ones (resolve() reads them again from /proc) rather than grow without bound.
            while len(self._by_pid) > self.max_entries:
                del self._by_pid[next(iter(self._by_pid))]
                n += 1
        self.evicted += n
        self._size.set(len(self._by_pid))
        return n
