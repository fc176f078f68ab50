"""The replay source reads chunks of lines and decodes them in batches (collector/sources/replay.py): the
events, their order, the dead letters' destinations and the counts of bad lines are those of a line-by-line
reading."""

from __future__ import annotations

import io

import msgspec

from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process, decode_json, encode_json
from siemhub.collector.delivery.deadletter import DeadLetter
from siemhub.collector.sources.replay import ReplayStats, parse_line, read_batches, read_lines


def _event(i: int) -> Event:
    return Event(id=f"e{i}", time="2024-05-01T12:00:00.000000000Z", type="process_exec", node=Node(name="n"),
                 process=Process(exec_id=f"x{i % 3}", pid=i % 3, args=["sh", "-c", str(i % 3)]),
                 parent=Process(exec_id="p", pid=1), **EVENT_BASE)


def _dead(i: int, exporter: str) -> bytes:
    return msgspec.json.encode(DeadLetter(event=_event(i), exporter=exporter, reason="r", attempts=1, time="t"))


def _reference(data: bytes) -> tuple[list[tuple[str, str | None]], int]:
    """Line by line with parse_line: the definition."""
    out, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            e, exporter = parse_line(line)
        except msgspec.MsgspecError:
            bad += 1
            continue
        out.append((e.id, exporter))
    return out, bad


def test_chunks_give_the_same_events_order_destinations_and_counts():
    lines = []
    for i in range(600):
        if i % 97 == 5:
            lines.append(_dead(i, "es"))
        elif i % 89 == 7:
            lines.append(b'{"id": 1}')
        elif i % 83 == 3:
            lines.append(b"   ")
        elif i % 131 == 11:
            lines.append(b'{"not json')
        else:
            lines.append(encode_json(_event(i)))
    data = b"\n".join(lines) + b"\n"
    want, bad = _reference(data)
    for chunk in (1, 300, 5_000, 1 << 20):  # one line per chunk ... everything in one
        stats = ReplayStats()
        runs = list(read_batches(io.BytesIO(data), "f.jsonl", stats, chunk_bytes=chunk))
        got = [(e.id, dest) for events, dest in runs for e in events]
        assert got == want, chunk
        assert stats.bad == bad and stats.good == len(want) and stats.dead_letters == sum(1 for w in want if w[1])
        assert all(events for events, _ in runs)  # no empty runs
        assert stats.first_bad and stats.first_bad[0].startswith("f.jsonl:")
    events = [e for e, _ in read_lines(io.BytesIO(data), "f.jsonl", ReplayStats())]
    assert events[0] == decode_json(encode_json(_event(0)))


def test_line_numbers_of_bad_lines_survive_batching():
    data = encode_json(_event(1)) + b"\n\n" + b"garbage\n" + encode_json(_event(2)) + b"\n"
    stats = ReplayStats()
    assert [e.id for e, _ in read_lines(io.BytesIO(data), "in.jsonl", stats)] == ["e1", "e2"]
    assert stats.bad == 1 and stats.first_bad[0].startswith("in.jsonl:3:")


def test_a_clean_chunk_is_one_run_and_shares_repeated_processes():
    data = b"".join(encode_json(_event(i)) + b"\n" for i in range(50))
    runs = list(read_batches(io.BytesIO(data), "f", ReplayStats()))
    assert len(runs) == 1 and runs[0][1] is None and len(runs[0][0]) == 50
    ev = runs[0][0]
    assert ev[0].parent is ev[1].parent and ev[0].process is ev[3].process


def test_two_events_on_one_line_are_a_bad_line_as_line_by_line():
    # The one-parse path reads JSON values, not lines: two values on one line would come out as two
    # events, so the count of lines is checked and such a chunk is read line by line.
    data = (encode_json(_event(1)) + encode_json(_event(2)) + b"\n" + encode_json(_event(3)) + b"\r\n"
            + encode_json(_event(4)))  # no newline at the end: the last line still counts
    want, bad = _reference(data)
    assert [w[0] for w in want] == ["e3", "e4"] and bad == 1
    stats = ReplayStats()
    got = [e.id for events, _ in read_batches(io.BytesIO(data), "f", stats) for e in events]
    assert got == ["e3", "e4"] and stats.bad == 1 and stats.first_bad[0].startswith("f:1:")
