"""Replay source: JSON-lines files of native events, or of dead-letter records, back into the pipeline.

A line is either a native event or a dead-letter record (collector/delivery/deadletter.py); a dead letter is
unwrapped and goes back to the exporter it names (when the config has it), so events can be re-sent
after the fix, without duplicating them into every other exporter. Unreadable lines are skipped and
counted, never fatal: the file may be torn at its end or hand-edited.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from siemhub.collector.delivery.deadletter import decode_dead_letter
from siemhub.collector.core.event import Event, decode_json


@dataclass(slots=True)
class ReplayStats:
    good: int = 0
    dead_letters: int = 0
    bad: int = 0
    first_bad: list[str] = field(default_factory=list)


def parse_line(line: bytes) -> tuple[Event, str | None]:
    """(event, exporter named by a dead-letter record or None). Raises msgspec.MsgspecError on a
    line that is neither (msgspec raises UnicodeDecodeError for bad UTF-8 inside a string: found by
    fuzzing, turned into a DecodeError here)."""
    try:
        return _parse(line)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


def _parse(line: bytes) -> tuple[Event, str | None]:
    if line.startswith(b'{"event":'):  # how deadletter.py writes them: try that first
        try:
            dl = decode_dead_letter(line)
            return dl.event, dl.exporter
        except msgspec.MsgspecError:
            pass
    try:
        return decode_json(line), None
    except msgspec.MsgspecError as first:
        try:
            dl = decode_dead_letter(line)  # a dead letter with its keys in another order
        except msgspec.MsgspecError:
            raise first from None
        return dl.event, dl.exporter


def read_lines(f, name: str, stats: ReplayStats) -> Iterator[tuple[Event, str | None]]:
    for lineno, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            event, exporter = parse_line(line)
        except msgspec.MsgspecError as exc:
            stats.bad += 1
            if len(stats.first_bad) < 5:
                stats.first_bad.append(f"{name}:{lineno}: {exc}")
            continue
        stats.good += 1
        if exporter is not None:
            stats.dead_letters += 1
        yield event, exporter
