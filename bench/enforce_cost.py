#!/usr/bin/env python3
"""Enforce sensor benchmark: what the sigkill-beyond-file-paths programs cost a process they do not
kill (bpf_run_time_stats, bench/measure.py), with one rule of each form installed; the agent runs twice,
with the process sensor alone and with the enforce sensor too, and the difference per act is the enforce
sensor's (several programs share a tracepoint):
  exec     N execs of /bin/true (the exec program computes the image's identity)
  open     N opens of a file by this process (this python is not a forbidden binary: one lookup)
  connect  N connects to a local listener that no rule names (the tracepoint and the cgroup hook)
Starts `siemhub run` (process + enforce sensors -> file exporter) as a separate process.
Run as root: `.venv/bin/python bench/enforce_cost.py [--n 5000]`.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import bpf_run_time_stats, bpf_stats, clean_up, stop_agent, write_agent_config  # bench/measure.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-enforce-bench-"))
    (tmp / "forbidden").mkdir()
    (tmp / "vault").mkdir()
    (tmp / "pol").mkdir()
    (tmp / "pol" / "p.yaml").write_text(f"""
name: bench
rules:
  - match: {{types: [process_exec], binaries: ["{tmp}/forbidden/*"]}}
    action: sigkill
  - match: {{binaries: [cat], paths: ["{tmp}/vault/"]}}
    action: sigkill
  - match: {{types: [network_connect], cidrs: [169.254.169.254/32], ports: [80]}}
    action: sigkill
""")
    data = tmp / "data"
    data.write_text("x")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1024)
    siemhub = Path(sys.executable).with_name("siemhub")
    phases = {
        "exec": lambda: subprocess.run(["/bin/true"]),
        "open": lambda: os.close(os.open(data, os.O_RDONLY)),
        "connect": lambda: _connect(srv),
    }
    per_act: dict[str, dict[str, float]] = {}
    agent = None
    for label, sensors in (("process", "  process: {}"), ("process+enforce", "  process: {}\n  enforce: {}")):
        cfg, out = write_agent_config(tmp, sensors)
        cfg.write_text(cfg.read_text() + f'policies: {{library: false, paths: ["{tmp}/pol"]}}\n')
        with bpf_run_time_stats():
            agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and "sched_process_exec" not in bpf_stats(agent.pid):
                    time.sleep(0.5)
                time.sleep(2)
                for name, act in phases.items():
                    k0 = bpf_stats(agent.pid)
                    for _ in range(args.n):
                        act()
                    k1 = bpf_stats(agent.pid)
                    ns = sum(v[0] for v in k1.values()) - sum(v[0] for v in k0.values())
                    per_act.setdefault(name, {})[label] = ns / args.n
            finally:
                stop_agent(agent)
    print(f"enforce sensor, {args.n} acts per phase (a rule of each form installed, none matching the acts)")
    for name, v in per_act.items():
        print(f"{name:<8} in-kernel ns per act: process sensor {v['process']:.0f}, with the enforce sensor "
              f"{v['process+enforce']:.0f}: enforce adds {v['process+enforce'] - v['process']:.0f} ns")
    clean_up(tmp, agent)


def _connect(srv: socket.socket) -> None:
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    a.close()
    c.close()


if __name__ == "__main__":
    main()
