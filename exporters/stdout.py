"""Stdout exporter: one compact human line per event (the live view of `make run`), or JSON lines."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from siemhub.collector.core.event import Event
from siemhub.exporters.base import DONE, Exporter, ExporterConfig, SendResult, outcome_for_exception
from siemhub.exporters.formats import FORMATS, get_format


def compact_line(e: Event) -> str:
    """`22:13:24.123456 process_exec  1234 uid=0 /bin/echo hello world  <- /usr/bin/sh(1233)`."""
    clock = e.time[11:26]
    p = e.process
    if p is None:
        extra = ""
        if e.status is not None:
            extra = " ".join(f"{k}={v}" for k, v in sorted(e.status.counters.items()) if v)
        return f"{clock} {e.type:<14} {extra}"
    what = " ".join(p.args[1:]) if p.args else ""
    uid = "?" if p.uid is None else p.uid
    line = f"{clock} {e.type:<14} {p.pid:>7} uid={uid} {p.binary or '?'} {what}".rstrip()
    if e.exit is not None:
        x = e.exit
        line += f"  signal={x.signal}" if x.signal else f"  code={x.code}"
    if e.parent is not None:
        line += f"  <- {e.parent.binary}({e.parent.pid})"
    if p.flags:
        line += f"  [{','.join(p.flags)}]"
    # Never let kernel-supplied text move the cursor or recolour the terminal.
    return line.translate(_CONTROL)


# C0, DEL and C1: terminals act on U+0080..U+009F too (U+009B is CSI, the same as ESC [).
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), *range(0x7F, 0xA0))}


class StdoutExporter(Exporter):
    formats = ("compact", *FORMATS)

    def __init__(self, name: str, config: ExporterConfig) -> None:
        super().__init__(name, config)
        self._fmt = None if config.format == "compact" else get_format(config.format)

    def encode(self, batch: Sequence[Event]) -> bytes:
        if self._fmt is not None:
            return self._fmt.encode_lines(batch)
        return ("\n".join(compact_line(e) for e in batch) + "\n").encode("utf-8", "backslashreplace")

    def send(self, payload: bytes) -> SendResult:
        try:
            out = sys.stdout.buffer
            out.write(payload)
            out.flush()
        except OSError as exc:
            return outcome_for_exception(exc)
        return DONE
