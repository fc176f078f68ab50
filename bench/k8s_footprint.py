"""The agent's footprint as the Kubernetes DaemonSet runs it (all four sensors), for its requests and
limits (deploy/kubernetes/base/daemonset.yaml) and its startup probe: time and CPU until /readyz,
resident memory, CPU while idle, and CPU per exec during an exec storm as a share of the workload's CPU.

    sudo .venv/bin/python bench/k8s_footprint.py [--idle 10] [--execs 5000]

Prints one line per figure (and a Markdown table with --markdown). Root and eBPF required.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from measure import proc_cpu  # noqa: E402 - bench/ is on the path when run as a script

REPO = Path(__file__).resolve().parents[1]
SIEMHUB = Path(sys.executable).with_name("siemhub")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    ap.add_argument("--execs", type=int, default=5000, help="execs of /bin/true in the storm")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("k8s_footprint: run as root (eBPF)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-footprint-"))
    port = _free_port()
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
sensors:
  process: {{}}
  file: {{}}
  network: {{}}
  privilege: {{}}
exporters:
  out: {{type: file, path: "{tmp}/events.jsonl", format: native, fsync: never}}
routes: [{{name: all, to: [out]}}]
metrics: {{listen: "127.0.0.1:{port}"}}
status_interval: 0
""")
    print(f"k8s_footprint: starting the agent (4 sensors), config {cfg}", file=sys.stderr)
    t0 = time.monotonic()
    agent = subprocess.Popen([str(SIEMHUB), "run", "-c", str(cfg), "--log-level", "warning"],
                             stdout=subprocess.DEVNULL, stderr=open(tmp / "agent.log", "wb"))
    out: dict[str, float] = {}
    try:
        while not _ready(port):
            if agent.poll() is not None or time.monotonic() - t0 > 300:
                print((tmp / "agent.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.05)
        out["ready_seconds"] = time.monotonic() - t0
        out["startup_cpu_seconds"] = proc_cpu(agent.pid)
        print(f"k8s_footprint: ready after {out['ready_seconds']:.1f} s; idle for {args.idle:.0f} s", file=sys.stderr)
        c0 = proc_cpu(agent.pid)
        time.sleep(args.idle)
        out["idle_cpu_percent"] = 100 * (proc_cpu(agent.pid) - c0) / args.idle
        out["rss_mib"], _ = _rss_mib(agent.pid)
        print(f"k8s_footprint: exec storm of {args.execs}", file=sys.stderr)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0, w0 = proc_cpu(agent.pid), time.monotonic()
        storm = subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {args.execs} ]; do /bin/true; i=$((i+1)); done"],
                               check=True)
        del storm
        wall = time.monotonic() - w0
        time.sleep(1.5)  # the agent reads what the storm left in its ring buffers
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        agent_cpu = proc_cpu(agent.pid) - c0
        work_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        out["storm_execs_per_second"] = args.execs / wall
        out["storm_agent_cpu_percent_of_a_core"] = 100 * agent_cpu / wall
        out["agent_cpu_us_per_exec"] = 1e6 * agent_cpu / args.execs
        out["agent_cpu_vs_workload_cpu_percent"] = 100 * agent_cpu / work_cpu if work_cpu else float("nan")
        out["rss_after_storm_mib"], out["peak_rss_mib"] = _rss_mib(agent.pid)
    finally:
        agent.terminate()
        agent.wait(60)
    if args.markdown:
        print("| figure | value |\n|---|---|")
        for k, v in out.items():
            print(f"| {k} | {v:.2f} |")
    else:
        print(json.dumps({k: round(v, 2) for k, v in out.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
