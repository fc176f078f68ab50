"""Naming the process of a file, network or privilege event: wait for the process sensor, then the cache.

These sensors read their own ring buffers in their own threads, in parallel with the process sensor.
A connect by a freshly exec'd program can be decoded before the process sensor has decoded that exec:
the cache would then still hold the image before it (the forked shell), and the event would be
attributed to the wrong binary. So an event waits until the process sensor has read every exec up to
the event's kernel time (ProcessCache.exec_horizon(), see ProcessSensor.exec_horizon: the exec of the
event's process was committed to the process sensor's ring before the event happened), then is joined
with the cache. A stalled process sensor holds an event at most `settle`
seconds (it is then named from what the cache holds, counted in `settle_expired`); without a process
sensor there is nothing to wait for. A process still unknown waits in the bounded PendingEvents queue;
when time runs out it is read from /proc, else the event is flagged `missing_process`: never dropped.
An event that happened before the process exec'd again (setpriv dropping privileges, then exec'ing its
command) names the image that was running then (ProcessCache.image_at); only when the cache no longer
knows that image is the newer one named, flagged `image_replaced`.
"""

from __future__ import annotations

import time
from collections import deque

import msgspec
from collections.abc import Callable
from typing import Any

from siemhub.collector.core.event import Event, Process
from siemhub.collector.pending import PendingEvents

# build(process, parent) -> Event, or None to drop it (decided once the process is known)
Build = Callable[[Process, Process | None], Event | None]


class ExecGate:
    """Holds items (oldest first) until the process sensor has read every exec up to their kernel time,
    at most `settle` seconds for a stalled process sensor; with no process sensor, nothing waits."""

    def __init__(self, cache: Any, settle: float) -> None:
        self.cache = cache
        self.settle_ns = int(settle * 1e9)
        self._q: deque[tuple[int, Any]] = deque()
        self._horizon = 0  # the process sensor's horizon when last asked
        self.expired = 0  # items let through before the process sensor had read up to their time

    def __len__(self) -> int:
        return len(self._q)

    def passes(self, ktime: int) -> bool:
        """True when an item of this time may go at once (nothing older waits, its execs are read)."""
        return not self._q and (self.cache.exec_horizon is None or ktime <= self._horizon)

    def add(self, ktime: int, item: Any) -> None:
        self._q.append((ktime, item))

    def ready(self, force: bool = False) -> list[Any]:
        q = self._q
        if not q:
            return []
        horizon = self.cache.exec_horizon
        if force or horizon is None:
            out = [item for _, item in q]
            q.clear()
            return out
        read_until = self._horizon = horizon()
        overdue = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - self.settle_ns
        if overdue > read_until:  # the process sensor is behind by more than `settle`
            for k, _ in q:
                if k > overdue:
                    break
                if k > read_until:
                    self.expired += 1
            read_until = overdue
        out = []
        while q and q[0][0] <= read_until:
            out.append(q.popleft()[1])
        return out


class ProcessJoin:
    def __init__(self, cache: Any, settle: float, max_items: int, max_wait: float) -> None:
        self.cache = cache
        self.gate = ExecGate(cache, settle)
        self.pending = PendingEvents(lambda pid, start: cache.get(pid, start), max_items=max_items, max_age=max_wait)
        self.missing = 0
        self.replaced = 0  # events whose process exec'd a new image before they were named

    @property
    def settle_expired(self) -> int:
        return self.gate.expired

    def __len__(self) -> int:
        return len(self.gate) + len(self.pending)

    def add(self, ktime: int, pid: int, tid: int, start_ns: int, build: Build) -> None:
        self.gate.add(ktime, (ktime, pid, tid, start_ns, build))

    def ready(self, force: bool = False) -> list[Event]:
        """Events whose process is known now (or will never be), oldest first."""
        out: list[Event] = []
        cache = self.cache
        for ktime, pid, tid, start_ns, build in self.gate.ready(force):
            entry = cache.get(pid, start_ns)
            if entry is not None:
                out.append(self._build(entry, ktime, pid, tid, start_ns, build))
            else:
                out.extend(self.pending.add(pid, start_ns, self._later(ktime, pid, tid, start_ns, build)))
        out.extend(self.pending.flush() if force else self.pending.drain())
        return [e for e in out if e is not None]  # a builder returns None for an event it drops on purpose

    def _later(self, ktime: int, pid: int, tid: int, start_ns: int, build: Build):
        def run(entry):
            if entry is None:
                entry = self.cache.resolve(pid, start_ns)  # not seen exec'ing: /proc, while it lives
            return self._build(entry, ktime, pid, tid, start_ns, build)
        return run

    def _build(self, entry, ktime: int, pid: int, tid: int, start_ns: int, build: Build) -> Event | None:
        cache = self.cache
        if entry is None:
            self.missing += 1
            return build(Process(exec_id=cache.exec_id(pid, start_ns), pid=pid, tid=tid,
                                 flags=["missing_process"]), None)
        # The process may have exec'd after the event (setpriv, sudo, a shell's exec, a fork's exec):
        # name the image that was running at the event's time. When the cache no longer knows it, name
        # the newer image, flagged, rather than pretend it did this.
        entry, known = cache.image_at(entry, ktime)
        proc = entry.proc
        if not known:
            self.replaced += 1
            proc = msgspec.structs.replace(proc, flags=[*proc.flags, "image_replaced"])
        pe = cache.parent_of(entry)
        return build(proc, pe.summary() if pe is not None else None)
