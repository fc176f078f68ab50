"""The native format's cached encoder must give exactly what encoding the Event directly gives."""

from __future__ import annotations

import msgspec

from siemhub.collector.core.event import (
    SCHEMA_VERSION, AgentStatus, Caps, Container, Event, Exit, Namespaces, Node, Process, encode_json,
    encode_json_lines,
)
from siemhub.exporters.formats import native


def _proc(pid: int, args: list[str] | None = None, **kw) -> Process:
    return Process(exec_id=f"e{pid}", pid=pid, ppid=pid - 1, uid=0, binary="/bin/x",
                   args=args if args is not None else ["x", "\x1b[31m"],
                   caps=Caps(effective=["CAP_SYS_ADMIN"]), ns=Namespaces(mnt=1, pid=2),
                   container=Container(id="c" * 64, runtime="docker"), **kw)


def _events() -> list[Event]:
    parent, grand = _proc(9), _proc(8)
    child = _proc(10, parent_exec_id="e9", flags=["non_utf8_args"])
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n", labels={"a": "b"}))
    return [
        Event(id="1", time="t1", type="process_exec", process=child, parent=parent, ancestors=[grand], **base),
        Event(id="2", time="t2", type="process_exit", process=child, parent=parent,
              exit=Exit(signal="SIGKILL", duration_ns=5), tags=["x"], **base),
        Event(id="3", time="t3", type="agent_status", status=AgentStatus(counters={"a": 1}), **base),
        Event(id="4", time="t4", type="process_exec", process=parent, **base),
    ]


def test_cached_encoding_is_identical_to_direct_encoding():
    events = _events()
    big = _proc(11, parent_exec_id="e9")
    big = msgspec.structs.replace(big, args=[f"a{i}" for i in range(native._BIG_ARGS + 1)])
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n"))
    events.append(Event(id="5", time="t5", type="process_exec", process=big, parent=events[0].process, **base))
    events.append(Event(id="6", time="t6", type="process_exec", process=_proc(12), parent=big, **base))
    for _ in range(2):  # second round: every process comes from the cache
        assert native.encode_lines(events) == encode_json_lines(events)
        for e in events:
            assert native.encode_one(e) == encode_json(e)


def test_a_replaced_process_is_never_served_stale():
    e = _events()[0]
    first = native.encode_one(e)
    changed = msgspec.structs.replace(e, process=msgspec.structs.replace(e.process, args=["x", "***"]))
    assert native.encode_one(changed) == encode_json(changed) != first


def test_cache_stays_bounded():
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n"))
    args = ["x"] * (native._BIG_ARGS + 1)
    for i in range(native._CACHE_MAX + 100):
        native.encode_one(Event(id=str(i), time="t", type="process_exec", process=_proc(i, args=args), **base))
    assert 0 < len(native._cache) <= native._CACHE_MAX


def test_only_images_with_long_argument_lists_are_cached():
    native._cache.clear()
    base = dict(schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n"))
    native.encode_one(Event(id="1", time="t", type="process_exec", process=_proc(1), **base))
    assert not native._cache  # a small image: direct encoding is cheaper than the splice
    native.encode_one(Event(id="2", time="t", type="process_exec",
                            process=_proc(2, args=["x"] * (native._BIG_ARGS + 1)), **base))
    assert len(native._cache) == 1
