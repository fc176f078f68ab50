#!/usr/bin/env python3
"""`siemhub replay` of agent-written native events to a `file` exporter against a naive Python loop
over the same file (json.loads, json.dumps, one write per line), in one run: CPU seconds of each
process (user + system, from wait4), events per CPU-second, and their ratio.

The input is what the agent itself writes for root processes: fork + exec + exit messages laid out
as the kernel sends them (bench/user_path.py) decoded by the real ProcessSensor and process cache,
and encoded by the native format, half process_exec and half process_exit.

    .venv/bin/python bench/replay_cost.py [--events 100000] [--rounds 3] [--profile]

Both commands start a fresh interpreter; `siemhub replay` pays for its imports and the pipeline's
start (measured on an empty file and printed as `start-up`), and the figures are given with and
without it. --profile runs the replay once more under py-spy (pip install '.[bench]') and prints
the functions with the most samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]

NAIVE = """
import json, sys
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "w") as dst:
    for line in src:
        if line.strip():
            dst.write(json.dumps(json.loads(line)) + "\\n")
"""


def agent_events(n: int, path: Path) -> None:
    """n native events (exec, exit pairs) as the agent writes them, to path."""
    from user_path import messages, own_start_ns

    from siemhub.collector.core.event import Clock, EventIds, Node
    from siemhub.collector.metrics import Metrics
    from siemhub.collector.process_cache import ProcessCache
    from siemhub.collector.sensors import SensorContext
    from siemhub.collector.sensors.process import ProcessSensor, ProcessSensorConfig
    from siemhub.exporters.formats import FORMATS

    metrics, node, clock = Metrics(), Node(name="bench-node"), Clock()
    cache = ProcessCache(node.name, clock, metrics, max_entries=65536, exit_delay=30.0)
    sensor = ProcessSensor(ProcessSensorConfig(), SensorContext(node, clock, EventIds(), metrics, cache, lambda e: None))
    own_ns = tuple(os.stat(f"/proc/self/ns/{k}").st_ino for k in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"))
    msgs = messages(n // 2, os.getpid(), own_start_ns(), own_ns, b"replay-marker")
    enc = FORMATS["native"].encode_lines
    with open(path, "wb") as f:
        for i in range(0, len(msgs), 3 * 256):
            f.write(enc(sensor.ready(msgs[i:i + 3 * 256])))


def run_cpu(cmd: list[str], **kw) -> tuple[float, float]:
    """(CPU seconds user + system of the child and its children, wall seconds)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        err = p.stderr.read().decode() if p.stderr else ""
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}): {err[-2000:]}")
    return ru.ru_utime + ru.ru_stime, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each; the least CPU is kept")
    ap.add_argument("--profile", action="store_true", help="py-spy the replay once (needs py-spy)")
    ap.add_argument("--json", help="also write the figures to this file (make bench)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="siemhub-replay-bench-"))
    src, out = tmp / "in.jsonl", tmp / "out.jsonl"
    print(f"building {args.events} agent-written native events ...", flush=True)
    agent_events(args.events, src)
    lines = src.read_bytes().splitlines()
    n = len(lines)
    sizes = sorted(len(x) for x in lines)
    print(f"  {n} events, {src.stat().st_size / n:.0f} bytes per event on average (median {sizes[n // 2]})")
    empty = tmp / "empty.jsonl"
    empty.write_bytes(b"")
    cfg = tmp / "replay.yaml"
    cfg.write_text(
        f"exporters:\n  out: {{type: file, path: {out}, format: native, fsync: never, rotate_bytes: {1 << 40}}}\n"
        "routes:\n  - {name: all, to: [out]}\nmetrics: {enabled: false}\nstatus_interval: 0\n")
    siemhub = str(Path(sys.executable).with_name("siemhub"))
    py = sys.executable
    naive_cpu = replay_cpu = startup_cpu = float("inf")
    replay_wall = float("inf")
    for r in range(args.rounds):
        c, _ = run_cpu([py, "-c", NAIVE, str(src), str(tmp / "naive.jsonl")], stderr=subprocess.PIPE)
        naive_cpu = min(naive_cpu, c)
        out.unlink(missing_ok=True)
        c, w = run_cpu([siemhub, "replay", str(src), "-c", str(cfg)], stderr=subprocess.PIPE)
        replay_cpu, replay_wall = min(replay_cpu, c), min(replay_wall, w)
        got = sum(1 for _ in open(out, "rb"))
        if got != n:
            raise SystemExit(f"replay wrote {got} of {n} events")
        c, _ = run_cpu([siemhub, "replay", str(empty), "-c", str(cfg)], stderr=subprocess.PIPE)
        startup_cpu = min(startup_cpu, c)
        print(f"  round {r + 1}: naive {naive_cpu:.2f} s CPU, replay {replay_cpu:.2f} s CPU "
              f"(start-up {startup_cpu:.2f} s)", flush=True)
    steady = max(replay_cpu - startup_cpu, 1e-9)
    fig = {
        "events": n,
        "bytes_per_event": round(src.stat().st_size / n),
        "naive_cpu_s": round(naive_cpu, 3),
        "naive_eps_per_cpu": round(n / naive_cpu),
        "replay_cpu_s": round(replay_cpu, 3),
        "replay_startup_cpu_s": round(startup_cpu, 3),
        "replay_eps_per_cpu": round(n / replay_cpu),
        "replay_eps_per_cpu_steady": round(n / steady),
        "replay_us_per_event": round(replay_cpu / n * 1e6, 2),
        "replay_us_per_event_steady": round(steady / n * 1e6, 2),
        "ratio": round(naive_cpu / replay_cpu, 2),
        "ratio_steady": round((naive_cpu) / steady, 2),
        "replay_wall_s": round(replay_wall, 3),
    }
    print(f"replay -> file, {n} events, least CPU of {args.rounds} rounds:")
    print(f"  naive loop (json.loads + json.dumps + write): {naive_cpu:.2f} s CPU, {fig['naive_eps_per_cpu']:,} events per CPU-s")
    print(f"  siemhub replay: {replay_cpu:.2f} s CPU ({fig['replay_us_per_event']} us/event), "
          f"{fig['replay_eps_per_cpu']:,} events per CPU-s; without its {startup_cpu:.2f} s start-up: "
          f"{fig['replay_us_per_event_steady']} us/event, {fig['replay_eps_per_cpu_steady']:,} events per CPU-s")
    print(f"  ratio to the naive loop: {fig['ratio']}x ({fig['ratio_steady']}x without start-up); "
          f"wall {replay_wall:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    if args.profile:
        spy = Path(sys.executable).with_name("py-spy")
        rec = tmp / "profile.txt"
        out.unlink(missing_ok=True)
        subprocess.run([str(spy), "record", "-r", "500", "-f", "raw", "-o", str(rec), "--",
                        siemhub, "replay", str(src), "-c", str(cfg)], check=True, capture_output=True)
        summarize(rec)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


def summarize(path: Path, top: int = 25) -> None:
    """Self and inclusive samples per function from py-spy's raw (collapsed stacks) output."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        total += c
        frames = stack.split(";")
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
        own[frames[-1]] = own.get(frames[-1], 0) + c
    print(f"py-spy: {total} samples; inclusive / self share per function, by inclusive:")
    for f, c in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * c / total:5.1f}% {100 * own.get(f, 0) / total:5.1f}%  {f}")
    print("by self:")
    for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * incl[f] / total:5.1f}% {100 * c / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
