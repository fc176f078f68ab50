"""End-to-end: TCP connections between two real processes under a real agent (process + network sensors).

A server process and a client process (separate Python interpreters) exchange a known number of bytes;
both ends' events must name the right process (the exec_id of its process_exec), carry the 4-tuple,
and the closes must carry the byte counts and a duration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import process_sensor_held, running_agent

pytestmark = pytest.mark.bpf

SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.bind((sys.argv[1], 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
got = 0
while got < 1000:
    got += len(c.recv(1000 - got))
c.sendall(b"r" * 500)
while c.recv(100):
    pass
c.close()
"""

CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
c = socket.socket(fam, socket.SOCK_STREAM)
c.connect((sys.argv[1], int(sys.argv[2])))
print(c.getsockname()[1], flush=True)
c.sendall(b"q" * 1000)
got = 0
while got < 500:
    got += len(c.recv(500 - got))
c.close()
"""


@pytest.fixture(scope="module")
def net_agent(tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("net-agent"), """  process: {poll_interval: 0.05}
  network: {poll_interval: 0.05}""")


def _exchange(host: str) -> tuple[subprocess.Popen, subprocess.Popen, int, int]:
    server = subprocess.Popen([sys.executable, "-c", SERVER, host], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    client = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port)], stdout=subprocess.PIPE, text=True)
    cport = int(client.stdout.readline())
    assert client.wait(10) == 0 and server.wait(10) == 0
    return server, client, port, cport


def _exec_of(agent, pid):
    """The last image of a process that has exited: its exit is written after every exec of its pid."""
    agent.wait_for(lambda e: e["type"] == "process_exit" and e["process"]["pid"] == pid, what=f"exit of {pid}")
    return [e for e in agent.events() if e["type"] == "process_exec" and e["process"]["pid"] == pid][-1]


def _net(agent, etype, pid, port_field, port):
    return agent.wait_for(lambda e: e["type"] == etype and e["process"]["pid"] == pid
                          and e["network"].get(port_field) == port, what=f"{etype} of {pid}")


@pytest.mark.parametrize("host,family", [("127.0.0.1", "ipv4"), ("::1", "ipv6")])
def test_connect_accept_close_tied_to_both_processes(net_agent, host, family):
    started = time.monotonic()
    server, client, port, cport = _exchange(host)
    s_exec, c_exec = _exec_of(net_agent, server.pid), _exec_of(net_agent, client.pid)

    conn = _net(net_agent, "network_connect", client.pid, "source_port", cport)
    assert len(conn) == 1
    n = conn[0]["network"]
    assert n == {"protocol": "tcp", "family": family, "direction": "outbound", "source_ip": host,
                 "source_port": cport, "destination_ip": host, "destination_port": port}
    assert conn[0]["process"]["exec_id"] == c_exec["process"]["exec_id"]
    assert conn[0]["process"]["binary"] == c_exec["process"]["binary"]
    assert conn[0]["parent"]["exec_id"] == c_exec["parent"]["exec_id"]

    acc = _net(net_agent, "network_accept", server.pid, "source_port", cport)
    assert len(acc) == 1
    n = acc[0]["network"]
    assert n == {"protocol": "tcp", "family": family, "direction": "inbound", "source_ip": host,
                 "source_port": cport, "destination_ip": host, "destination_port": port}
    assert acc[0]["process"]["exec_id"] == s_exec["process"]["exec_id"]

    wall = (time.monotonic() - started) * 1e9
    c_close = _net(net_agent, "network_close", client.pid, "source_port", cport)[0]
    assert c_close["network"]["direction"] == "outbound" and c_close["network"]["destination_port"] == port
    assert c_close["network"]["bytes_sent"] == 1000 and c_close["network"]["bytes_received"] == 500
    assert 0 < c_close["network"]["duration_ns"] < wall
    assert c_close["process"]["exec_id"] == c_exec["process"]["exec_id"]

    s_close = _net(net_agent, "network_close", server.pid, "source_port", cport)[0]
    assert s_close["network"]["direction"] == "inbound" and s_close["network"]["destination_port"] == port
    assert s_close["network"]["bytes_sent"] == 500 and s_close["network"]["bytes_received"] == 1000
    assert 0 < s_close["network"]["duration_ns"] < wall
    assert s_close["process"]["exec_id"] == s_exec["process"]["exec_id"]
    assert conn[0]["time"] <= c_close["time"] and acc[0]["time"] <= s_close["time"]


def test_ignored_port_never_reaches_user_space(net_agent):
    sensor = next(s for s in net_agent.agent.sensors if s.name == "network")
    server = subprocess.Popen([sys.executable, "-c", SERVER, "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    before = sensor.filtered
    sensor.set_filters([], [port])
    try:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, "127.0.0.1", str(port)], stdout=subprocess.PIPE,
                                  text=True)
        cport = int(client.stdout.readline())
        assert client.wait(10) == 0 and server.wait(10) == 0
        # a later, unfiltered connection is reported: once it is, the filtered one would have been too
        _, marker, _, mport = _exchange("127.0.0.1")
        _net(net_agent, "network_close", marker.pid, "source_port", mport)
        events = net_agent.events()
        assert not [e for e in events if e["type"].startswith("network_")
                    and port in (e["network"].get("source_port"), e["network"].get("destination_port"))]
        deadline = time.monotonic() + 3  # the counter is read from the kernel once a second
        while sensor.filtered - before < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sensor.filtered - before >= 2  # the connect and the accept were dropped in the kernel
        assert cport
    finally:
        sensor.set_filters([], [])


def test_ignored_cidr_never_reaches_user_space(net_agent):
    sensor = next(s for s in net_agent.agent.sensors if s.name == "network")
    sensor.set_filters(["::1/128"], [])
    try:
        server, client, port, cport = _exchange("::1")
        _, marker, _, mport = _exchange("127.0.0.1")
        _net(net_agent, "network_close", marker.pid, "source_port", mport)
        assert not [e for e in net_agent.events() if e["type"].startswith("network_")
                    and e["network"].get("destination_port") == port]
    finally:
        sensor.set_filters([], [])


def test_connect_from_a_thread_names_the_process(net_agent):
    """The process is the thread group, not the thread: a connect from a second thread must resolve to
    the process' exec (its start time is the leader's, as /proc counts it)."""
    server = subprocess.Popen([sys.executable, "-c", SERVER, "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    code = ("import threading, sys\nsrc = sys.argv[1]\nsys.argv = sys.argv[1:]\n"
            "t = threading.Thread(target=lambda: exec(src, {}))\nt.start(); t.join()\n")
    client = subprocess.Popen([sys.executable, "-c", code, CLIENT, "127.0.0.1", str(port)], stdout=subprocess.PIPE,
                              text=True)
    cport = int(client.stdout.readline())
    assert client.wait(10) == 0 and server.wait(10) == 0
    c_exec = _exec_of(net_agent, client.pid)
    (conn,) = _net(net_agent, "network_connect", client.pid, "source_port", cport)
    assert conn["process"]["exec_id"] == c_exec["process"]["exec_id"]
    assert "missing_process" not in conn["process"].get("flags", [])



def test_connect_waits_for_a_lagging_process_sensor(tmp_path):
    """A shell the agent knows execs a client that connects at once, while the process sensor is held for
    0.6 s, longer than the fixed 0.25 s wait of earlier versions, which then named the shell. The network
    sensor waits until the process sensor has read up to the connect (collector/sensors/attribution.py),
    so the connect is the client's."""
    for running in running_agent(tmp_path, """  process: {poll_interval: 0.05}
  network: {poll_interval: 0.05}"""):
        (net_sensor,) = [s for s in running.agent.sensors if s.name == "network"]
        server = subprocess.Popen([sys.executable, "-c", SERVER, "127.0.0.1"], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        client = subprocess.Popen(["/bin/sh", "-c", 'read go; exec "$0" -c "$1" 127.0.0.1 "$2"', sys.executable,
                                   CLIENT, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        sh_exec = running.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == client.pid,
                                   what="the shell's exec")[-1]
        assert sh_exec["process"]["binary"] == "/bin/sh"
        with process_sensor_held(running):
            client.stdin.write("go\n")
            client.stdin.close()
            cport = int(client.stdout.readline())
            assert client.wait(10) == 0 and server.wait(10) == 0
            time.sleep(0.6)
            assert not [e for e in running.events() if e["type"] == "network_connect"
                        and e["process"]["pid"] == client.pid]
        c_exec = _exec_of(running, client.pid)
        assert c_exec["process"]["binary"] == sys.executable
        (conn,) = _net(running, "network_connect", client.pid, "source_port", cport)
        assert conn["process"]["binary"] == sys.executable
        assert conn["process"]["exec_id"] == c_exec["process"]["exec_id"]
        assert net_sensor.join.settle_expired == 0

# --- DNS queries ------------------------------------------------------------------------------------

# One process sends crafted queries the four ways resolvers do: sendto on an unconnected socket (IPv4),
# send on a connected socket (IPv6), sendmsg, and sendmmsg with an A and an AAAA query in one call (what
# glibc's resolver does); then a UDP datagram to another port, which must not be reported. Nothing
# needs to answer: the sensor reports what is sent.
DNS_CLIENT = r"""
import ctypes, os, socket, struct, sys

def query(qid, name, qtype):
    labels = b"".join(bytes([len(p)]) + p for p in name.encode().split(b"."))
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", qtype, 1)

u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u4.sendto(query(0x1111, "sendto.siemhub.test", 1), ("127.0.0.1", 53))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u6.connect(("::1", 53))
u6.send(query(0x2222, "connected.siemhub.test", 28))
u4.sendmsg([query(0x3333, "sendmsg.siemhub.test", 16)], [], 0, ("127.0.0.1", 53))

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.POINTER(iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

# A connected socket that meets a closed port gets ECONNREFUSED on its next send: sendmmsg's second
# message would fail. So these go to a sink of our own on a loopback address no one else uses.
sink_ip = "127.53.%d.%d" % ((os.getpid() >> 8) & 255, os.getpid() & 255)
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind((sink_ip, 53))
c4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c4.connect((sink_ip, 53))
bufs = [ctypes.create_string_buffer(q, len(q)) for q in (query(0x4444, "mmsg.siemhub.test", 1),
                                                       query(0x4445, "mmsg.siemhub.test", 28))]
iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in bufs]
vec = (mmsghdr * 2)(*[mmsghdr(msghdr(None, 0, ctypes.pointer(iovs[i]), 1, None, 0, 0), 0) for i in range(2)])
libc = ctypes.CDLL(None, use_errno=True)
assert libc.sendmmsg(c4.fileno(), vec, 2, 0) == 2, ctypes.get_errno()

# write() and writev() on a connected socket: Go's resolver sends this way
w6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
w6.connect(("::1", 53))
os.write(w6.fileno(), query(0x7777, "write.siemhub.test", 1))
w4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
w4.connect((sink_ip, 53))
q = query(0x7778, "writev.siemhub.test", 28)
os.writev(w4.fileno(), [q[:12], q[12:]])
os.write(c4.fileno(), b"")  # not a query: the sensor reports the datagram as malformed
u4.sendto(query(0x5555, "notdns.siemhub.test", 1), ("127.0.0.1", 5353))
u4.sendto(query(0x6666, "last.siemhub.test", 1), ("127.0.0.1", 53))  # reported after the one above
print(u4.getsockname()[1], c4.getsockname()[1], sink_ip, flush=True)
"""


def _dns(agent, pid, count):
    """The dns_query events of pid, once there are `count` of them."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in agent.events() if e["type"] == "dns_query" and e["process"]["pid"] == pid]
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"{len(found)} of {count} dns_query events of {pid}"
            return found
        time.sleep(0.05)


def test_dns_queries_sendto_send_sendmsg_sendmmsg(net_agent):
    client = subprocess.Popen([sys.executable, "-c", DNS_CLIENT], stdout=subprocess.PIPE, text=True)
    u4_port, c4_port, sink_ip = client.stdout.readline().split()
    u4_port, c4_port = int(u4_port), int(c4_port)
    assert client.wait(10) == 0
    c_exec = _exec_of(net_agent, client.pid)
    events = _dns(net_agent, client.pid, 9)
    (empty,) = [e for e in events if "id" not in e["network"]["dns"]]
    assert empty["network"]["dns"]["flags"] == ["malformed"] and "dns_query" not in empty["network"]
    events.remove(empty)
    by_id = {e["network"]["dns"]["id"]: e for e in events}
    assert sorted(by_id) == [0x1111, 0x2222, 0x3333, 0x4444, 0x4445, 0x6666, 0x7777, 0x7778]  # not 0x5555
    assert len(events) == 8
    n = by_id[0x7777]["network"]
    assert (n["family"], n["destination_ip"], n["dns_query"], n["dns"]["type"]) == (
        "ipv6", "::1", "write.siemhub.test", "A")
    n = by_id[0x7778]["network"]  # only the first iovec (the header) is read
    assert (n["destination_ip"], n["dns"]["flags"]) == (sink_ip, ["truncated_name", "split_payload"])
    assert "dns_query" not in n
    for e in events:
        assert e["process"]["exec_id"] == c_exec["process"]["exec_id"]
        assert e["parent"]["exec_id"] == c_exec["parent"]["exec_id"]
        assert e["network"]["protocol"] == "udp" and e["network"]["direction"] == "outbound"
        assert e["network"]["destination_port"] == 53
        assert "flags" not in e["network"]["dns"] or e["network"]["dns"]["id"] == 0x7778

    n = by_id[0x1111]["network"]
    assert (n["family"], n["destination_ip"], n["dns_query"], n["dns"]["type"]) == (
        "ipv4", "127.0.0.1", "sendto.siemhub.test", "A")
    assert "source_port" not in n  # the unbound socket gets its port in this very send
    n = by_id[0x2222]["network"]
    assert (n["family"], n["destination_ip"], n["source_ip"], n["dns_query"], n["dns"]["type"]) == (
        "ipv6", "::1", "::1", "connected.siemhub.test", "AAAA")
    assert n["source_port"] > 0
    n = by_id[0x3333]["network"]
    assert (n["destination_ip"], n["dns_query"], n["dns"]["type"], n["source_port"]) == (
        "127.0.0.1", "sendmsg.siemhub.test", "TXT", u4_port)
    for qid, qtype in ((0x4444, "A"), (0x4445, "AAAA")):
        n = by_id[qid]["network"]
        assert (n["destination_ip"], n["dns_query"], n["dns"]["type"], n["source_port"], n["source_ip"]) == (
            sink_ip, "mmsg.siemhub.test", qtype, c4_port, "127.0.0.1")


RESOLVER = r"""
import socket, sys
try:
    socket.getaddrinfo(sys.argv[1], 80, type=socket.SOCK_STREAM)
except socket.gaierror as exc:
    print(exc.errno, flush=True)
"""

# A DNS server on a loopback address of its own (so it cannot collide with a resolver on 127.0.0.1:53)
# that answers every query with NXDOMAIN.
NXDOMAIN_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    q, peer = s.recvfrom(512)
    s.sendto(q[:2] + bytes([0x81, 0x83]) + q[4:6] + b"\0" * 6 + q[12:], peer)
"""


def test_getaddrinfo_through_glibc(net_agent, tmp_path):
    """The real resolver: glibc reads a resolv.conf naming our server (bind-mounted over /etc/resolv.conf in
    a private mount namespace, so the host is untouched) and sends A and AAAA queries."""
    server_ip = f"127.54.{(os.getpid() >> 8) & 255}.{os.getpid() & 255}"  # unique to this test run
    server = subprocess.Popen([sys.executable, "-c", NXDOMAIN_SERVER, server_ip], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        conf = tmp_path / "resolv.conf"
        conf.write_text(f"nameserver {server_ip}\noptions timeout:1 attempts:1\n")
        name = "resolver-e2e.siemhub.test"
        script = f'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" {name}'
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                 str(conf), sys.executable, RESOLVER], stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and out.strip() == str(socket.EAI_NONAME)
        r_exec = _exec_of(net_agent, proc.pid)  # unshare execs sh which execs python: one pid, last exec
        assert r_exec["process"]["binary"] == sys.executable
        events = _dns(net_agent, proc.pid, 2)
        assert {e["network"]["dns"]["type"] for e in events} == {"A", "AAAA"}
        for e in events:
            n = e["network"]
            assert n["dns_query"] == name and n["destination_ip"] == server_ip and n["destination_port"] == 53
            assert e["process"]["exec_id"] == r_exec["process"]["exec_id"]
            assert e["process"]["binary"] == r_exec["process"]["binary"]
    finally:
        server.kill()
        server.wait()


ONE_QUERY = r"""
import socket, struct, sys
host, qid = sys.argv[1], int(sys.argv[2])
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x06ignore\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(q, (host, 53))
"""


def test_dns_to_an_ignored_server_never_reaches_user_space(net_agent):
    sensor = next(s for s in net_agent.agent.sensors if s.name == "network")
    sensor.set_filters(["127.0.0.0/8"], [])
    try:
        before = sensor.filtered
        hidden = subprocess.run([sys.executable, "-c", ONE_QUERY, "127.0.0.1", "30001"], timeout=10)
        marker = subprocess.Popen([sys.executable, "-c", ONE_QUERY, "::1", "30002"])
        assert hidden.returncode == 0 and marker.wait(10) == 0
        (m,) = _dns(net_agent, marker.pid, 1)
        assert m["network"]["dns"]["id"] == 30002 and m["network"]["dns_query"] == "ignore"
        assert not [e for e in net_agent.events() if e["type"] == "dns_query" and e["network"]["dns"].get("id") == 30001]
        deadline = time.monotonic() + 3  # the counter is read from the kernel once a second
        while sensor.filtered == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sensor.filtered - before >= 1
    finally:
        sensor.set_filters([], [])
