"""UdpFlows (collector/sensors/udp_flows.py) on hand-built kernel messages and a stand-in for the
`udp_flows` map: the index of announced flows, reports at close / exit / interval / idle, direction."""

from __future__ import annotations

import ipaddress
import time

import pytest

from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.network import NetworkSensor, NetworkSensorConfig
from siemhub.collector.sensors.process import SensorContext
from tests.unit.kmsg import Harness, exec_msg

SEC = 10**9
SOCK = 0xFFFF888000002000


def raw(a: str) -> bytes:
    return ipaddress.ip_address(a).packed.ljust(16, b"\0")


def udp_msg(kind, *, pid=4242, sock=SOCK, ktime=6 * SEC, family=2, local="0.0.0.0", remote="10.0.0.9",
            lport=40000, rport=514, sent_first=True) -> bytes:
    return m.UDP.pack(m.MSG_UDP, m.UDP.size, ktime, pid, pid, 3 * SEC, sock, kind,
                      m.UDP_SENT_FIRST if sent_first else 0, family, lport, rport, raw(local), raw(remote))


def key(pid=4242, sock=SOCK, family=2, remote="10.0.0.9", rport=514) -> bytes:
    return m.UDP_KEY.pack(sock, pid, family, int.from_bytes(rport.to_bytes(2, "big"), "little"), raw(remote))


class FakeMap(dict):
    value_size = m.UDP_VAL.size

    def lookup(self, k):
        return self.get(k)

    def lookup_and_delete(self, k):  # kernel.maps.Map.lookup_and_delete
        return self.pop(k, None)


@pytest.fixture
def h(tmp_path):
    h = Harness(tmp_path)
    h.net = NetworkSensor(NetworkSensorConfig(settle=0, pending={"max_wait": 0}, udp={"report_interval": 10}),
                          SensorContext(h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    h.map = FakeMap()
    h.net.flow_map = lambda: h.map
    h.decode(exec_msg(4242, ppid=1, ktime=3 * SEC, start=3 * SEC, filename=b"/usr/sbin/rsyslogd", args=[b"rsyslogd"]))
    return h


def run(h, *msgs, now=None):
    h.net.decode(list(msgs))
    h.net.udp.tick(now)
    return h.net.join.ready(force=True)


def test_flow_reported_once_at_close_with_its_counters(h):
    assert run(h, udp_msg(m.UDP_NEW)) == []
    h.map[key()] = m.UDP_VAL.pack(5000, 80, 50, 2, 6 * SEC, 8 * SEC)
    (e,) = run(h, udp_msg(m.UDP_CLOSE, ktime=9 * SEC))
    n = e.network
    assert e.type == "network_flow" and e.process.binary == "/usr/sbin/rsyslogd"
    assert (n.protocol, n.family, n.direction) == ("udp", "ipv4", "outbound")
    assert (n.source_ip, n.source_port, n.destination_ip, n.destination_port) == (None, 40000, "10.0.0.9", 514)
    assert (n.bytes_sent, n.bytes_received, n.datagrams_sent, n.datagrams_received) == (5000, 80, 50, 2)
    assert (n.first_seen, n.last_seen) == (h.clock.from_boot(6 * SEC), h.clock.from_boot(8 * SEC))
    assert n.duration_ns == 2 * SEC and n.flow_end == "close" and e.time == h.clock.from_boot(9 * SEC)
    assert key() not in h.map and not h.net.udp.flows  # read and deleted
    assert run(h, udp_msg(m.UDP_CLOSE, ktime=10 * SEC)) == []  # a second close (a dup'd descriptor): nothing


def test_received_first_is_inbound_and_exit_ends_every_flow_of_the_process(h):
    run(h, udp_msg(m.UDP_NEW, family=10, local="fd00::5", remote="fd00::9", lport=53, rport=33000, sent_first=False),
        udp_msg(m.UDP_NEW, family=10, local="fd00::5", remote="fd00::a", lport=53, rport=33001, sent_first=False))
    h.map[key(family=10, remote="fd00::9", rport=33000)] = m.UDP_VAL.pack(30, 40, 1, 1, 6 * SEC, 6 * SEC)
    h.map[key(family=10, remote="fd00::a", rport=33001)] = m.UDP_VAL.pack(0, 40, 0, 1, 6 * SEC, 6 * SEC)
    out = run(h, udp_msg(m.UDP_EXIT, sock=0, ktime=9 * SEC))
    assert sorted(e.network.source_ip for e in out) == ["fd00::9", "fd00::a"]
    for e in out:
        n = e.network
        assert n.direction == "inbound" and (n.destination_ip, n.destination_port) == ("fd00::5", 53)
        assert n.flow_end == "exit" and n.family == "ipv6"


def test_interval_reports_flows_with_new_datagrams_and_ends_idle_ones(h):
    run(h, udp_msg(m.UDP_NEW), udp_msg(m.UDP_NEW, remote="10.0.0.10"))
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    h.map[key()] = m.UDP_VAL.pack(100, 0, 1, 0, boot - SEC, boot - SEC)
    h.map[key(remote="10.0.0.10")] = m.UDP_VAL.pack(7, 0, 1, 0, boot - 400 * SEC, boot - 400 * SEC)  # idle
    later = time.monotonic() + 11
    out = run(h, now=later)
    by_peer = {e.network.destination_ip: e.network for e in out}
    assert by_peer["10.0.0.9"].flow_end is None and by_peer["10.0.0.9"].bytes_sent == 100
    assert by_peer["10.0.0.10"].flow_end == "idle" and key(remote="10.0.0.10") not in h.map
    assert run(h, now=later + 11) == []  # nothing new since: not reported again
    h.map[key()] = m.UDP_VAL.pack(300, 0, 3, 0, boot - SEC, boot)
    (e,) = run(h, now=later + 22)
    assert e.network.bytes_sent == 300 and e.network.datagrams_sent == 3 and e.network.flow_end is None


def test_shutdown_reports_what_is_open_and_bad_messages_are_errors(h):
    run(h, udp_msg(m.UDP_NEW))
    h.map[key()] = m.UDP_VAL.pack(1, 0, 1, 0, 6 * SEC, 6 * SEC)
    h.net._bpf = object()  # loaded (flush reads the map only then)
    out = h.net.flush()
    assert [e.network.flow_end for e in out] == ["shutdown"]
    h.net._bpf = None
    before = h.net.decode_errors
    h.net.decode([udp_msg(m.UDP_NEW)[:40], udp_msg(9)])
    assert h.net.decode_errors == before + 2
