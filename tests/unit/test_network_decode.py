"""NetworkSensor.decode on hand-built kernel messages (packed with messages.NET): addresses and ports by
direction, byte counts and duration on close, the process from the shared cache, and bad messages."""

from __future__ import annotations

import ipaddress

import pytest

from siemhub.collector.config import NetworkSensorConfig
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
