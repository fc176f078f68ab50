"""EventDecoder (collector/core/decode.py) gives exactly what decode_json gives, as strictly, while
sharing the objects of repeated process/parent/node JSON."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siemhub.collector.core.decode import EventDecoder
from siemhub.collector.core.event import decode_json, encode_json

GOLDEN = sorted((Path(__file__).resolve().parents[2] / "golden").glob("native_*.json"))


def _lines() -> list[bytes]:
    return [encode_json(decode_json(p.read_bytes())) for p in GOLDEN]


def _same(data: bytes) -> None:
    """decode_json and EventDecoder agree: same event, or both refuse (with the same kind of error)."""
    try:
        want = decode_json(data)
    except UnicodeDecodeError:
        want = msgspec.DecodeError("utf-8")
    except msgspec.MsgspecError as exc:
        want = exc
    try:
        got = EventDecoder().decode(data)
    except msgspec.MsgspecError as exc:
        got = exc
    if isinstance(want, Exception):
        assert isinstance(got, msgspec.MsgspecError), (data, want, got)
        if isinstance(want, msgspec.ValidationError):
            if type(got) is msgspec.ValidationError:
                assert str(got) == str(want), (data, want, got)
            else:  # the decoder skips members it shares, so a syntax error behind a type error is found first
                with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
                    msgspec.json.decode(data)
    else:
        assert got == want


def test_golden_events_decode_the_same():
    assert len(GOLDEN) >= 4
    dec = EventDecoder()
    lines = _lines()
    for line in lines:
        assert dec.decode(line) == decode_json(line)
        _same(line)
    assert dec.decode_many(lines) == [decode_json(x) for x in lines]


def test_repeated_objects_are_shared_and_distinct_ones_are_not():
    exec_ = _exec()
    exit_ = dict(exec_, id="other", type="process_exit", exit={"code": 0})
    child = dict(exec_, id="child", process=dict(exec_["process"], pid=9, exec_id="c"))
    lines = [msgspec.json.encode(x) for x in (exec_, exit_, child)]
    a, b, c = EventDecoder().decode_many(lines)
    assert a.process is b.process and a.parent is b.parent is c.parent and a.node is c.node
    assert c.process is not a.process and c.process.pid == 9
    assert [a, b, c] == [decode_json(x) for x in lines]


def _exec() -> dict:
    return json.loads((Path(__file__).resolve().parents[2] / "golden" / "native_process_exec.json").read_text())


def test_member_errors_name_their_place_like_decode_json():
    good = _exec()
    for where in ("process", "parent", "node"):
        bad = dict(good)
        bad[where] = dict(good[where], pid="seven") if where != "node" else {"labels": {}}
        _same(msgspec.json.encode(bad))
    bad = dict(good, process=5)
    _same(msgspec.json.encode(bad))
    _same(msgspec.json.encode(dict(good, process=None)))


def test_a_bad_item_fails_the_batch_and_decode_each_isolates_it():
    lines = _lines()
    batch = [lines[0], b'{"id": 1}', lines[1], b"{not json", lines[0] + b" " + lines[1]]
    dec = EventDecoder()
    with pytest.raises(msgspec.MsgspecError):
        dec.decode_many(batch)
    got = dec.decode_each(batch)
    assert got[0] == decode_json(lines[0]) and got[2] == decode_json(lines[1])
    assert [type(x) for x in got[1::2]] == [msgspec.ValidationError, msgspec.DecodeError]
    assert isinstance(got[4], msgspec.DecodeError)  # two values in one item is not one event
    # two events in one item plus a missing one elsewhere cannot pass as a batch of two
    with pytest.raises(msgspec.MsgspecError):
        dec.decode_many([lines[0] + b"," + lines[1], b""])


def test_the_memo_is_bounded():
    dec = EventDecoder(max_cached=4)
    base = _exec()
    for pid in range(50):
        dec.decode(msgspec.json.encode(dict(base, process=dict(base["process"], pid=pid))))
    assert len(dec._procs) <= 4


_good = _lines()


def _mutations():
    def cut(args):
        line, i, b = args
        i %= len(line)
        return line[:i] + b + line[i + 1:]
    return st.tuples(st.sampled_from(_good), st.integers(0, 5000),
                     st.sampled_from([b"", b"0", b"\"", b"{", b"}", b"[", b"]", b"null", b"\xff", b"1e9", b",",
                                      b"\"x\"", b":"])).map(cut)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.one_of(_mutations(), st.binary(max_size=200)))
def test_mutated_events_decode_the_same_or_fail_the_same(data):
    _same(data)
