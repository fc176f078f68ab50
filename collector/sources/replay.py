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

from siemhub.collector.core.decode import EventDecoder
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


def read_lines(f, name: str, stats: ReplayStats, chunk_bytes: int = 1 << 20) -> Iterator[tuple[Event, str | None]]:
    """Events of a binary file object, in order, each with the exporter its dead letter names (or None)."""
    for events, exporter in read_batches(f, name, stats, chunk_bytes):
        for e in events:
            yield e, exporter


def read_batches(f, name: str, stats: ReplayStats,
                 chunk_bytes: int = 1 << 20) -> Iterator[tuple[list[Event], str | None]]:
    """Runs of events of a binary file object, in order: (events, the exporter their dead letters
    name, or None). Lines are read ~chunk_bytes at a time; a chunk of plain event lines (the common
    case) is decoded in one parse (collector/core/decode.py) and comes out as one run. Dead-letter
    lines, and the lines of a chunk the batch could not take, go one by one (parse_line's rules)."""
    decoder = EventDecoder()
    lineno = 0
    rest = b""
    while True:
        data = f.read(chunk_bytes)
        if data:
            if rest:
                data = rest + data
            cut = data.rfind(b"\n")
            if cut < 0:  # no line ends in this chunk yet
                rest = data
                continue
            block, rest = data[:cut], data[cut + 1:]  # rest: the start of the next chunk's first line
        elif rest:
            block, rest = rest, b""  # the last line, without its newline
        else:
            return
        count = block.count(b"\n") + 1
        first = lineno + 1
        lineno += count
        # The common case, a chunk of plain event lines, is decoded in one parse without splitting it
        # (collector/core/decode.py). Dead letters (which that parse refuses: no `id`, `type`... at
        # their top level), blank lines and two values on one line (the count differs) and anything
        # else refused go the line-by-line way below, which tells each line's fate. No search for dead
        # letters or blank lines first: over a 1 MB chunk each cost as much as the parse saves. (One
        # case passes: a blank line and a line of two whole events in the same chunk; both events
        # are replayed then.)
        try:
            events = decoder.decode_lines(block, count)
        except msgspec.MsgspecError:
            pass
        else:
            stats.good += len(events)
            yield events, None
            continue
        lines = block.split(b"\n")
        # isspace() stops at the first non-blank byte (strip() would copy every line)
        plain = [line for line in lines if line and not line.startswith(b'{"event":') and not line.isspace()]
        if len(plain) == len(lines):
            try:
                events = decoder.decode_many(plain)
            except msgspec.MsgspecError:
                pass
            else:
                stats.good += len(events)
                yield events, None
                continue
        decoded = iter(decoder.decode_each(plain)) if plain else iter(())
        run: list[Event] = []
        dest: str | None = None
        for n, line in enumerate(lines, first):
            if line.startswith(b'{"event":'):
                try:
                    event, exporter = parse_line(line)
                except msgspec.MsgspecError as exc:
                    _bad(stats, name, n, exc)
                    continue
            elif not line or line.isspace():
                continue
            else:
                event, exporter = next(decoded), None
                if not isinstance(event, Event):
                    try:  # a dead letter with its keys in another order
                        dl = decode_dead_letter(line)
                        event, exporter = dl.event, dl.exporter
                    except (msgspec.MsgspecError, UnicodeDecodeError):
                        _bad(stats, name, n, event)
                        continue
            stats.good += 1
            if exporter is not None:
                stats.dead_letters += 1
            if run and exporter != dest:
                yield run, dest
                run = []
            dest = exporter
            run.append(event)
        if run:
            yield run, dest


def _bad(stats: ReplayStats, name: str, lineno: int, exc: Exception) -> None:
    stats.bad += 1
    if len(stats.first_bad) < 5:
        stats.first_bad.append(f"{name}:{lineno}: {exc}")
