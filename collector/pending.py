"""A bounded wait for events whose process is not known yet.

Events from different ring buffers (or a process' exec lost and re-read from /proc) can reach user
space before the cache knows the process they belong to. Such an event waits here, keyed by pid and
process start, for at most `max_age` seconds: when the process shows up the event is built with it;
when time runs out, or the queue is full, it is built without it and flagged, never dropped and never
half-enriched in silence. Counters: resolved, expired, overflow.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from siemhub.collector.core.event import Event

# builder(entry or None) -> Event; called once, with the cache entry when it appeared, else None.
Builder = Callable[[Any], Event]


class PendingEvents:
    def __init__(self, lookup: Callable[[int, int | None], Any], max_items: int = 4096, max_age: float = 0.5) -> None:
        self._lookup = lookup
        self.max_items = max_items
        self.max_age = max_age
        self._q: deque[tuple[float, int, int | None, Builder]] = deque()
        self.resolved = self.expired = self.overflow = 0

    def __len__(self) -> int:
        return len(self._q)

    def add(self, pid: int, start_ns: int | None, build: Builder, now: float | None = None) -> list[Event]:
        """Queue an event; returns events forced out to keep the bound (oldest first, flagged)."""
        now = time.monotonic() if now is None else now
        out: list[Event] = []
        while len(self._q) >= self.max_items:
            _, _, _, old = self._q.popleft()
            self.overflow += 1
            out.append(old(None))
        self._q.append((now + self.max_age, pid, start_ns, build))
        return out

    def drain(self, now: float | None = None) -> list[Event]:
        """Build every waiting event whose process is now known, and those whose time is up."""
        if not self._q:
            return []
        now = time.monotonic() if now is None else now
        out: list[Event] = []
        keep: deque = deque()
        for item in self._q:
            deadline, pid, start_ns, build = item
            entry = self._lookup(pid, start_ns)
            if entry is not None:
                self.resolved += 1
                out.append(build(entry))
            elif deadline <= now:
                self.expired += 1
                out.append(build(None))
            else:
                keep.append(item)
        self._q = keep
        return out

    def flush(self) -> list[Event]:
        """At shutdown: everything out, resolved where possible, else flagged."""
        return self.drain(now=float("inf"))
