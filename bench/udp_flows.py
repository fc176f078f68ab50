#!/usr/bin/env python3
"""UDP flow benchmark: what counting UDP flows in the kernel costs per datagram, and that a flow of N
datagrams gives one event with N counted (not N ring-buffer messages).

Starts `siemhub run` (process + network sensors -> file exporter) as a separate process, then, from this
process, in phases of N datagrams each (one agent run, phases side by side), each on a fresh socket
closed at the end of the phase (its flow is then reported):
  sendto      sendto() of 100 bytes to 127.54.0.1:5514 on an unconnected socket
  send        send() on a connected socket
  write       write() on a connected socket
  sendmmsg    sendmmsg() of 8 datagrams per call (N/8 calls)
  recvfrom    sendto() to our own socket, then recvfrom() it (both ends are flows: 2 per datagram)
  read        send() then read() on a pair of connected sockets
  tcp_send    send() of 100 bytes on a TCP connection (sock_send_length runs and rejects it: TCP's cost)
For each phase: in-kernel run time of the programs that count flows (sock_send_length, sock_recv_length,
the receive exits, sys_enter_close) per datagram and per program run (bpf_run_time_stats), the
workload's own CPU per datagram, and the flow events delivered with their datagram counts.
Run as root: `.venv/bin/python bench/udp_flows.py [--datagrams 20000]`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import bpf_run_time_stats, bpf_stats, clean_up, proc_cpu, write_agent_config  # bench/measure.py

PROGRAMS = ("sock_send_length", "sock_recv_length", "sys_exit_recvfrom", "sys_exit_recvmsg", "sys_exit_recvmmsg",
            "sys_enter_close", "sys_enter_sendto", "sys_enter_sendmmsg", "sys_enter_write")
SINK = "127.54.0.1"


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def flows(path: Path, port: int) -> list[dict]:
    """Final network_flow events of this process whose peer or local port is `port`."""
    out = []
    if not path.exists():
        return out
    with open(path, "rb") as f:
        for line in f:
            if b'"network_flow"' in line and b'"flow_end"' in line:
                e = json.loads(line)
                n = e["network"]
                if e["process"]["pid"] == os.getpid() and port in (n.get("destination_port"), n.get("source_port")):
                    out.append(n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datagrams", type=int, default=20000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    n = args.datagrams - args.datagrams % 8
    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-udp-bench-"))
    cfg, out = write_agent_config(tmp, "  process: {}\n  network: {}")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never read: the kernel drops what overflows
    sink.bind((SINK, 5514))
    tcp_srv = socket.socket()
    tcp_srv.bind((SINK, 0))
    tcp_srv.listen(1)
    libc = ctypes.CDLL(None, use_errno=True)
    data = b"x" * 100
    stats = contextlib.ExitStack()
    stats.enter_context(bpf_run_time_stats())
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    results = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready when a probe flow is reported
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.sendto(b"probe", (SINK, 5514))
            if flows(out, 5514):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("agent did not start")
        time.sleep(1.0)

        def phase_sendto():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for _ in range(n):
                s.sendto(data, (SINK, 5514))
            return s, n

        def phase_send(write=False):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((SINK, 5514))
            fd = s.fileno()
            for _ in range(n):
                os.write(fd, data) if write else s.send(data)
            return s, n

        def phase_sendmmsg():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((SINK, 5514))
            buf = ctypes.create_string_buffer(data, len(data))
            iov = _Iovec(ctypes.cast(buf, ctypes.c_void_p), len(data))
            vec = (_Mmsghdr * 8)(*[_Mmsghdr(_Msghdr(None, 0, ctypes.pointer(iov), 1, None, 0, 0), 0) for _ in range(8)])
            for _ in range(n // 8):
                libc.sendmmsg(s.fileno(), vec, 8, 0)
            return s, n

        def phase_recv(read=False):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind((SINK, 0))
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b.bind((SINK, 0))
            if read:
                a.connect(b.getsockname())
                b.connect(a.getsockname())
            dst, fd = b.getsockname(), b.fileno()
            for _ in range(n):
                a.sendto(data, dst) if not read else a.send(data)
                os.read(fd, 2048) if read else b.recvfrom(2048)
            a.close()
            return b, 2 * n

        def phase_tcp():
            c = socket.create_connection(tcp_srv.getsockname())
            peer, _ = tcp_srv.accept()
            peer.setblocking(False)
            for i in range(n):
                c.send(data)
                if i % 1000 == 999:
                    with contextlib.suppress(BlockingIOError):
                        while peer.recv(1 << 20):
                            pass
            peer.close()
            return c, n

        phases = [("sendto", phase_sendto), ("send", phase_send), ("write", lambda: phase_send(True)),
                  ("sendmmsg", phase_sendmmsg), ("recvfrom", phase_recv), ("read", lambda: phase_recv(True)),
                  ("tcp_send", phase_tcp)]
        for name, run in phases:
            before = len(flows(out, 5514)) if name not in ("recvfrom", "read", "tcp_send") else None
            k0, w0, a0 = bpf_stats(agent.pid), cpu_self(), proc_cpu(agent.pid)
            sock, datagrams = run()
            port = sock.getsockname()[1]
            sock.close()
            w1 = cpu_self()
            k1 = bpf_stats(agent.pid)
            got = []
            if name != "tcp_send":
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    got = flows(out, port) if before is None else flows(out, 5514)[before:]
                    if got:
                        break
                    time.sleep(0.3)
            a1 = proc_cpu(agent.pid)
            runs = {p: (k1.get(p, (0, 0))[0] - k0.get(p, (0, 0))[0], k1.get(p, (0, 0))[1] - k0.get(p, (0, 0))[1])
                    for p in PROGRAMS}
            results.append((name, datagrams, w1 - w0, a1 - a0, runs, got))
    finally:
        try:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(agent.pid, signal.SIGKILL)
        stats.close()

    print(f"UDP flows: {n} datagrams per phase (the machine may be shared: CPU times, not rates, are the figures)")
    for name, datagrams, work, agent_cpu, runs, got in results:
        flow_ns = sum(runs[p][0] for p in ("sock_send_length", "sock_recv_length", "sys_exit_recvfrom",
                                            "sys_exit_recvmsg", "sys_exit_recvmmsg", "sys_enter_close"))
        per = "; ".join(f"{p} {rt / max(rc, 1):.0f} ns/run x{rc}" for p, (rt, rc) in runs.items()
                        if rc and p in ("sock_send_length", "sock_recv_length", "sys_exit_recvfrom"))
        counted = sum(f.get("datagrams_sent", 0) + f.get("datagrams_received", 0) for f in got)
        line = (f"{name:<9} flow programs {flow_ns / datagrams:6.0f} ns/datagram ({per}); workload "
                f"{work / datagrams * 1e6:.2f} us/datagram = flow programs {100 * flow_ns / 1e9 / max(work, 1e-9):.1f}% "
                f"of it; agent {agent_cpu * 1e3:.1f} ms")
        if name != "tcp_send":
            line += f"; {len(got)} flow event(s) counting {counted} datagrams"
        print(line)
    clean_up(tmp, agent)


if __name__ == "__main__":
    main()
