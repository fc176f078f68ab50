#!/usr/bin/env python3
"""Exec storm benchmark: agent CPU per event and in-kernel cost per BPF program run, in one run.

Starts `siemhub run` (process sensor -> file exporter, the default delivery path) as a separate process,
then runs N execs of /bin/true, once per workload, and measures for each:
  - agent user+system CPU (from /proc/<pid>/stat) per exec event and per event (exec + exit),
  - in-kernel run time per program run (bpf_run_time_stats in bench/measure.py, bpftool prog show),
  - the workload's own CPU time (parent + children), and the agent's overhead as a share of it,
  - events lost: every exec must arrive in the output file (counted by a marker argument).
Workloads (both by default, one agent, one run):
  - fork: the issue's "loop of fork+exec of /bin/true", literally: a C loop of fork(), execv(), waitpid();
  - spawn: Python's os.posix_spawn (vfork + exec), a cheaper parent, so the agent's share comes out higher.
Run as root: `make bench` or `.venv/bin/python bench/exec_storm.py [--execs 20000] [--workload fork]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import bpf_run_time_stats, bpf_stats, clean_up, proc_cpu, proc_cpu_split, write_agent_config  # bench/measure.py

PROGRAMS = ("sched_process_exec", "sched_process_fork", "sched_process_exit")


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """(user, system) CPU seconds per thread of pid."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[int(tid)] = proc_cpu_split(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            pass
    return out


TINY_TRUE_C = r"""
void _start(void) { __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall"); } /* exit(0) */
"""


FORK_LOOP_C = r"""
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {   /* STORM_MARKER=marker fork_loop N BINARY */
    long n = atol(argv[1]);
    char *args[] = {argv[2], getenv("STORM_MARKER"), NULL};  /* not in our own argv: only children carry it */
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) { execv(argv[2], args); _exit(127); }
        int st;
        if (p < 0 || waitpid(p, &st, 0) < 0) return 1;
    }
    return 0;
}
"""


def _spawn_loop(binary: str, n: int, marker: str) -> None:
    for _ in range(n):
        pid = os.posix_spawn(binary, [binary, marker], {})
        os.waitpid(pid, 0)


def workload(kind: str, n: int, marker: str, binary: str, workers: int, fork_loop: str) -> float:
    """exec `binary` n times from `workers` processes; returns the CPU seconds of the loops and their
    children (the workload's own CPU)."""
    before_self = resource.getrusage(resource.RUSAGE_SELF)
    before_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    shares = [n // workers + (1 if w < n % workers else 0) for w in range(workers)]
    if kind == "fork":
        env = dict(os.environ, STORM_MARKER=marker)
        loops = [subprocess.Popen([fork_loop, str(k), binary], env=env) for k in shares]
        if any(p.wait() != 0 for p in loops):
            raise SystemExit("fork loop failed")
    elif workers == 1:
        _spawn_loop(binary, n, marker)
    else:
        pids = []
        for k in shares:
            pid = os.fork()
            if pid == 0:
                try:
                    _spawn_loop(binary, k, marker)
                finally:
                    os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
    after_self = resource.getrusage(resource.RUSAGE_SELF)
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(getattr(a, f) - getattr(b, f) for a, b in ((after_self, before_self), (after_kids, before_kids))
               for f in ("ru_utime", "ru_stime"))


def count_types(path: Path, start: int) -> tuple[int, int]:
    """process_exec and process_exit events written from byte `start` on (everyone's, not only ours:
    the agent's CPU is divided by all it handled)."""
    execs = exits = 0
    with open(path, "rb") as f:
        f.seek(start)
        for line in f:
            if b'"type":"process_exec"' in line:
                execs += 1
            elif b'"type":"process_exit"' in line:
                exits += 1
    return execs, exits


def count_marker(path: Path, marker: str) -> tuple[int, int]:
    execs = exits = 0
    needle = f'"{marker}"'.encode()
    with open(path, "rb") as f:
        for line in f:
            if needle in line:
                if b'"type":"process_exec"' in line:
                    execs += 1
                elif b'"type":"process_exit"' in line:
                    exits += 1
    return execs, exits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1, help="parallel spawning processes")
    ap.add_argument("--workload", choices=["fork", "spawn", "both"], default="both")
    ap.add_argument("--process-config", default="", metavar="YAML",
                    help='settings of sensors.process, e.g. "poll_interval: 0.1, wakeup_every: 256" (to compare)')
    ap.add_argument("--tiny", action="store_true",
                    help="exec a 1-page static exit(0) program instead of /bin/true (reaches higher rates)")
    ap.add_argument("--json", help="also write the figures to this file (make bench)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")

    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-bench-"))
    cfg, out = write_agent_config(tmp, f"  process: {{{args.process_config}}}")
    binary = "/bin/true"
    if args.tiny:
        (tmp / "true.c").write_text(TINY_TRUE_C)
        binary = str(tmp / "true")
        subprocess.run(["gcc", "-O2", "-nostdlib", "-static", "-o", binary, str(tmp / "true.c")], check=True)
    fork_loop = str(tmp / "fork_loop")
    (tmp / "fork_loop.c").write_text(FORK_LOOP_C)
    subprocess.run(["gcc", "-O2", "-o", fork_loop, str(tmp / "fork_loop.c")], check=True)
    kinds = ["fork", "spawn"] if args.workload == "both" else [args.workload]
    stats = contextlib.ExitStack()  # BPF run-time statistics on until the finally below
    stats.enter_context(bpf_run_time_stats())
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                             stderr=subprocess.PIPE, text=True)
    try:
        # Ready when a probe exec shows up in the output.
        probe = f"probe-{os.getpid()}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            subprocess.run(["/bin/true", probe])
            if out.exists() and count_marker(out, probe)[0]:
                break
            time.sleep(0.3)
        else:
            raise SystemExit("agent did not start")
        time.sleep(1.0)

        results = []
        for kind in kinds:
            marker = f"storm-{kind}-{os.getpid()}"
            start = out.stat().st_size
            cpu0, k0, t0 = proc_cpu(agent.pid), bpf_stats(agent.pid), time.monotonic()
            th0 = thread_cpu(agent.pid)
            work_cpu = workload(kind, args.execs, marker, binary, args.workers, fork_loop)
            wall = time.monotonic() - t0
            # Wait until every exec and exit has been written (or a timeout: then they count as lost).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                execs, exits = count_marker(out, marker)
                if execs >= args.execs and exits >= args.execs:
                    break
                time.sleep(0.5)
            cpu1, k1 = proc_cpu(agent.pid), bpf_stats(agent.pid)
            th1 = thread_cpu(agent.pid)
            all_execs, all_exits = count_types(out, start)
            results.append((kind, wall, work_cpu, execs, exits, cpu1 - cpu0, k0, k1, th0, th1, all_execs, all_exits))
            time.sleep(0.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        stats.close()

    what = "a static exit(0) program" if args.tiny else "/bin/true"
    figures = {}
    for kind, wall, work_cpu, execs, exits, agent_cpu, k0, k1, th0, th1, all_execs, all_exits in results:
        kernel = {p: ((k1.get(p, (0, 0))[0] - k0.get(p, (0, 0))[0]), (k1.get(p, (0, 0))[1] - k0.get(p, (0, 0))[1]))
                  for p in PROGRAMS}
        events = all_execs + all_exits
        how = "fork+exec (C loop)" if kind == "fork" else "posix_spawn (Python)"
        print(f"== {how}: {args.execs} execs of {what} from {args.workers} worker(s) in {wall:.1f}s "
              f"({args.execs / wall:.0f} execs/s)")
        print(f"events written: {execs} exec + {exits} exit; lost: {args.execs - execs} exec, {args.execs - exits} exit"
              + (f" (other processes meanwhile: {all_execs - execs} exec, {all_exits - exits} exit)"
                 if all_execs + all_exits > execs + exits else ""))
        print(f"workload CPU: {work_cpu:.2f}s ({work_cpu / args.execs * 1e6:.0f} us per exec)")
        busy = sorted(((th1[t][0] - th0.get(t, (0.0, 0.0))[0], th1[t][1] - th0.get(t, (0.0, 0.0))[1], t) for t in th1),
                      key=lambda x: -(x[0] + x[1]))
        user = sum(u for u, _, _ in busy)
        print(f"agent CPU: {agent_cpu:.2f}s = {agent_cpu / max(all_execs, 1) * 1e6:.1f} us per exec event "
              f"(user {user / max(all_execs, 1) * 1e6:.1f} + system {(agent_cpu - user) / max(all_execs, 1) * 1e6:.1f}), "
              f"{agent_cpu / max(events, 1) * 1e6:.1f} us per event (exec+exit)")
        print("agent CPU by thread, user + system (s):",
              ", ".join(f"{t}: {u:.2f} + {s:.2f}" for u, s, t in busy if u + s > 0))
        for p, (rt, rc) in kernel.items():
            print(f"kernel {p}: {rc} runs, {rt / max(rc, 1) / 1000:.2f} us per run")
        # per run, so that other processes' execs meanwhile do not count against ours (each exec of the
        # storm runs each program once)
        kernel_per_exec = sum(rt / rc for rt, rc in kernel.values() if rc) / 1e9
        print(f"kernel total per exec (exec+fork+exit programs): {kernel_per_exec * 1e6:.2f} us")
        total = (agent_cpu / max(all_execs, 1) + kernel_per_exec) * args.execs
        print(f"overhead: agent+BPF CPU for our {args.execs} execs {total:.2f}s = {100 * total / work_cpu:.2f}% "
              "of the workload's CPU")
        figures[kind] = {
            "execs": args.execs, "execs_per_s": round(args.execs / wall), "lost": 2 * args.execs - execs - exits,
            "workload_us_per_exec": round(work_cpu / args.execs * 1e6),
            "agent_us_per_exec": round(agent_cpu / max(all_execs, 1) * 1e6, 1),
            "agent_user_us_per_exec": round(user / max(all_execs, 1) * 1e6, 1),
            "agent_system_us_per_exec": round((agent_cpu - user) / max(all_execs, 1) * 1e6, 1),
            "kernel_ns_per_run": {p: round(rt / max(rc, 1)) for p, (rt, rc) in kernel.items()},
            "kernel_us_per_exec": round(kernel_per_exec * 1e6, 2),
            "overhead_pct": round(100 * total / work_cpu, 2)}
    events_bytes = out.stat().st_size
    total_events = sum(r[10] + r[11] for r in results)
    print(f"output: {events_bytes / max(total_events, 1):.0f} bytes per event (native JSON)")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"workloads": figures, "binary": what,
                                               "bytes_per_event": round(events_bytes / max(total_events, 1))}, indent=1))
    clean_up(tmp, agent)


if __name__ == "__main__":
    main()
