"""The canonical event: lossless text for kernel bytes, RFC 3339 times, unique ids, JSON round trips."""

from __future__ import annotations

import datetime as dt
import json
import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siemhub.collector.core import event as ev
from siemhub.collector.core.event import (
    SCHEMA_VERSION,
    AgentStatus,
    BinaryProperties,
    Dns,
    File,
    Network,
    PolicyAction,
    Privilege,
    Caps,
    Namespaces,
    Clock,
    Container,
    Event,
    EventIds,
    Exit,
    Node,
    Pod,
    PodContainer,
    Process,
    decode_json,
    encode_json,
    encode_json_lines,
    escape_always,
    escape_bytes,
    unescape_bytes,
)

FAST = settings(max_examples=2000, deadline=None, database=None)


# --- escape_bytes / unescape_bytes ---------------------------------------------------------------


@FAST
@given(st.binary(max_size=64))
def test_escape_bytes_round_trips_any_bytes(raw):
    text, flagged = escape_bytes(raw)
    text.encode("utf-8")  # strictly encodable: no lone surrogates can reach the JSON encoder
    if flagged:
        assert unescape_bytes(text) == raw
    else:
        assert text.encode("utf-8") == raw


@FAST
@given(st.binary(max_size=64))
def test_escape_always_round_trips_any_bytes(raw):
    text = escape_always(raw)
    text.encode("utf-8")
    assert unescape_bytes(text) == raw


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(max_size=40))
def test_valid_utf8_passes_unchanged_and_unflagged(s):
    assert escape_bytes(s.encode("utf-8")) == (s, False)


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"/tmp/\xc3(", b"caf\xe9", b"\xe2\x82", b"\xed\xa0\x80", b"a\\b\xff", b"\\x41\xfe", b"\xc0\xaf"],
)
def test_invalid_utf8_is_flagged_and_restorable(raw):
    text, flagged = escape_bytes(raw)
    assert flagged is True
    assert unescape_bytes(text) == raw


def test_escaped_backslash_is_not_confused_with_hex_escape():
    # A literal backslash followed by "x41" must not come back as "A".
    raw = b"\\x41\xff"
    text, flagged = escape_bytes(raw)
    assert flagged and text == "\\\\x41\\xff"
    assert unescape_bytes(text) == raw


# --- JSON survives hostile text ------------------------------------------------------------------


def _event(**kw) -> Event:
    base = dict(id="id-1", time="2024-01-02T03:04:05.000000006Z", type="process_exec",
                schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n1"))
    base.update(kw)
    return Event(**base)


def test_control_characters_and_huge_strings_survive_json():
    controls = "".join(chr(c) for c in range(32)) + "\x7f\x85\u2028\u2029\ufeff"
    huge = "A" * 1_000_000 + "\u00e9" + "\x1b[31m"
    proc = Process(exec_id="x", pid=1, binary="/bin/" + controls, args=[controls, huge, ""], cwd="\n\r")
    line = encode_json(_event(process=proc))
    # One event is one line: no raw newline or other C0 byte may reach the output.
    assert not any(b < 0x20 for b in line)
    back = decode_json(line)
    assert back.process.args == [controls, huge, ""]
    assert back.process.binary == "/bin/" + controls
    assert back.process.cwd == "\n\r"
    lines = encode_json_lines([_event(process=proc), _event(id="id-2")])
    assert lines.count(b"\n") == 2 and lines.endswith(b"\n")


MARKUP = [
    '{"type":"process_exit","severity":"critical"}',
    '"}, {"injected": true',
    "</script><script>alert(1)</script>",
    "@kibana-highlighted-field@root@/kibana-highlighted-field@",
    "${jndi:ldap://evil/a}",
    "index=main sourcetype=linux | eval x=1 | delete",
    '$decideOnStartup$ <b>bold</b> %{[process][pid]} {{7*7}}',
    "\\u0000\\n\\\\",
    "\u202eevil\u202c",
    "@timestamp",
]


@pytest.mark.parametrize("arg", MARKUP)
def test_args_that_look_like_markup_survive_unchanged(arg):
    from siemhub.exporters.formats import get_format

    proc = Process(exec_id="x", pid=1, binary=arg, args=[arg, arg])
    e = _event(process=proc, tags=[arg])
    line = encode_json(e)
    assert decode_json(line).process.args == [arg, arg]
    parsed = json.loads(line)  # an independent parser agrees
    assert parsed["process"]["args"] == [arg, arg] and parsed["process"]["binary"] == arg
    assert parsed["type"] == "process_exec" and parsed["severity"] == "info"
    assert get_format("native").to_obj(e)["process"]["args"] == [arg, arg]


# --- Clock -----------------------------------------------------------------------------------------

RFC3339_NS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")


def _expected(wall_ns: int) -> str:
    sec, frac = divmod(wall_ns, 1_000_000_000)
    d = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=sec)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def test_rfc3339_format():
    c = Clock()
    s = c.rfc3339(1_700_000_000_123_456_789)
    assert s == "2023-11-14T22:13:20.123456789Z"
    assert RFC3339_NS.match(s)
    assert RFC3339_NS.match(c.now())
    assert c.rfc3339(0) == "1970-01-01T00:00:00.000000000Z"
    assert c.rfc3339(5) == "1970-01-01T00:00:00.000000005Z"


def test_rfc3339_across_second_boundaries():
    c = Clock()
    base = 1_700_000_000 * 1_000_000_000
    seq = [base - 1, base, base + 1, base + 999_999_999, base + 1_000_000_000, base - 1, base + 86_400 * 10**9]
    for ns in seq:  # forwards and backwards on one instance: the per-second cache must never go stale
        assert c.rfc3339(ns) == _expected(ns)
    assert c.rfc3339(base - 1) == "2023-11-14T22:13:19.999999999Z"
    assert c.rfc3339(base) == "2023-11-14T22:13:20.000000000Z"


_SHARED_CLOCK = Clock()


@settings(max_examples=1000, deadline=None, database=None)
@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))  # 1970 .. 2100
def test_rfc3339_matches_datetime(wall_ns):
    assert _SHARED_CLOCK.rfc3339(wall_ns) == _expected(wall_ns)


def test_from_boot_applies_offset():
    c = Clock()
    c._offset = 1_700_000_000 * 10**9
    assert c.wall_ns(5) == 1_700_000_000 * 10**9 + 5
    assert c.from_boot(5) == "2023-11-14T22:13:20.000000005Z"


def test_clock_cache_update_is_atomic(monkeypatch):
    """The sensor thread and the agent's status loop share one Clock. Simulate another thread formatting
    a different second in the middle of an update: the cached date must never pair with the wrong second."""
    c = Clock()
    a, b = 1_700_000_000 * 10**9, 1_700_000_001 * 10**9
    real = ev.time.strftime
    nested = []

    def strftime_with_interleaving(fmt, tm):
        if not nested:
            nested.append(1)
            assert c.rfc3339(b) == _expected(b)  # "the other thread" runs here
        return real(fmt, tm)

    monkeypatch.setattr(ev.time, "strftime", strftime_with_interleaving)
    assert c.rfc3339(a) == _expected(a)
    monkeypatch.setattr(ev.time, "strftime", real)
    assert c.rfc3339(b) == _expected(b)
    assert c.rfc3339(a) == _expected(a)


# --- EventIds --------------------------------------------------------------------------------------


def test_event_ids_unique_within_and_across_instances():
    one, two = EventIds(), EventIds()
    a = [one.new() for _ in range(100_000)]
    b = [two.new() for _ in range(1_000)]
    assert len(set(a)) == len(a)
    assert not set(a) & set(b)
    assert all(isinstance(i, str) and i for i in a[:10])


def test_event_ids_unique_across_threads():
    # the agent's sensor threads and its status loop draw from one EventIds
    import sys
    import threading

    ids = EventIds()
    out: list[list[str]] = [[] for _ in range(4)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=lambda o=o: o.extend(ids.new() for _ in range(25_000))) for o in out]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    every = [i for o in out for i in o]
    assert len(set(every)) == len(every) == 100_000


# --- full round trip -------------------------------------------------------------------------------


def _full_process(pid: int) -> Process:
    return Process(
        exec_id=f"e{pid}", pid=pid, tid=pid + 1, ppid=pid - 1, parent_exec_id=f"e{pid - 1}",
        uid=1000, euid=0, gid=1000, egid=0, auid=1000, binary="/usr/bin/sudo", args=["sudo", "-i", "\xe9"],
        cwd="/home/u", comm="sudo", start_time="2024-01-02T03:04:05.000000001Z",
        flags=["truncated_args", "non_utf8_args", "namespace_entry"], cgroup_id=12345,
        caps=Caps(effective=["CAP_SYS_ADMIN"], permitted=["CAP_SYS_ADMIN", "CAP_BPF"]),
        ns=Namespaces(mnt=1, pid=2, net=3, user=4, uts=5, ipc=6, cgroup=7), entered_namespaces=["mnt", "pid"],
        binary_properties=BinaryProperties(setuid=0, setgid=0),
        container=Container(id="c0ffee", runtime="containerd"),
        pod=Pod(namespace="prod", name="web-1", labels={"app": "web"},
                container=PodContainer(name="nginx", image="nginx:1.25", image_id="nginx@sha256:" + "0" * 64),
                workload="Deployment/web", uid="1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9", qos_class="Burstable",
                workload_kind="Deployment", annotations={"team": "web"}),
    )


def test_encode_decode_round_trip_with_every_optional_body():
    e = Event(
        id="p-1", time="2024-01-02T03:04:05.123456789Z", type="process_exit", schema_version=SCHEMA_VERSION,
        severity="high", node=Node(name="n1", labels={"zone": "a"}, cluster="prod"),
        process=_full_process(10), parent=_full_process(9), ancestors=[_full_process(8), _full_process(7)],
        exit=Exit(code=None, signal="SIGKILL", core_dumped=True, duration_ns=42),
        file=File(operation="rename", path="/etc/passwd", flags=["O_WRONLY"], mode=0o644, uid=0, gid=0,
                  target="/etc/passwd.new", inode=12, result=-13),
        network=Network(protocol="tcp", family="ipv6", direction="outbound", source_ip="::1", source_port=40000,
                        destination_ip="::1", destination_port=443, bytes_sent=10, bytes_received=20,
                        duration_ns=5, dns_query="example.com",
                        dns=Dns(id=4660, type="AAAA", flags=["truncated_name"]), datagrams_sent=3,
                        datagrams_received=4, first_seen="2024-01-02T03:04:05Z", last_seen="2024-01-02T03:04:06Z",
                        flow_end="close"),
        privilege=Privilege(operation="setresuid", old_uid=1000, new_uid=0, old_gid=1000, new_gid=0,
                            new_caps=["CAP_SYS_ADMIN"], target_pid=7, name="m", source="/dev/sda", target="/mnt",
                            result=0),
        policy=PolicyAction(policy="fim", rule="shadow", action="sigkill", enforced=True, reason="read /etc/shadow"),
        status=AgentStatus(counters={"decode_errors": 3}), tags=["t1", "t2"],
    )
    # every field of every struct is set to a non-default value: nothing may be omitted or lost
    for s in (e, e.process, e.process.container, e.process.pod, e.process.pod.container, e.node, e.status,
              e.process.ns, e.process.binary_properties, e.file, e.network, e.network.dns, e.privilege,
              e.policy):
        for f in msgspec.structs.fields(s):
            assert getattr(s, f.name) not in (None, [], {}, ""), f"{type(s).__name__}.{f.name} not set"
    data = encode_json(e)
    assert decode_json(data) == e
    assert decode_json(data.decode()) == e
    obj = json.loads(data)
    assert obj["schema_version"] == SCHEMA_VERSION and obj["severity"] == "high"
    assert obj["exit"] == {"signal": "SIGKILL", "core_dumped": True, "duration_ns": 42}


def test_minimal_event_still_carries_version_and_severity():
    obj = json.loads(encode_json(_event()))
    assert obj["schema_version"] == SCHEMA_VERSION
    assert obj["severity"] == "info"
    assert "process" not in obj and "tags" not in obj


def test_decode_json_rejects_garbage():
    with pytest.raises(msgspec.DecodeError):
        decode_json(b"{not json")
    with pytest.raises(msgspec.ValidationError):
        decode_json(b'{"id": 1}')


def test_caps_round_trip_through_every_codec_and_decode_strictly():
    """Caps is a typed Struct (collector/core/event.py): every codec of events (JSON, the disk buffer's
    msgpack, to_builtins) carries it with no hooks, and decoding is as strict as a typed field."""
    from siemhub.collector.core.event import Caps

    caps = Caps(effective=["CAP_SYS_ADMIN"], permitted=["CAP_SYS_ADMIN", "CAP_BPF"])
    e = _event(process=Process(exec_id="x", pid=7, binary="/bin/true", caps=caps))
    obj = json.loads(encode_json(e))
    assert obj["process"]["caps"] == {"effective": ["CAP_SYS_ADMIN"], "permitted": ["CAP_SYS_ADMIN", "CAP_BPF"]}
    assert json.loads(msgspec.json.encode(Caps(permitted=["CAP_BPF"]))) == {"permitted": ["CAP_BPF"]}
    assert decode_json(encode_json(e)) == e
    packed = msgspec.msgpack.Encoder().encode(e)
    assert msgspec.msgpack.Decoder(Event).decode(packed) == e
    assert msgspec.to_builtins(e)["process"]["caps"] == obj["process"]["caps"]
    good = encode_json(e).decode()
    for bad in ('{"effective": [1]}', '{"effective": "CAP_BPF"}', '["CAP_BPF"]'):
        text = good.replace(json.dumps(obj["process"]["caps"], separators=(",", ":")), bad)
        assert text != good
        with pytest.raises(msgspec.ValidationError):
            decode_json(text)
