"""Where an exporter's accepted events wait: in memory (a bounded deque) or on disk (diskqueue.py).

Both offer the same methods to the runner: put (what fits), take (a batch), drop_oldest, ack/rewind
(the disk buffer's read position), take_skipped (drops the runner has not accounted for yet), drain.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from itertools import repeat, starmap

import msgspec

from siemhub.collector.delivery.diskqueue import DiskQueue
from siemhub.collector.delivery.settings import BufferConfig
from siemhub.collector.core.event import Event, builtins_hook, dec_hook


class MemoryBuffer:
    durable = False
    full_reason = "queue_full"

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._q: deque[Event] = deque()
        self._lock = threading.Lock()
        self._skipped = 0

    def __len__(self) -> int:
        return len(self._q)

    unread = property(__len__)

    def put(self, events: Sequence[Event]) -> int:
        room = self.max_events - len(self._q)
        if room <= 0:
            return 0
        take = events[:room]
        self._q.extend(take)
        return len(take)

    def drop_oldest(self, n: int, disk_full: bool = False) -> int:
        with self._lock:
            k = 0
            while k < n and self._q:
                self._q.popleft()
                k += 1
            self._skipped += k
        return k

    def take(self, n: int) -> tuple[list[Event], int]:
        q = self._q
        with self._lock:  # popleft called from C (starmap): half the cost of a comprehension
            return list(starmap(q.popleft, repeat((), min(n, len(q))))), 0

    def take_skipped(self) -> int:
        with self._lock:
            n, self._skipped = self._skipped, 0
        return n

    def drain(self) -> list[Event]:
        out = []
        while True:  # one popleft at a time: a producer may still be adding
            try:
                out.append(self._q.popleft())
            except IndexError:
                return out

    def ack(self) -> None: ...
    def rewind(self) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class DiskBuffer:
    durable = True
    full_reason = "buffer_full"

    def __init__(self, cfg: BufferConfig, exporter: str) -> None:
        path = cfg.path or os.path.join("var", "buffer", exporter)
        self.q = DiskQueue(path, cfg.max_bytes, cfg.segment_bytes, cfg.fsync)
        self._enc = msgspec.msgpack.Encoder(enc_hook=builtins_hook)
        self._dec = msgspec.msgpack.Decoder(Event, dec_hook=dec_hook)
        self._need = 1

    def __len__(self) -> int:
        return len(self.q)

    @property
    def unread(self) -> int:
        return self.q.unread

    def put(self, events: Sequence[Event]) -> int:
        enc = self._enc.encode
        payloads = [enc(e) for e in events]
        n = self.q.put(payloads)
        if n < len(payloads):
            self._need = len(payloads[n]) + 8
        return n

    def drop_oldest(self, n: int, disk_full: bool = False) -> int:
        return self.q.drop_oldest(self._need, disk_full)

    def take(self, n: int) -> tuple[list[Event], int]:
        out, bad = [], 0
        for raw in self.q.read(n):
            try:
                out.append(self._dec.decode(raw))
            except (msgspec.MsgspecError, UnicodeDecodeError):  # a valid record of another schema
                bad += 1
        return out, bad

    def take_skipped(self) -> int:
        return self.q.take_skipped()

    def drain(self) -> list[Event]:
        return []  # what is left stays on disk for the next start

    def ack(self) -> None:
        self.q.ack()

    def rewind(self) -> None:
        self.q.rewind()

    def sync(self) -> None:
        self.q.sync()

    def close(self) -> None:
        self.q.close()
