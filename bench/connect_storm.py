#!/usr/bin/env python3
"""Connect storm benchmark: network events delivered vs expected, agent CPU per event, in-kernel cost.

Starts `siemhub run` (process + network sensors -> file exporter) as a separate process, then makes N
TCP connections over loopback from a client process to a listener process (each: connect, send 100
bytes, close; the listener accepts, reads to EOF, closes). Expected: N network_connect + N
network_accept + 2N network_close (both ends). Measures:
  - events delivered vs expected (counted by the listener's port in the output file),
  - agent user+system CPU (/proc/<pid>/stat) per network event,
  - in-kernel run time per program run (bpf_run_time_stats in bench/measure.py; ids mapped via bpftool perf show),
  - the workload's own CPU (client + listener), and agent + BPF as a share of it.
The agent and the listener run in one process group, killed in a finally.
Run as root: `.venv/bin/python bench/connect_storm.py [--connects 10000]`.
"""

from __future__ import annotations

import argparse
import contextlib
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

PROGRAMS = ("inet_sock_set_state", "sys_exit_accept4", "sys_exit_accept", "sys_enter_sendto")  # sendto: the DNS check


def listener(sock: socket.socket) -> None:
    while True:
        c, _ = sock.accept()
        while c.recv(4096):
            pass
        c.close()


def count(path: Path, port: int) -> dict[str, int]:
    needle = f'"destination_port":{port}'.encode()
    got = {"network_connect": 0, "network_accept": 0, "network_close": 0}
    with open(path, "rb") as f:
        for line in f:
            if needle in line:
                for t in got:
                    if f'"type":"{t}"'.encode() in line:
                        got[t] += 1
                        break
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connects", type=int, default=10000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    n = args.connects
    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-connect-bench-"))
    cfg, out = write_agent_config(tmp, '  process: {}\n  network: {}')
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    port = srv.getsockname()[1]
    stats = contextlib.ExitStack()  # BPF run-time statistics on until the finally below
    stats.enter_context(bpf_run_time_stats())
    server_pid = os.fork()
    if server_pid == 0:
        try:
            listener(srv)
        finally:
            os._exit(0)
    os.setpgid(server_pid, server_pid)  # the listener leads the group; the agent joins it
    pgid = server_pid
    srv.close()
    agent = None
    try:
        agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                                 stderr=subprocess.PIPE, text=True, process_group=pgid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready when a probe connection is reported
            with socket.create_connection(("127.0.0.1", port)):
                pass
            if out.exists() and count(out, port)["network_close"] >= 2:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("agent did not start")
        time.sleep(1.0)
        base = count(out, port)

        cpu0, k0 = proc_cpu(agent.pid), bpf_stats(agent.pid)
        srv_cpu0 = proc_cpu(server_pid)
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        payload = b"x" * 100
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(payload)
        wall = time.monotonic() - t0
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        expected = {"network_connect": n, "network_accept": n, "network_close": 2 * n}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = {k: v - base[k] for k, v in count(out, port).items()}
            if all(got[k] >= expected[k] for k in expected):
                break
            time.sleep(0.5)
        cpu1, k1 = proc_cpu(agent.pid), bpf_stats(agent.pid)
        srv_cpu1 = proc_cpu(server_pid)
    finally:
        try:
            os.killpg(pgid, signal.SIGTERM)
            if agent is not None:
                agent.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(pgid, signal.SIGKILL)
        try:
            os.waitpid(server_pid, 0)
        except ChildProcessError:
            pass
        stats.close()

    client_cpu = (me1.ru_utime - me0.ru_utime) + (me1.ru_stime - me0.ru_stime)
    work_cpu = client_cpu + (srv_cpu1 - srv_cpu0)
    agent_cpu = cpu1 - cpu0
    events = sum(got.values())
    print(f"connect storm: {n} TCP connections over loopback in {wall:.1f}s ({n / wall:.0f} connects/s)")
    print("events delivered / expected: " + ", ".join(f"{k} {got[k]}/{expected[k]}" for k in expected)
          + f"; lost {sum(expected.values()) - events}")
    print(f"workload CPU (client + listener): {work_cpu:.2f}s")
    print(f"agent user-space CPU: {agent_cpu:.2f}s = {agent_cpu / max(events, 1) * 1e6:.1f} us per network event")
    kernel_ns = 0
    for p in PROGRAMS:
        rt = k1.get(p, (0, 0))[0] - k0.get(p, (0, 0))[0]
        rc = k1.get(p, (0, 0))[1] - k0.get(p, (0, 0))[1]
        kernel_ns += rt
        print(f"kernel {p}: {rc} runs, {rt / max(rc, 1) / 1000:.2f} us per run")
    print(f"kernel total per connection (both ends): {kernel_ns / max(n, 1) / 1000:.2f} us")
    total = agent_cpu + kernel_ns / 1e9
    print(f"overhead: agent+BPF CPU {total:.2f}s = {100 * total / max(work_cpu, 1e-9):.1f}% of the workload's CPU")
    clean_up(tmp, agent)


if __name__ == "__main__":
    main()
