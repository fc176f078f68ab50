#!/usr/bin/env python3
"""Agent memory with many live processes: RSS of `siemhub run` while N processes (default 50,000) that
it saw exec are alive, so all of them sit in its process cache.

The processes run a 1-page static program that only calls pause(2) (built here with gcc), so 50,000 of
them fit in a few GB. kernel.pid_max is raised for the run if needed and restored afterwards.
Run as root: `.venv/bin/python bench/cache_memory.py [--procs 50000]`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PAUSE_C = r"""
void _start(void) {
    for (;;)
        __asm__ volatile("mov $34, %%eax\n\tsyscall" ::: "rax", "rcx", "r11", "memory"); /* pause() */
}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=50_000)
    ap.add_argument("--port", type=int, default=19464)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-mem-"))
    (tmp / "pause.c").write_text(PAUSE_C)
    subprocess.run(["gcc", "-O2", "-nostdlib", "-static", "-o", str(tmp / "pause"), str(tmp / "pause.c")], check=True)
    cfg = tmp / "agent.yaml"
    cfg.write_text(
        "sensors:\n  process: {cache: {max_entries: %d}}\n"
        "exporters:\n  out: {type: file, path: %s, fsync: never}\n"
        "routes:\n  - {name: all, to: [out]}\nmetrics: {listen: 127.0.0.1:%d}\nstatus_interval: 0\n"
        % (max(65536, args.procs * 2), tmp / "events.jsonl", args.port))
    pid_max_path = Path("/proc/sys/kernel/pid_max")
    old_pid_max = int(pid_max_path.read_text())
    if old_pid_max < args.procs * 2:
        pid_max_path.write_text(str(max(args.procs * 2, 131072)))
    agent = subprocess.Popen([str(Path(sys.executable).with_name("siemhub")), "run", "-c", str(cfg),
                              "--log-level", "warning"])
    children: list[int] = []
    try:
        time.sleep(3)
        base = metric(args.port, "siemhub_process_cache_entries")
        rss0 = rss_mb(agent.pid)
        print(f"agent idle: RSS {rss0:.0f} MB, {base:.0f} processes in cache")
        t0 = time.monotonic()
        cpu0 = agent_cpu(agent.pid)
        for i in range(args.procs):
            # All in one process group (the first child leads it): one killpg ends them, whatever happens.
            group = children[0] if children else 0
            children.append(os.posix_spawn(str(tmp / "pause"), ["pause", str(i)], {}, setpgroup=group))
        spawn_s = time.monotonic() - t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            n = metric(args.port, "siemhub_process_cache_entries")
            if n >= base + args.procs:
                break
            time.sleep(1)
        time.sleep(2)
        n = metric(args.port, "siemhub_process_cache_entries")
        rss1 = rss_mb(agent.pid)
        cpu1 = agent_cpu(agent.pid)
        print(f"agent CPU while they started: {cpu1 - cpu0:.2f}s = {(cpu1 - cpu0) / args.procs * 1e6:.0f} us per exec")
        print(f"{args.procs} processes spawned in {spawn_s:.1f}s; cache holds {n:.0f} processes")
        print(f"agent RSS with them alive: {rss1:.0f} MB ({(rss1 - rss0) * 1024 / max(n - base, 1):.2f} KB "
              f"per cached process); target <= 120 MB")
    finally:
        if children:
            try:
                os.killpg(children[0], signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        pid_max_path.write_text(str(old_pid_max))
        subprocess.run(["rm", "-rf", str(tmp)])


if __name__ == "__main__":
    main()
