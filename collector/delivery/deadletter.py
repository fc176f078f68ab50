"""Dead letters: events an exporter gave up on, kept so they can be re-sent after a fix.

Default destination: a JSON-lines file (`var/dead-letter/<exporter>.jsonl`, 0600 in a 0700 directory),
one record per event:

    {"event": {...native event...}, "exporter": "es", "reason": "http_400", "attempts": 1, "time": "..."}

`siemhub replay FILE` recognises these records and re-sends the inner event to the exporter it names
(collector/sources/replay.py). Alternatively `dead_letter: {exporter: other}` hands the events to
another exporter, tagged `dead_letter`, `dead_letter_exporter:<name>` and `dead_letter_reason:<why>`.

Writing a dead letter must never take the worker down: a failure is logged and counted as
`dead_letter_failed`, and the events stay counted as dropped with their original reason.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from siemhub.collector.core.event import Event, dec_hook, enc_hook

log = logging.getLogger("siemhub.deadletter")


class DeadLetter(msgspec.Struct, kw_only=True):
    event: Event
    exporter: str
    reason: str
    attempts: int
    time: str


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
_decoder = msgspec.json.Decoder(DeadLetter, dec_hook=dec_hook)


def decode_dead_letter(line: bytes) -> DeadLetter:
    return _decoder.decode(line)


def _now() -> str:
    ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)) + f"{frac:09d}Z"


class DeadLetterFile:
    """Appends dead-letter records to one file, opened on first use (no file when nothing failed)."""

    def __init__(self, path: str, exporter: str, max_bytes: int) -> None:
        self.path = path
        self.exporter = exporter
        self.max_bytes = max_bytes
        self._fd = -1
        self._size = 0
        self._lock = threading.Lock()  # the worker and stop() may both write

    def describe(self) -> str:
        return self.path

    def _open(self) -> None:
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, mode=0o700, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, events: Sequence[Event], reason: str, attempts: int) -> int:
        """Write one record per event; returns how many were written (0 when full or failing)."""
        if not events:
            return 0
        now = _now()
        data = _encoder.encode_lines(
            [DeadLetter(event=e, exporter=self.exporter, reason=reason, attempts=attempts, time=now) for e in events])
        with self._lock:
            try:
                if self._fd < 0:
                    self._open()
                if self._size + len(data) > self.max_bytes:
                    return 0
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
                    self._size += n
            except OSError as exc:
                log.warning("dead letters of %s: cannot write %s: %s", self.exporter, self.path, exc.strerror)
                return 0
        return len(events)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                try:
                    os.fsync(self._fd)
                except OSError:
                    pass
                os.close(self._fd)
                self._fd = -1


class DeadLetterForward:
    """Hands dead letters to another exporter's runner, tagged with where they come from and why."""

    def __init__(self, target: Any, exporter: str) -> None:  # target: the other exporter's runner.ExporterRunner
        self.target = target
        self.exporter = exporter

    def describe(self) -> str:
        return f"exporter {self.target.name}"

    def write(self, events: Sequence[Event], reason: str, attempts: int) -> int:
        extra = ["dead_letter", f"dead_letter_exporter:{self.exporter}", f"dead_letter_reason:{reason}"]
        tagged = [msgspec.structs.replace(e, tags=[*e.tags, *extra]) for e in events]
        before = self.target.accepted
        self.target.put_many(tagged)  # never waits: the worker of another exporter must not stall
        return self.target.accepted - before

    def close(self) -> None:
        pass
