"""End-to-end: UDP flows between two real processes under a real agent (process + network sensors).

A peer process and a client process exchange a known number of datagrams of known sizes over IPv4 and
IPv6, connected or not, with every send and receive call (sendto, sendmsg, sendmmsg, write, send;
recvfrom, recvmsg, recvmmsg, read, recv). Each side must get one `network_flow` event (transport udp)
for its socket and peer, naming its process, with the bytes and datagrams each way, ended at close."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import running_agent

pytestmark = pytest.mark.bpf

MMSG = r"""
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint32)]
def _vec(bufs, names):
    n = len(bufs)
    v, iovs, keep = (mmsghdr * n)(), (iovec * n)(), []
    for i, b in enumerate(bufs):
        iovs[i].base, iovs[i].len = ctypes.cast(b, ctypes.c_void_p), len(b)
        v[i].hdr.iov, v[i].hdr.iovlen = ctypes.pointer(iovs[i]), 1
        if names is not None:
            nb = ctypes.create_string_buffer(names[i] if names[i] else 28, 28)
            keep.append(nb)
            v[i].hdr.name, v[i].hdr.namelen = ctypes.cast(nb, ctypes.c_void_p), 28
    return v, (iovs, keep, bufs)
def sendmmsg(sock, payloads, sockaddr):
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
    v, keep = _vec(bufs, [sockaddr] * len(bufs) if sockaddr else None)
    n = libc.sendmmsg(sock.fileno(), v, len(bufs), 0)
    assert n == len(bufs), ctypes.get_errno()
def recvmmsg(sock, count, size):
    got = 0
    while got < count:
        bufs = [ctypes.create_string_buffer(size) for _ in range(count - got)]
        v, keep = _vec(bufs, [b""] * len(bufs))
        n = libc.recvmmsg(sock.fileno(), v, len(bufs), 0x10000, None)  # MSG_WAITFORONE
        assert n > 0, ctypes.get_errno()
        got += n
def sockaddr(host, port):
    import ipaddress, struct
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return struct.pack("<H", 2) + struct.pack(">H", port) + ip.packed + b"\0" * 8
    return struct.pack("<H", 10) + struct.pack(">H", port) + b"\0" * 4 + ip.packed + b"\0" * 4
"""

# The peer: receives N datagrams of 100 bytes from one client, answers M of 40 bytes, closes.
PEER = MMSG + r"""
import os, sys
host, mode, n, m = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((host, 0))
print(s.getsockname()[1], flush=True)
if mode == "mmsg":
    data, client = s.recvfrom(2048)
    recvmmsg(s, n - 1, 2048)
    sendmmsg(s, [b"a" * 40] * m, sockaddr(client[0], client[1]))
else:
    for i in range(n):
        if i % 2:
            data, anc, flags, client = s.recvmsg(2048)
        else:
            data, client = s.recvfrom(2048)
        assert len(data) == 100
    for i in range(m):
        if i % 2:
            s.sendmsg([b"a" * 40], [], 0, client)
        else:
            s.sendto(b"a" * 40, client)
s.close()
"""

# The client: N datagrams of 100 bytes to the peer, M of 40 back; connected or not.
CLIENT = MMSG + r"""
import os, sys
host, port, mode, n, m = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
if mode == "connected":
    s.connect((host, port))
    for i in range(n):
        [s.send, lambda b: os.write(s.fileno(), b), lambda b: s.sendmsg([b])][i % 3](b"q" * 100)
    print(s.getsockname()[1], flush=True)
    for i in range(m):
        got = [lambda: s.recv(2048), lambda: os.read(s.fileno(), 2048), lambda: s.recvmsg(2048)[0]][i % 3]()
        assert len(got) == 40
elif mode == "mmsg":
    s.sendto(b"q" * 100, (host, port))
    sendmmsg(s, [b"q" * 100] * (n - 1), sockaddr(host, port))
    print(s.getsockname()[1], flush=True)
    recvmmsg(s, m, 2048)
else:
    for i in range(n):
        if i % 2:
            s.sendmsg([b"q" * 60, b"q" * 40], [], 0, (host, port))
        else:
            s.sendto(b"q" * 100, (host, port))
    print(s.getsockname()[1], flush=True)
    for i in range(m):
        data, addr = s.recvfrom(2048)
        assert len(data) == 40
s.close()
"""


@pytest.fixture(scope="module")
def udp_agent(tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("udp-agent"), """  process: {poll_interval: 0.05}
  network: {poll_interval: 0.05}""")


def _flows(agent, pid):
    return [e for e in agent.events() if e["type"] == "network_flow" and e["process"]["pid"] == pid]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("mode", ["unconnected", "connected", "mmsg"])
def test_udp_flow_each_side(udp_agent, host, mode):
    n, m = 21, 13
    peer = subprocess.Popen([sys.executable, "-c", PEER, host, "mmsg" if mode == "mmsg" else "plain", str(n), str(m)],
                            stdout=subprocess.PIPE, text=True)
    pport = int(peer.stdout.readline())
    client = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(pport), mode, str(n), str(m)],
                              stdout=subprocess.PIPE, text=True)
    cport = int(client.stdout.readline())
    assert client.wait(10) == 0 and peer.wait(10) == 0

    found = udp_agent.wait_for(lambda e: e["type"] == "network_flow" and e["process"]["pid"] == peer.pid,
                               what="the peer's flow")
    found += udp_agent.wait_for(lambda e: e["type"] == "network_flow" and e["process"]["pid"] == client.pid,
                                what="the client's flow")
    time.sleep(0.3)  # nothing more should come
    # one final report each (a loaded machine may add a report of the flow while it was open)
    mine = [e for e in _flows(udp_agent, client.pid) if e["network"].get("flow_end")]
    theirs = [e for e in _flows(udp_agent, peer.pid) if e["network"].get("flow_end")]
    assert len(mine) == 1 and len(theirs) == 1, (mine, theirs)
    c, p = mine[0], theirs[0]
    fam = "ipv6" if ":" in host else "ipv4"
    cn = c["network"]
    assert cn["protocol"] == "udp" and cn["family"] == fam and cn["direction"] == "outbound"
    assert (cn["destination_ip"], cn["destination_port"]) == (host, pport) and cn["source_port"] == cport
    assert (cn["bytes_sent"], cn["datagrams_sent"]) == (100 * n, n)
    assert (cn["bytes_received"], cn["datagrams_received"]) == (40 * m, m)
    assert cn["flow_end"] in ("close", "exit") and cn["first_seen"] <= cn["last_seen"]
    assert c["process"]["binary"] == sys.executable or c["process"]["args"][0] == sys.executable
    assert "missing_process" not in c["process"].get("flags", [])
    pn = p["network"]
    assert pn["direction"] == "inbound" and (pn["source_ip"], pn["source_port"]) == (host, cport)
    assert (pn["destination_ip"], pn["destination_port"]) == (host, pport)
    assert (pn["bytes_received"], pn["datagrams_received"]) == (100 * n, n)
    assert (pn["bytes_sent"], pn["datagrams_sent"]) == (40 * m, m)
    assert pn["flow_end"] in ("close", "exit")


LONG = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for burst in range(3):
    for i in range(5):
        s.sendto(b"x" * 10, (host, port))
    time.sleep(0.8)
s.close()
"""


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


IGNORED_PORT = _free_udp_port()


@pytest.fixture(scope="module")
def interval_agent(tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("udp-interval"), f"""  process: {{poll_interval: 0.05}}
  network: {{poll_interval: 0.05, udp: {{report_interval: 0.5}}, ignore: {{ports: [{IGNORED_PORT}]}}}}""")


def test_long_flow_is_reported_every_interval_then_at_close(interval_agent):
    """A flow that lives 2.4 s with a 0.5 s report interval: reports while it lives (totals so far, no
    flow_end), each later one larger, then the final one at close with every datagram."""
    import socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-c", LONG, "127.0.0.1", str(port)])
    assert p.wait(15) == 0
    sink.close()
    final = interval_agent.wait_for(lambda e: e["type"] == "network_flow" and e["process"]["pid"] == p.pid
                                    and e["network"].get("flow_end"), what="the final flow")
    flows = [e["network"] for e in _flows(interval_agent, p.pid)]
    assert len(final) == 1 and flows[-1] is final[0]["network"] or flows[-1] == final[0]["network"]
    interim = flows[:-1]
    assert 1 <= len(interim) <= 5, flows
    counts = [f["datagrams_sent"] for f in interim]
    assert counts == sorted(set(counts)) and all(c % 5 == 0 and c <= 15 for c in counts), counts
    assert all("flow_end" not in f for f in interim)
    last = final[0]["network"]
    assert (last["datagrams_sent"], last["bytes_sent"], last["flow_end"]) == (15, 150, "close")
    assert last["destination_port"] == port and last["duration_ns"] >= 1_500_000_000


def test_ignored_port_has_no_flow(interval_agent):
    import socket

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", IGNORED_PORT))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    sender = subprocess.run([sys.executable, "-c", "import socket, sys\n"
                             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                             "for p in sys.argv[1:]: s.sendto(b'z' * 7, ('127.0.0.1', int(p)))\n",
                             str(IGNORED_PORT), str(other.getsockname()[1])], check=True)
    del sender
    flows = interval_agent.wait_for(lambda e: e["type"] == "network_flow" and e["network"]["destination_port"]
                                    == other.getsockname()[1], what="the flow to the other port")
    time.sleep(0.5)
    assert len(flows) == 1
    assert not [e for e in interval_agent.events() if e["type"] == "network_flow"
                and IGNORED_PORT in (e["network"].get("destination_port"), e["network"].get("source_port"))]
    sink.close()
    other.close()
