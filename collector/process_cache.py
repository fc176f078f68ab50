"""The process cache: what every event needs to say which process caused it, and its parent.

Keyed by pid (tgid). An entry is one exec image of one process. Each entry remembers when its process
started (boot-time clock ticks, as /proc/<pid>/stat) and when its parent started, so a recycled pid
is never mistaken for the process that held it before. Exited processes stay resolvable for
`exit_delay` seconds (late events still find them), then are evicted; the size is bounded. Processes
the kernel stream never showed us (older than the agent, or missed) are read from /proc on demand
and flagged `procfs`.

Forks are recorded cheaply (a tuple) and become full entries only when something asks for the child
before it execs (a fork that execs right away, the common case, never costs a Process object). A
forked child that never execs runs its parent's image: its entry copies the parent's fields with its
own pid and exec_id and the flag `clone`.

The cache also remembers which process first used each namespace, so an exec that joins namespaces
another process created (nsenter, `kubectl exec`, `docker exec`) can be told apart from a process
that created its own (a container starting).
"""

from __future__ import annotations

import binascii
import time
from collections import deque

import msgspec

from siemhub.collector import caps as capnames
from siemhub.collector import container, procfs
from siemhub.collector.core.event import BinaryProperties, Caps, Clock, Container, Namespaces, Process
from siemhub.collector.metrics import Metrics

NO_AUID = 0xFFFFFFFF
NS_PER_TICK = procfs.NS_PER_TICK
S_ISUID, S_ISGID = 0o4000, 0o2000
NS_KINDS = procfs.NS_KINDS
_NS_OWNERS_MAX = 1 << 16
_NO_ENTRY: list[str] = []  # shared by every process that entered nothing: never mutated


class Entry(msgspec.Struct, gc=False):
    """One exec image of one process. A msgspec Struct for its C constructor (created for every exec);
    not tracked by the cyclic GC: an entry refers only to Process objects and to the entry before it,
    which never refers back (`prev` is cleared when it is handed on)."""

    proc: Process
    start_tick: int  # process start, in clock ticks since boot (as /proc/<pid>/stat)
    exec_ktime: int | None  # boot-time ns of the exec that made this image, if seen
    parent_tick: int | None = None  # the parent's start, when known: guards against a recycled ppid
    exited: bool = False
    _summary: Process | None = None
    # The image this process ran before this exec, when the cache knew it (exec without fork, or a
    # fork looked up before its exec): events from just before the exec belong to it. One level only.
    prev: Entry | None = None
    # The parent as it was when this image was exec'd (its summary): the process that `parent_exec_id`
    # names, so later events (the exit) name the same parent even if the parent has exec'd since.
    parent: Process | None = None

    def summary(self) -> Process:
        """The process as it appears in `parent` and `ancestors`: every field but the bulky `caps` and
        `ns` (they are on the process' own events; join on exec_id). Built once, on first use."""
        s = self._summary
        if s is None or s.exec_id != self.proc.exec_id:
            p = self.proc
            s = self._summary = msgspec.structs.replace(p, caps=None, ns=None) if p.caps or p.ns else p
        return s


class ProcessCache:
    def __init__(self, node: str, clock: Clock, metrics: Metrics, max_entries: int = 65536,
                 exit_delay: float = 30.0, proc_root: str = "/proc",
                 pods: container.PodResolver | None = None) -> None:
        self.node = node
        self._node_prefix = f"{node}:".encode()
        # Kubernetes pod names for containers (kubelet directories on this node); shared with the sensor
        self.pods = pods if pods is not None else container.PodResolver()
        self.clock = clock
        self.max_entries = max_entries
        self.exit_delay = exit_delay
        self.proc_root = proc_root
        self._by_pid: dict[int, Entry] = {}
        self._caps_cache: dict[tuple[int, int, int | None], Caps | None] = {}
        self._forks: dict[int, tuple[int, int, int]] = {}  # pid -> (ppid, start_ns, ktime), not yet exec'd
        self._exited: deque[tuple[float, int, Entry]] = deque()
        self._ns_owner: dict[tuple[str, int], int] = {}  # (kind, inode) -> pid that first used it
        # Processes forked and not exec'd are read from the kernel's forks map on demand (set by the
        # process sensor); (pid, start_ns) pairs it did not hold are asked once each.
        self.fork_source = None
        # () -> boot time up to which every exec is in this cache (set by the process sensor; None: no
        # process sensor runs, nothing to wait for). Other sensors name an event's process once it passed.
        self.exec_horizon = None
        self._not_forks: dict[tuple[int, int], None] = {}
        # Forked processes whose parent the cache could not find (pid -> start_ns): why an exit is
        # missing_process (the process sensor counts causes).
        self.orphans: dict[int, int] = {}
        self._metrics = metrics
        self._m_size = metrics.cache_size
        # Plain integers on the hot path; sync_metrics() moves them to Prometheus once a second.
        self.hits = self.from_procfs = self.missing = self.evicted = 0
        self._synced = {"hit": 0, "procfs": 0, "missing": 0}

    def __len__(self) -> int:
        return len(self._by_pid) + len(self._forks)

    def exec_id(self, pid: int, ktime: int) -> str:
        """Unique per node and process image: base64 of node:ktime:pid, the form Tetragon uses."""
        return binascii.b2a_base64(b"%b%d:%d" % (self._node_prefix, ktime, pid), newline=False).decode("ascii")

    @staticmethod
    def tick(boot_ns: int) -> int:
        return boot_ns // procfs.NS_PER_TICK

    def sync_metrics(self) -> None:
        for label, value in (("hit", self.hits), ("procfs", self.from_procfs), ("missing", self.missing)):
            delta = value - self._synced[label]
            if delta:
                self._metrics.cache_lookups.labels(label).inc(delta)
                self._synced[label] = value
        self._m_size.set(len(self))

    # --- lookups ---

    def get(self, pid: int, start_ns: int | None = None) -> Entry | None:
        """The entry for pid; with start_ns, only if it is the same process (not a recycled pid)."""
        if self._forks and pid in self._forks:
            self._materialize(pid)
        e = self._by_pid.get(pid)
        if e is not None and (start_ns is None or e.start_tick == start_ns // NS_PER_TICK):
            return e
        if start_ns is not None and self.fork_source is not None:
            return self._from_forks(pid, start_ns)
        return None

    def _from_forks(self, pid: int, start_ns: int) -> Entry | None:
        """A process forked and not exec'd: the kernel keeps those in a map rather than sending them
        (fork_source). Asked once per process: a miss means it exec'd (its exec message is on its way),
        or it started before the agent (/proc), so it is remembered in a small negative cache."""
        key = (pid, start_ns)
        if key in self._not_forks:
            return None
        info = self.fork_source(pid)
        if info is None or info[1] != start_ns:
            if len(self._not_forks) >= 4096:
                self._not_forks.clear()
            self._not_forks[key] = None
            return None
        ppid, start, ktime = info
        self.add_fork(pid, ppid, start, ktime)
        self._materialize(pid)
        e = self._by_pid.get(pid)
        return e if e is not None and e.start_tick == start_ns // NS_PER_TICK else None

    def parent_of(self, entry: Entry) -> Entry | None:
        """The parent of an entry, if it is still the same process that started this one."""
        ppid = entry.proc.ppid
        if not ppid:
            return None
        pe = self.get(ppid)
        if pe is None or (entry.parent_tick is not None and pe.start_tick != entry.parent_tick):
            return None
        return pe

    def ancestors(self, entry: Entry, depth: int) -> list[Process]:
        """Up to `depth` ancestors above the parent (grandparent first)."""
        out: list[Process] = []
        e = self.parent_of(entry)
        while e is not None and len(out) < depth:
            e = self.parent_of(e)
            if e is None or e is entry:
                break
            out.append(e.summary())
        return out

    def resolve(self, pid: int, start_ns: int | None = None) -> Entry | None:
        """get(), falling back to /proc for processes the kernel stream has not shown us."""
        e = self.get(pid, start_ns)
        if e is not None:
            self.hits += 1
            return e
        if pid <= 0:
            return None
        e = self._from_procfs(pid)
        if e is None or (start_ns is not None and e.start_tick != start_ns // NS_PER_TICK):
            self.missing += 1
            return None
        self.from_procfs += 1
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
        ns = Namespaces(**info.ns) if info.ns else None
        cont = pod = None
        if info.cgroup_path:
            found = container.parse_path(info.cgroup_path)
            if found:
                cont = Container(id=found[0], runtime=found[1])
                pod = self.pods.lookup(found[0], found[2], found[3])
        proc = Process(
            exec_id=self.exec_id(pid, start_ns), pid=pid, tid=pid, ppid=info.ppid,
            parent_exec_id=parent.proc.exec_id if parent else None,
            uid=info.uid, euid=info.euid, gid=info.gid, egid=info.egid, auid=info.auid,
            binary=info.binary, args=info.args, cwd=info.cwd, comm=info.comm,
            start_time=self.clock.from_boot(start_ns), flags=info.flags,
            caps=self.caps(info.cap_effective, info.cap_permitted, info.euid) if info.cap_effective is not None
            else None,
            ns=ns, binary_properties=binary_properties(info.exe_mode, info.exe_uid, info.exe_gid),
            container=cont, pod=pod,
        )
        if ns is not None:
            self.note_namespaces(pid, ns)
        e = Entry(proc, info.start_ticks, None, parent.start_tick if parent else None)
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
                    e.parent_tick = parent.start_tick
        return n

    # --- shared pieces of a Process ---

    # sensors.process.caps: "always" lists the sets on every process; "telling" (the default) only where
    # they differ from the default for the process' euid (collector/caps.py `telling`, docs/schema.md).
    # Set before the first event (the verdicts are cached with the sets).
    caps_always = False

    def caps(self, effective: int, permitted: int, euid: int | None = None) -> Caps | None:
        """The shared Caps of these sets, or None when they are the default for euid (unless caps_always)."""
        key = (effective, permitted, None if euid is None else euid == 0)
        try:
            return self._caps_cache[key]
        except KeyError:
            pass
        if len(self._caps_cache) > 4096:
            self._caps_cache.clear()
        c = None
        if self.caps_always or capnames.telling(effective, permitted, euid):
            c = Caps(effective=list(capnames.names(effective)), permitted=list(capnames.names(permitted)))
        self._caps_cache[key] = c
        return c

    def note_namespaces(self, pid: int, ns: Namespaces) -> None:
        owners = self._ns_owner
        for kind in NS_KINDS:
            inum = getattr(ns, kind)
            if inum and (kind, inum) not in owners:
                if len(owners) >= _NS_OWNERS_MAX:
                    del owners[next(iter(owners))]
                owners[(kind, inum)] = pid

    def entered_namespaces(self, pid: int, ns: Namespaces, parent_ns: Namespaces | None) -> list[str]:
        """Namespaces of this exec that differ from its parent's and that another process used first."""
        if parent_ns is None or ns is parent_ns or ns == parent_ns:
            return _NO_ENTRY
        owners = self._ns_owner
        out = []
        for kind in NS_KINDS:
            inum = getattr(ns, kind)
            if inum and inum != getattr(parent_ns, kind):
                owner = owners.get((kind, inum))
                if owner is None or owner == pid:
                    continue
                if self._still_uses(owner, kind, inum):
                    out.append(kind)
                else:
                    # The kernel reuses namespace inode numbers once a namespace is freed: an owner that
                    # is gone (or moved on) is stale, and this process is the new namespace's first user.
                    owners[(kind, inum)] = pid
        return out

    def _still_uses(self, pid: int, kind: str, inum: int) -> bool:
        e = self._by_pid.get(pid)
        if e is None or e.exited:
            return False
        ns = e.proc.ns
        return ns is None or getattr(ns, kind) == inum  # no ns recorded: cannot tell, trust the owner

    # --- kernel events ---

    def add_exec(self, proc: Process, start_ns: int, ktime: int, parent_start_ns: int | None = None,
                 parent: Process | None = None) -> Entry:
        pid = proc.pid
        if self._forks:
            self._forks.pop(pid, None)
        tick = NS_PER_TICK
        e = Entry(proc, start_ns // tick, ktime, parent_start_ns // tick if parent_start_ns is not None else None,
                  parent=parent)
        by_pid = self._by_pid
        old = by_pid.pop(pid, None)
        by_pid[pid] = e  # (re)inserted last: dict order is age order for the size bound
        if old is None:
            if len(by_pid) > self.max_entries:
                self.evict(force=True)
        elif old.start_tick == e.start_tick:
            e.prev, old.prev = old, None
        return e

    def image_at(self, entry: Entry, ktime: int) -> tuple[Entry, bool]:
        """The image of entry's process that was running at boot-time `ktime`: the entry itself, or the
        one before its latest exec (kept, or rebuilt from the parent for a fork that exec'd). Second
        value: False when that earlier image is not known (the caller flags the event)."""
        if entry.exec_ktime is None or entry.exec_ktime <= ktime:
            return entry, True
        prev = entry.prev
        if prev is not None and (prev.exec_ktime is None or prev.exec_ktime <= ktime):
            return prev, True
        if prev is None:
            parent = self.parent_of(entry)
            if parent is not None and (parent.exec_ktime is None or parent.exec_ktime <= ktime):
                # A fork that exec'd before anything asked for it: until the exec it ran its parent's image.
                entry.prev = self._clone(entry.proc.pid, parent, entry.start_tick * procfs.NS_PER_TICK,
                                         entry.start_tick * procfs.NS_PER_TICK)
                return entry.prev, True
        return entry, False

    def add_fork(self, pid: int, ppid: int, start_ns: int, ktime: int) -> None:
        """A new process that runs its parent's image until it execs (materialized on demand)."""
        forks = self._forks
        forks[pid] = (ppid, start_ns, ktime)
        if len(forks) > self.max_entries // 4:
            del forks[next(iter(forks))]  # children whose exec and exit we never saw
            self.evicted += 1

    def _materialize(self, pid: int) -> None:
        ppid, start_ns, ktime = self._forks.pop(pid)
        parent = self.get(ppid)
        if parent is None and ppid > 0:
            # A parent that has neither exec'd nor exited (un-exec'd forks deeper than the kernel sends
            # ahead) is in the kernel's forks map; one older than the agent is in /proc.
            info = self.fork_source(ppid) if self.fork_source is not None else None
            if info is not None and info[1] <= start_ns:
                self.add_fork(ppid, *info)
                parent = self.get(ppid)
            if parent is None:
                parent = self._from_procfs(ppid)
                if parent is not None and parent.start_tick > start_ns // NS_PER_TICK:
                    parent = None  # the pid was reused: not the process that forked this one
        if parent is None:
            if len(self.orphans) >= 4096:
                self.orphans.clear()
            self.orphans[pid] = start_ns  # missing_process cause: its parent was never seen
            return
        self._insert(pid, self._clone(pid, parent, start_ns, ktime))

    def _clone(self, pid: int, parent: Entry, start_ns: int, ktime: int) -> Entry:
        """The entry of a forked child that has not exec'd: its parent's image, its own pid and exec_id."""
        pp = parent.proc
        # The image flags carry over; procfs / missing_parent described the parent's record, not this child.
        flags = [*[f for f in pp.flags if f not in ("procfs", "missing_parent", "clone", "namespace_entry")], "clone"]
        proc = msgspec.structs.replace(
            pp, exec_id=self.exec_id(pid, ktime), pid=pid, tid=pid, ppid=pp.pid, parent_exec_id=pp.exec_id,
            start_time=self.clock.from_boot(start_ns), flags=flags, entered_namespaces=[],
        )
        e = Entry(proc, start_ns // NS_PER_TICK, ktime, parent.start_tick)
        return e

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
        self._m_size.set(len(self))
        return n


def binary_properties(mode: int | None, uid: int | None, gid: int | None) -> BinaryProperties | None:
    if not mode or not mode & (S_ISUID | S_ISGID):
        return None
    return BinaryProperties(setuid=uid if mode & S_ISUID else None,
                            setgid=gid if mode & S_ISGID and mode & 0o010 else None)
