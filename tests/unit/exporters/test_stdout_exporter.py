"""Stdout exporter: the compact human line says what happened and cannot be used to drive the
terminal; the JSON formats are valid JSON lines."""

from __future__ import annotations

import errno
import io
import json
import re
import sys

import pytest

from siemhub.collector.core.event import SCHEMA_VERSION, AgentStatus, Event, Exit, Node, Process, decode_json
from siemhub.exporters.base import ExporterConfig, Outcome
from siemhub.exporters.formats import FORMATS
from siemhub.exporters.stdout import StdoutExporter, compact_line

T = "2024-01-02T22:13:24.123456789Z"


def _ev(etype="process_exec", *, args=None, binary="/bin/echo", flags=None, exit=None, parent=True, uid=1000):
    proc = Process(exec_id="x", pid=4242, uid=uid, binary=binary, args=args if args is not None else [binary],
                   flags=flags or [])
    par = Process(exec_id="p", pid=4200, binary="/usr/bin/bash") if parent else None
    return Event(id="i", time=T, type=etype, schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n"),
                 process=proc, parent=par, exit=exit)


class FakeStdout:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()


def _run(monkeypatch, fmt: str, events: list[Event]) -> bytes:
    out = FakeStdout()
    monkeypatch.setattr(sys, "stdout", out)
    exp = StdoutExporter("s", ExporterConfig(type="stdout", format=fmt))
    exp.start()
    assert exp.send(exp.encode(events)).outcome is Outcome.DONE
    exp.flush()
    exp.close()
    return out.buffer.getvalue()


def test_compact_exec_line_has_the_essentials():
    line = compact_line(_ev(args=["/bin/echo", "hello", "world"], flags=["procfs", "clone"]))
    assert line.startswith("22:13:24.123456 process_exec ")
    for part in ("4242", "uid=1000", "/bin/echo hello world", "<- /usr/bin/bash(4200)", "[procfs,clone]"):
        assert part in line, (part, line)


def test_compact_exit_line_has_code_or_signal():
    code = compact_line(_ev("process_exit", exit=Exit(code=3, duration_ns=5)))
    assert "process_exit" in code and "code=3" in code and "4242" in code and "signal" not in code
    sig = compact_line(_ev("process_exit", exit=Exit(signal="SIGKILL", core_dumped=True)))
    assert "signal=SIGKILL" in sig and "code=" not in sig


def test_compact_status_line_lists_nonzero_counters():
    e = Event(id="i", time=T, type="agent_status", schema_version=SCHEMA_VERSION, severity="medium",
              node=Node(name="n"), status=AgentStatus(counters={"b_lost": 2, "a_sent": 10, "zero": 0}))
    line = compact_line(e)
    assert line.startswith("22:13:24.123456 agent_status")
    assert "a_sent=10 b_lost=2" in line and "zero" not in line


HOSTILE = ["\x1b[31mred", "\x1b]0;title\x07", "a\nFAKE 00:00:00 process_exec 1 uid=0 /bin/ok", "\r\x08\x7f",
           "\x9b31m", "\x00\t"]


@pytest.mark.parametrize("arg", HOSTILE)
def test_control_characters_are_escaped_never_raw(monkeypatch, arg):
    e = _ev(args=["/bin/x", arg], binary="/bin/" + arg, flags=[arg])
    e.parent.binary = "/p/" + arg
    raw = _run(monkeypatch, "compact", [e])
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1  # one event, one line
    text = raw.decode("utf-8")
    controls = [c for c in text[:-1] if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0]
    assert not controls, f"raw control characters reached the terminal: {controls!r}"
    assert "\\x1b" in text or "\\x" in text


def test_non_utf8_escaped_args_stay_readable(monkeypatch):
    raw = _run(monkeypatch, "compact", [_ev(args=["/bin/x", "caf\\xe9"], flags=["non_utf8_args"])])
    assert b"caf\\xe9" in raw and b"[non_utf8_args]" in raw


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_json_formats_are_valid_json_lines(monkeypatch, fmt):
    events = [_ev(args=["/bin/x", a]) for a in HOSTILE] + [_ev("process_exit", exit=Exit(code=0))]
    raw = _run(monkeypatch, fmt, events)
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(events) + 1
    for line, e in zip(lines, events):
        obj = json.loads(line)
        assert isinstance(obj, dict)  # other formats name the type their own way (ECS event.action, OCSF class)
        if fmt == "native":
            assert obj["type"] == e.type
            assert decode_json(line) == e


def test_real_stdout_via_capsys(capsys):
    exp = StdoutExporter("s", ExporterConfig(type="stdout", format="compact"))
    assert exp.send(exp.encode([_ev(args=["/bin/echo", "hi"])])).outcome is Outcome.DONE
    out = capsys.readouterr().out
    assert re.match(r"^22:13:24\.123456 process_exec +4242 uid=1000 /bin/echo hi  <- /usr/bin/bash\(4200\)\n$", out)


def test_broken_pipe_is_an_outcome_not_an_exception(monkeypatch):
    class Broken:
        def write(self, _):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", type("S", (), {"buffer": Broken()})())
    exp = StdoutExporter("s", ExporterConfig(type="stdout", format="native"))
    r = exp.send(b"{}\n")
    assert r.outcome is not Outcome.DONE
