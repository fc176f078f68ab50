#!/usr/bin/env python3
"""File storm benchmark: the file sensor's cost on a file-heavy workload of unwatched paths, in one run.

Starts `siemhub run` with the file sensor only (default watch list plus a watched temporary directory),
then runs two workloads written in C (so the workload's CPU is syscalls, not an interpreter):
  - existing: open + read 64 bytes + close, 1,000,000 times over 10,000 unwatched files in 100 dirs
    (each open is resolved by file: dentry walk + watch-trie lookup);
  - missing: openat of 1,000,000 distinct nonexistent names (each failed open is resolved by name).
Each workload runs first without the agent (baseline) and then with it. It reports events that reached
user space for unwatched paths (target 0), in-kernel run time per program run (kernel.bpf_stats_enabled,
bpftool), the agent's CPU, the overhead as a share of the workload's CPU (target <= 3%), the slowdown
against the baseline (this includes the syscall-tracepoint machinery itself), and the detection rate of
writes to watched files (target 100%). Run as root: `.venv/bin/python bench/file_storm.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import bpf_stats, proc_cpu  # bench/measure.py


WORKLOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *mode = argv[1], *root = argv[2];
    long n = atol(argv[3]);
    char path[512], buf[64];
    for (long i = 0; i < n; i++) {
        if (mode[0] == 'e') {   /* existing: 100 dirs x 100 files */
            snprintf(path, sizeof path, "%s/d%ld/f%ld", root, (i / 100) % 100, i % 100);
            int fd = open(path, O_RDONLY);
            if (fd < 0) { perror(path); return 1; }
            if (read(fd, buf, sizeof buf) < 0) return 1;
            close(fd);
        } else {                /* missing: distinct names that do not exist */
            snprintf(path, sizeof path, "%s/d%ld/missing-%ld", root, i % 100, i);
            int fd = open(path, O_RDONLY);
            if (fd >= 0) close(fd);
        }
    }
    return 0;
}
"""


def run_workload(exe: str, mode: str, root: Path, n: int) -> float:
    """CPU seconds (user + system) of one workload process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([exe, mode, str(root), str(n)], start_new_session=True)
    try:
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"workload {mode} failed")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def count(path: Path, *needles: str) -> int:
    if not path.exists():
        return 0
    bs = [n.encode() for n in needles]
    with open(path, "rb") as f:
        return sum(1 for line in f if b'"type":"file_access"' in line and all(b in line for b in bs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opens", type=int, default=1_000_000)
    ap.add_argument("--writes", type=int, default=1000, help="writes to watched files (detection rate)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-filestorm-"))
    tree, watched = tmp / "tree", tmp / "watched"
    watched.mkdir()
    for d in range(100):
        (tree / f"d{d}").mkdir(parents=True)
        for f in range(100):
            (tree / f"d{d}" / f"f{f}").write_bytes(b"x" * 64)
    (tmp / "w.c").write_text(WORKLOAD_C)
    exe = str(tmp / "w")
    subprocess.run(["gcc", "-O2", "-o", exe, str(tmp / "w.c")], check=True)
    out = tmp / "events.jsonl"
    cfg = tmp / "bench.yaml"
    default_watch = __import__("siemhub.collector.config", fromlist=["DEFAULT_FILE_WATCH"]).DEFAULT_FILE_WATCH
    cfg.write_text(
        "sensors:\n  file:\n    watch: " + json.dumps([*default_watch, f"{watched}/"]) + "\n"
        f"exporters:\n  out: {{type: file, path: {out}, format: native, fsync: never}}\n"
        "routes:\n  - {name: all, to: [out]}\nmetrics: {enabled: false}\nstatus_interval: 0\n"
    )
    n = args.opens
    for m in ("existing", "missing"):  # warm the dentry cache (negative entries too): runs compare alike
        run_workload(exe, m, tree, n)
    base = {m: run_workload(exe, m, tree, n) for m in ("existing", "missing")}
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    results = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready when a watched write shows up
            (watched / "probe").write_text("x")
            if count(out, "/probe\"") >= 1:
                break
            time.sleep(0.3)
        else:
            raise SystemExit("agent did not start")
        time.sleep(0.5)
        for mode in ("existing", "missing"):
            # (again: another benchmark finishing meanwhile may have switched the statistics off)
            subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
            cpu0, k0 = proc_cpu(agent.pid), bpf_stats(agent.pid)
            work = run_workload(exe, mode, tree, n)
            time.sleep(1.0)
            cpu1, k1 = proc_cpu(agent.pid), bpf_stats(agent.pid)
            kern = {p: (k1[p][0] - k0.get(p, (0, 0))[0], k1[p][1] - k0.get(p, (0, 0))[1]) for p in k1}
            results[mode] = (work, cpu1 - cpu0, kern)
        # detection: open for writing + write + close of watched files
        for i in range(args.writes):
            with open(watched / f"target-{i}", "w") as f:
                f.write("data\n")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            opens = count(out, '"operation":"open"', "/target-")
            writes = count(out, '"operation":"write"', "/target-")
            if opens >= args.writes and writes >= args.writes:
                break
            time.sleep(0.3)
        unwatched = count(out, str(tree))
    finally:
        os.killpg(agent.pid, signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=False)

    print(f"file storm: {n} unwatched opens per workload; watch list: {len(default_watch) + 1} paths")
    print(f"events for unwatched paths that reached user space: {unwatched} (target 0)")
    for mode, (work, agent_cpu, kern) in results.items():
        kernel_ns = sum(rt for rt, _ in kern.values())
        busy = {p: v for p, v in kern.items() if v[1]}
        print(f"\n[{mode}] workload CPU {work:.2f}s with the sensor, {base[mode]:.2f}s without "
              f"(slowdown {100 * (work / base[mode] - 1):+.1f}%, includes the tracepoint machinery)")
        for p, (rt, rc) in sorted(busy.items(), key=lambda x: -x[1][0]):
            print(f"  kernel {p}: {rc} runs, {rt / max(rc, 1):.0f} ns per run")
        print(f"  BPF CPU {kernel_ns / 1e9:.3f}s = {kernel_ns / n:.0f} ns per open; agent CPU {agent_cpu:.2f}s")
        print(f"  overhead (BPF + agent) = {100 * (kernel_ns / 1e9 + agent_cpu) / work:.1f}% of the workload's CPU")
    print(f"\nwatched writes: {args.writes} files opened for writing and written: {opens} open events, "
          f"{writes} write events -> detection {100 * opens / args.writes:.1f}% (opens), "
          f"{100 * writes / args.writes:.1f}% (writes)")
    shutil.rmtree(tmp, ignore_errors=True)
    err = agent.stderr.read() if agent.stderr else ""
    if err.strip():
        print("agent stderr (tail):", *err.strip().splitlines()[-3:], sep="\n  ")


if __name__ == "__main__":
    main()
