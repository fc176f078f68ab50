"""NetworkSensor.decode on hand-built kernel messages (packed with messages.NET): addresses and ports by
direction, byte counts and duration on close, the process from the shared cache, and bad messages."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from siemhub.collector.sensors.network import NetworkSensorConfig
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.network import NetworkSensor, cidr_key
from siemhub.collector.sensors.process import SensorContext
from tests.unit.kmsg import Harness, exec_msg

SEC = 10**9


def net_msg(kind: int, *, pid: int = 4242, start: int = 3 * SEC, ktime: int = 6 * SEC, family: int = 2,
            local: str = "10.0.0.5", remote: str = "93.184.216.34", lport: int = 40000, rport: int = 443,
            outbound: bool = True, sent: int = 0, received: int = 0, opened: int = 0, size: int | None = None,
            tid: int | None = None) -> bytes:
    def raw(a: str) -> bytes:
        return ipaddress.ip_address(a).packed.ljust(16, b"\0")

    return m.NET.pack(m.MSG_NET, m.NET.size if size is None else size, ktime, pid, pid if tid is None else tid,
                      start, 0xFFFF888000001000, sent, received, opened, kind, m.NET_OUTBOUND if outbound else 0,
                      family, lport, rport, raw(local), raw(remote))


@pytest.fixture
def h(tmp_path):
    h = Harness(tmp_path)
    h.net = NetworkSensor(NetworkSensorConfig(settle=0, pending={"max_wait": 0}), SensorContext(
        h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    h.decode(exec_msg(4242, ppid=1, ktime=3 * SEC, start=3 * SEC, filename=b"/usr/bin/curl",
                      args=[b"curl", b"https://example.com"]))
    return h


def decode(h, *msgs):
    h.net.decode(list(msgs))
    return h.net.join.ready(force=True)


def test_outbound_connect_names_the_process(h):
    (e,) = decode(h, net_msg(m.NET_CONNECT))
    assert e.type == "network_connect" and e.severity == "info"
    n = e.network
    assert (n.protocol, n.family, n.direction) == ("tcp", "ipv4", "outbound")
    assert (n.source_ip, n.source_port, n.destination_ip, n.destination_port) == ("10.0.0.5", 40000,
                                                                                 "93.184.216.34", 443)
    assert n.bytes_sent is None and n.duration_ns is None
    assert e.process.binary == "/usr/bin/curl" and e.process.pid == 4242
    assert e.process.exec_id == h.cache.get(4242).proc.exec_id
    assert e.time == h.clock.from_boot(6 * SEC)


def test_inbound_accept_swaps_source_and_destination(h):
    (e,) = decode(h, net_msg(m.NET_ACCEPT, family=10, local="::1", remote="2001:db8::7", lport=22,
                             rport=51000, outbound=False))
    n = e.network
    assert e.type == "network_accept"
    assert (n.family, n.direction) == ("ipv6", "inbound")
    assert (n.source_ip, n.source_port, n.destination_ip, n.destination_port) == ("2001:db8::7", 51000, "::1", 22)


def test_close_carries_bytes_and_duration(h):
    (e,) = decode(h, net_msg(m.NET_CLOSE, sent=1000, received=500, opened=5 * SEC, ktime=7 * SEC))
    assert e.type == "network_close"
    assert (e.network.bytes_sent, e.network.bytes_received, e.network.duration_ns) == (1000, 500, 2 * SEC)


def test_unknown_process_is_flagged_not_dropped(h):
    (e,) = decode(h, net_msg(m.NET_CONNECT, pid=999_999, start=4 * SEC))
    assert e.process.pid == 999_999 and "missing_process" in e.process.flags
    assert h.net.join.missing == 1


@pytest.mark.parametrize("msg,reason", [
    (net_msg(m.NET_CONNECT, size=50), "length_mismatch"),
    (net_msg(9), "unknown_kind"),
    (net_msg(m.NET_CONNECT, family=1), "unknown_kind"),
    (b"\x01" + bytes(m.NET.size - 1), "unknown_type"),
    (net_msg(m.NET_CONNECT)[:40], "error"),
])
def test_bad_messages_are_counted(h, msg, reason):
    assert decode(h, msg) == []
    assert h.net.decode_errors == 1
    if reason != "error":
        assert h.metrics.value("siemhub_decode_errors_total", sensor="network", reason=reason) == 1


def test_cidr_keys_for_the_lpm_trie():
    assert cidr_key("10.0.0.0/8") == (104).to_bytes(4, "little") + bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 0])
    assert cidr_key("127.0.0.1") == (128).to_bytes(4, "little") + bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])
    assert cidr_key("2001:db8::/32") == (32).to_bytes(4, "little") + ipaddress.ip_address("2001:db8::").packed
    with pytest.raises(ValueError):
        cidr_key("10.0.0.0/33")


# --- DNS queries ------------------------------------------------------------------------------------

def wire_name(name: bytes) -> bytes:
    return b"".join(bytes([len(p)]) + p for p in name.split(b".")) + b"\0" if name else b"\0"


def query(qid: int = 0xBEEF, name: bytes = b"example.com", qtype: int = 1, qclass: int = 1, flags: int = 0x0100,
          qdcount: int = 1) -> bytes:
    return struct.pack(">6H", qid, flags, qdcount, 0, 0, 0) + wire_name(name) + struct.pack(">HH", qtype, qclass)


def dns_msg(payload: bytes, *, sent: int | None = None, pid: int = 4242, family: int = 2, local: str = "0.0.0.0",
            remote: str = "127.0.0.53", lport: int = 0, kflags: int = 0, ktime: int = 6 * SEC,
            size: int | None = None) -> bytes:
    copied = payload[:m.DNS_PAYLOAD]
    return m.DNS.pack(m.MSG_DNS, m.DNS.size if size is None else size, ktime, pid, pid, 3 * SEC,
                      len(payload) if sent is None else sent, family, lport, 53, len(copied), m.DNS_SENDTO, 0,
                      kflags, ipaddress.ip_address(local).packed.ljust(16, b"\0"),
                      ipaddress.ip_address(remote).packed.ljust(16, b"\0"), copied)


def test_dns_query_event(h):
    (e,) = decode(h, dns_msg(query(qtype=28), local="10.0.0.5", lport=41000))
    assert e.type == "dns_query" and e.severity == "info"
    n = e.network
    assert (n.protocol, n.family, n.direction, n.source_ip, n.source_port, n.destination_ip, n.destination_port) == (
        "udp", "ipv4", "outbound", "10.0.0.5", 41000, "127.0.0.53", 53)
    assert n.dns_query == "example.com" and (n.dns.id, n.dns.type, n.dns.flags) == (0xBEEF, "AAAA", [])
    assert e.process.exec_id == h.cache.get(4242).proc.exec_id and e.process.binary == "/usr/bin/curl"
    assert e.time == h.clock.from_boot(6 * SEC)


def test_dns_unbound_socket_has_no_source(h):
    (e,) = decode(h, dns_msg(query(), family=10, local="::", remote="2001:db8::53"))
    assert e.network.family == "ipv6" and e.network.destination_ip == "2001:db8::53"
    assert e.network.source_ip is None and e.network.source_port is None


@pytest.mark.parametrize("payload,sent,name,qtype,flags", [
    (query(qtype=65), None, "example.com", "HTTPS", []),
    (query(qtype=4242), None, "example.com", "TYPE4242", []),
    (query(name=b""), None, ".", "A", []),
    (query(qclass=3, qtype=16, name=b"version.bind"), None, "version.bind", "TXT", ["class_CH"]),
    # labels with dots, backslashes, spaces and control bytes: presentation form, flagged when not printable
    (query(name=b"a\\b.c.d"), None, "a\\\\b.c.d", "A", []),
    (query(name=b"x y\x01\xff.test"), None, "x\\032y\\001\\255.test", "A", ["escaped_name"]),
    (struct.pack(">6H", 1, 0x0100, 1, 0, 0, 0) + b"\x03a.b\x00\x00\x01\x00\x01", None, "a\\.b", "A", []),
    (query(flags=0x8180), None, "example.com", "A", ["response"]),
    (query(flags=0x2800), None, "example.com", "A", ["opcode_5"]),  # UPDATE
    (query(qdcount=2), None, "example.com", "A", ["multiple_questions"]),
    (query(qdcount=0), None, None, None, ["no_question"]),
    (b"\x12\x34", None, None, None, ["malformed"]),
    (query()[:-2], None, "example.com", None, ["malformed"]),  # no type and class, nothing cut
    (query()[:15], None, "ex", None, ["malformed"]),  # a label runs past the datagram
    (struct.pack(">6H", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", None, None, None, ["malformed"]),
])
def test_dns_question_parsing(h, payload, sent, name, qtype, flags):
    (e,) = decode(h, dns_msg(payload, sent=sent))
    n = e.network
    assert (n.dns_query, n.dns.type, n.dns.flags) == (name, qtype, flags)
    assert n.dns.id == (struct.unpack(">H", payload[:2])[0] if len(payload) >= 12 else None)


def test_dns_long_name_fits_and_a_longer_datagram_is_flagged_truncated(h):
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 253 characters: the longest name there is
    name = b".".join(labels)
    (e,) = decode(h, dns_msg(query(name=name, qtype=16)))
    assert e.network.dns_query == name.decode() and e.network.dns.type == "TXT" and e.network.dns.flags == []
    # the kernel copied 40 of 300 bytes: the name is cut, and says so
    (e,) = decode(h, dns_msg(query(name=name)[:40], sent=300))
    assert e.network.dns_query == "a" * 27 and e.network.dns.flags == ["truncated_name"]
    (e,) = decode(h, dns_msg(query()[:27], sent=29))
    assert e.network.dns_query == "example.com" and e.network.dns.flags == ["truncated_payload"]
    (e,) = decode(h, dns_msg(b"", sent=29, kflags=m.DNS_UNREADABLE))
    assert e.network.dns_query is None and e.network.dns.flags == ["truncated_payload", "unreadable_payload"]


def test_dns_name_longer_than_255_octets_is_malformed(h):
    (e,) = decode(h, dns_msg(query(name=b".".join([b"x" * 63] * 4) + b".y")))
    assert e.network.dns.flags == ["malformed"] and e.network.dns.type is None


def test_dns_split_payload_is_flagged(h):
    (e,) = decode(h, dns_msg(query(), kflags=m.DNS_MORE_IOV))
    assert e.network.dns_query == "example.com" and e.network.dns.flags == ["split_payload"]
    # the first iovec held only the header: the name is cut there, not malformed
    (e,) = decode(h, dns_msg(query()[:12], kflags=m.DNS_MORE_IOV))
    assert e.network.dns_query is None and e.network.dns.flags == ["truncated_name", "split_payload"]


@pytest.mark.parametrize("msg,reason", [
    (dns_msg(query(), size=100), "length_mismatch"),
    (dns_msg(query(), family=7), "unknown_kind"),
])
def test_bad_dns_messages_are_counted(h, msg, reason):
    assert decode(h, msg) == []
    assert h.net.decode_errors == 1
    assert h.metrics.value("siemhub_decode_errors_total", sensor="network", reason=reason) == 1


# --- the DNS parser on hostile input (hypothesis) --------------------------------------------------------

from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from siemhub.collector.sensors.dns import NAME_MAX, parse_query  # noqa: E402


@given(st.binary(max_size=300), st.integers(0, 400))
def test_dns_parser_never_raises_and_names_stay_printable(payload, more):
    qid, name, qtype, flags = parse_query(payload, len(payload) + more)
    assert name is None or all(0x21 <= ord(c) <= 0x7E for c in name)
    assert qtype is None or qtype.isalnum()
    assert ("truncated_name" in flags or "truncated_payload" in flags) <= (more > 0)


def _labels_of(name: str) -> list[bytes]:
    """Presentation form back to labels: `\\DDD`, `\\X`, and unescaped dots between labels."""
    labels, cur, i = [], bytearray(), 0
    while i < len(name):
        c = name[i]
        if c == "\\":
            if name[i + 1].isdigit():
                cur.append(int(name[i + 1:i + 4]))
                i += 4
            else:
                cur += name[i + 1].encode()
                i += 2
        elif c == ".":
            labels.append(bytes(cur))
            cur = bytearray()
            i += 1
        else:
            cur += c.encode()
            i += 1
    return [*labels, bytes(cur)]


@given(st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=5), st.integers(0, 65535))
def test_dns_names_survive_exactly(labels, qtype):
    assume(sum(len(x) + 1 for x in labels) + 1 <= NAME_MAX)
    wire = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    payload = struct.pack(">6H", 7, 0x0100, 1, 0, 0, 0) + wire + struct.pack(">HH", qtype, 1)
    qid, name, qtype_name, flags = parse_query(payload, len(payload))
    assert qid == 7 and qtype_name is not None and flags in ([], ["escaped_name"])
    assert _labels_of(name) == labels
    assert ("escaped_name" in flags) == any(b < 0x21 or b > 0x7E for x in labels for b in x)


# --- waiting for the process sensor (collector/sensors/attribution.py) ---

def _boot_ns() -> int:
    import time
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def _sensor(h, settle: float) -> NetworkSensor:
    return NetworkSensor(NetworkSensorConfig(settle=settle, pending={"max_wait": 0}), SensorContext(
        h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))


def test_event_waits_until_the_process_sensor_read_past_it(h):
    """A shell forks and execs curl, which connects; the connect is decoded before the process sensor has
    decoded curl's exec. Named then, it would be the shell's: it waits for the process sensor instead."""
    now = _boot_ns()
    h.decode(exec_msg(5151, ktime=now - 2 * SEC, start=now - 3 * SEC, filename=b"/bin/sh", args=[b"sh"]))
    net = _sensor(h, settle=5)
    h.cache.exec_horizon = lambda: now - SEC  # the process sensor has read up to a second ago
    net.decode([net_msg(m.NET_CONNECT, pid=5151, start=now - 3 * SEC, ktime=now)])
    assert net.join.ready() == [] and len(net.join) == 1
    h.decode(exec_msg(5151, ktime=now - 1000, start=now - 3 * SEC, filename=b"/usr/bin/curl", args=[b"curl"]))
    assert net.join.ready() == []  # decoded, but the sensor has not said it read up to the connect yet
    h.cache.exec_horizon = lambda: now + 1
    (e,) = net.join.ready()
    assert e.process.binary == "/usr/bin/curl"
    assert e.process.exec_id == h.cache.exec_id(5151, now - 1000) == h.cache.get(5151).proc.exec_id
    assert net.join.settle_expired == 0


def test_a_stalled_process_sensor_holds_events_at_most_settle(h):
    import time
    now = _boot_ns()
    h.decode(exec_msg(5152, ktime=now - 2 * SEC, start=now - 3 * SEC, filename=b"/bin/sh", args=[b"sh"]))
    net = _sensor(h, settle=0.2)
    h.cache.exec_horizon = lambda: now - 60 * SEC  # stalled a minute ago
    net.decode([net_msg(m.NET_ACCEPT, pid=5152, start=now - 3 * SEC, ktime=now - 61 * SEC, outbound=False),
                net_msg(m.NET_CONNECT, pid=5152, start=now - 3 * SEC, ktime=now),
                net_msg(m.NET_CLOSE, pid=5152, start=now - 3 * SEC, ktime=now + 1, sent=1, received=2)])
    (first,) = net.join.ready()  # read up to: goes at once; the others wait
    assert first.type == "network_accept" and net.join.settle_expired == 0
    deadline = time.monotonic() + 5
    out = []
    while len(out) < 2 and time.monotonic() < deadline:
        out += net.join.ready()
        time.sleep(0.02)
    assert [e.type for e in out] == ["network_connect", "network_close"]
    assert all(e.process.binary == "/bin/sh" for e in out)  # what the cache knows: named, never dropped
    assert net.join.settle_expired == 2 and net.counters()["settle_expired"] == 2
    # one that was read up to, ahead of overdue ones, in the same call: only the overdue are counted
    net.decode([net_msg(m.NET_ACCEPT, pid=5152, start=now - 3 * SEC, ktime=now - 61 * SEC, outbound=False),
                net_msg(m.NET_CONNECT, pid=5152, start=now - 3 * SEC, ktime=now + 2)])
    time.sleep(0.3)
    assert [e.type for e in net.join.ready()] == ["network_accept", "network_connect"]
    assert net.join.settle_expired == 3


def test_without_a_process_sensor_nothing_waits(h):
    now = _boot_ns()
    h.decode(exec_msg(5153, ktime=now - 2 * SEC, start=now - 3 * SEC, filename=b"/bin/sh", args=[b"sh"]))
    assert h.cache.exec_horizon is None  # the harness never load()s its process sensor
    net = _sensor(h, settle=5)
    net.decode([net_msg(m.NET_CONNECT, pid=5153, start=now - 3 * SEC, ktime=now)])
    (e,) = net.join.ready()
    assert e.process.binary == "/bin/sh" and net.join.settle_expired == 0
