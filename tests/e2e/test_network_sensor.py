"""End-to-end: TCP connections between two real processes under a real agent (process + network sensors).

A server process and a client process (separate Python interpreters) exchange a known number of bytes;
both ends' events must name the right process (the exec_id of its process_exec), carry the 4-tuple,
and the closes must carry the byte counts and a duration."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.conftest import running_agent

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
  network: {poll_interval: 0.05, settle: 0.2}""")


def _exchange(host: str) -> tuple[subprocess.Popen, subprocess.Popen, int, int]:
    server = subprocess.Popen([sys.executable, "-c", SERVER, host], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    client = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port)], stdout=subprocess.PIPE, text=True)
    cport = int(client.stdout.readline())
    assert client.wait(10) == 0 and server.wait(10) == 0
    return server, client, port, cport


def _exec_of(agent, pid):
    return agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == pid,
                          what=f"exec of {pid}")[-1]


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
