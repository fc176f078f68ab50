#!/usr/bin/env python3
"""DNS query benchmark: what the network sensor's send-path programs cost on UDP that is not DNS, on
TCP sends, and on DNS queries, and whether every query is delivered.

Starts `siemhub run` (process + network sensors -> file exporter) as a separate process, then, from this
process, in phases of N sends each (one agent run, phases side by side):
  udp_sendto_other   sendto() to 127.53.0.1:5353, an unconnected UDP socket (rejected on the sockaddr's port)
  udp_send_other     send() on a UDP socket connected to 127.53.0.1:5353 (rejected after the fd walk)
  tcp_send           send() of 100 bytes on a connected TCP socket (rejected after the fd walk: not UDP)
  file_write         write() of 100 bytes to /dev/null (rejected by one hash lookup)
  dns_sendto         sendto() of an A query to 127.53.0.1:53: reported
  dns_sendmmsg       sendmmsg() of an A and an AAAA query on a connected socket (N/2 calls): reported
  dns_write          write() of an A query on a connected socket (as Go's resolver): reported
Non-reading sinks are bound on 127.53.0.1, so no ICMP errors are generated. For each phase: the
workload's own CPU per send (this process), in-kernel run time per program run (bpf_run_time_stats, bench/measure.py)
and, for the DNS phases, events delivered vs expected and the agent's user-space CPU per event.
Run as root: `.venv/bin/python bench/dns_storm.py [--sends 20000]`.

Measured (three runs, 2-vCPU VM shared with other sessions, kernel 6.18; docs/sensors/network.md): in the
kernel per send 0.17-0.19 us (UDP sendto to another port), 0.32-0.33 us (connected UDP, another port),
0.28-0.29 us (TCP send), 0.08-0.11 us (write to a file), 0.86-1.21 us (a DNS query by sendto), 0.79-0.97 us
(by write), 1.70-2.02 us per sendmmsg of two; 20,000/20,000 queries delivered in every DNS phase;
agent 7-12 us of user-space CPU per dns_query event.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import bpf_run_time_stats, bpf_stats, clean_up, proc_cpu, write_agent_config  # bench/measure.py

PROGRAMS = ("sys_enter_sendto", "sys_enter_sendmsg", "sys_enter_sendmmsg", "sys_enter_write", "sys_enter_writev",
            "sys_enter_connect")
SINK = "127.53.0.1"


def query(qid: int, name: bytes, qtype: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in name.split(b"."))
    return struct.pack(">6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", qtype, 1)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint), ("iov", ctypes.POINTER(_Iovec)),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def count(path: Path, marker: bytes) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if b'"type":"dns_query"' in line and marker in line:
                n += 1
    return n


def cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sends", type=int, default=20000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    n = args.sends - args.sends % 2
    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-dns-bench-"))
    cfg, out = write_agent_config(tmp, '  process: {}\n  network: {}')
    sinks = []
    for port, kind in ((53, socket.SOCK_DGRAM), (5353, socket.SOCK_DGRAM)):
        s = socket.socket(socket.AF_INET, kind)
        s.bind((SINK, port))
        sinks.append(s)
    tcp_srv = socket.socket()
    tcp_srv.bind((SINK, 0))
    tcp_srv.listen(1)
    stats = contextlib.ExitStack()  # BPF run-time statistics on until the finally below
    stats.enter_context(bpf_run_time_stats())
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    results = []
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready when a probe query is reported
            probe.sendto(query(1, b"probe.bench.test", 1), (SINK, 53))
            if out.exists() and count(out, b"probe.bench.test"):
                break
            time.sleep(0.5)
        else:
            raise SystemExit("agent did not start")
        time.sleep(1.0)

        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uc.connect((SINK, 5353))
        tc = socket.create_connection(tcp_srv.getsockname())
        peer, _ = tcp_srv.accept()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        dc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dc.connect((SINK, 53))
        q_other = query(2, b"other.bench.test", 1)
        q_sendto = query(3, b"sendto.bench.test", 1)
        libc = ctypes.CDLL(None, use_errno=True)
        bufs = [ctypes.create_string_buffer(q, len(q)) for q in (query(4, b"mmsg.bench.test", 1),
                                                                query(5, b"mmsg.bench.test", 28))]
        iovs = [_Iovec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in bufs]
        vec = (_Mmsghdr * 2)(*[_Mmsghdr(_Msghdr(None, 0, ctypes.pointer(iovs[i]), 1, None, 0, 0), 0)
                               for i in range(2)])
        data = b"x" * 100
        null = os.open("/dev/null", os.O_WRONLY)
        dw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dw.connect((SINK, 53))  # after the agent started: sys_enter_connect remembers it
        q_write = query(6, b"write.bench.test", 1)

        def drain_tcp():
            peer.setblocking(False)
            try:
                while peer.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass

        phases = [
            ("udp_sendto_other", n, lambda: u.sendto(q_other, (SINK, 5353)), None),
            ("udp_send_other", n, lambda: uc.send(q_other), None),
            ("tcp_send", n, lambda: tc.send(data), None),
            ("dns_sendto", n, lambda: u.sendto(q_sendto, (SINK, 53)), (b"sendto.bench.test", n)),
            ("file_write", n, lambda: os.write(null, data), None),
            ("dns_sendmmsg", n // 2, lambda: libc.sendmmsg(dc.fileno(), vec, 2, 0), (b"mmsg.bench.test", n)),
            ("dns_write", n, lambda: os.write(dw.fileno(), q_write), (b"write.bench.test", n)),
        ]
        for name, calls, send, expect in phases:
            a0, k0, w0 = proc_cpu(agent.pid), bpf_stats(agent.pid), cpu_self()
            for i in range(calls):
                send()
                if name == "tcp_send" and i % 1000 == 999:
                    drain_tcp()
            w1 = cpu_self()
            delivered = None
            if expect is not None:
                marker, want = expect
                deadline = time.monotonic() + 30
                while (delivered := count(out, marker)) < want and time.monotonic() < deadline:
                    time.sleep(0.5)
            else:
                time.sleep(1.0)  # anything the agent does for these (nothing is expected) shows in its CPU
            a1, k1 = proc_cpu(agent.pid), bpf_stats(agent.pid)
            runs = {p: (k1.get(p, (0, 0))[0] - k0.get(p, (0, 0))[0], k1.get(p, (0, 0))[1] - k0.get(p, (0, 0))[1])
                    for p in PROGRAMS}
            results.append((name, calls, w1 - w0, a1 - a0, runs, delivered, expect[1] if expect else None))
    finally:
        try:
            os.killpg(agent.pid, signal.SIGTERM)
            agent.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(agent.pid, signal.SIGKILL)
        stats.close()

    print(f"DNS storm: {n} sends per phase (the machine may be shared: CPU times, not rates, are the figures)")
    for name, calls, work, agent_cpu, runs, delivered, want in results:
        ns = sum(rt for rt, _ in runs.values())
        rc = sum(c for _, c in runs.values())
        line = (f"{name:<17} workload {work / calls * 1e6:6.2f} us/call; kernel {rc} runs, "
                f"{ns / max(rc, 1) / 1000:.2f} us/run = {100 * ns / 1e9 / max(work, 1e-9):.1f}% of the workload's CPU")
        if want is not None:
            line += (f"; delivered {delivered}/{want}; agent {agent_cpu / max(delivered, 1) * 1e6:.1f} us/event, "
                     f"agent+BPF {100 * (agent_cpu + ns / 1e9) / max(work, 1e-9):.0f}% of the workload's CPU")
        print(line)
    clean_up(tmp, agent)


if __name__ == "__main__":
    main()
