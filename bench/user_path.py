#!/usr/bin/env python3
"""User-space cost of the process path, without the kernel: the agent's CPU per exec event, split by stage.

Builds N fork + exec + exit message triples exactly as bpf/process/process.bpf.c lays them out (the
struct mirrors in collector/sensors/messages.py) for a root process with every capability, host
namespaces, a cgroup and a parent that exists (this script), then feeds them, in ring-buffer-sized
batches, through the agent's own objects: ProcessSensor.decode (process cache, parent, ids, clock) ->
Pipeline.emit (redaction, router) -> the file exporter (native JSON) in its delivery thread. It prints
the process CPU per exec event (exec + exit events each), and the share of each stage, measured in one
run. It isolates what bench/exec_storm.py measures as "agent user-space CPU" from kernel and workload
noise, so changes to the Python path can be compared run against run.

    .venv/bin/python bench/user_path.py [--execs 50000] [--batch 64] [--format native] [--profile]
    .venv/bin/python bench/user_path.py --stages [--rounds 7]

--stages runs the three stages one after the other in one thread (decode -> redact -> encode + write
to /dev/null), several rounds, and prints the least CPU per exec of each: the figure to compare
before and after a change on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector import config, procfs  # noqa: E402
from siemhub.collector.agent import Pipeline  # noqa: E402
from siemhub.collector.sensors.process import ProcessSensorConfig  # noqa: E402
from siemhub.collector.core.event import Clock, EventIds, Node  # noqa: E402
from siemhub.collector.process_cache import ProcessCache  # noqa: E402
from siemhub.collector.sensors import SensorContext  # noqa: E402
from siemhub.collector.sensors import messages as m  # noqa: E402
from siemhub.collector.sensors.process import ProcessSensor  # noqa: E402

ALL_CAPS = (1 << 41) - 1


def own_start_ns() -> int:
    info = procfs.read_process(os.getpid())
    return info.start_ticks * procfs.NS_PER_TICK


def messages(n: int, ppid: int, pstart: int, ns: tuple[int, ...], marker: bytes) -> list[bytes]:
    """fork, exec, exit per process, as the kernel sends them for `/bin/true MARKER` run by root."""
    out = []
    base = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    fn = b"/bin/true\0"
    argv = b"/bin/true\0" + marker + b"\0"
    cwd = b"root\0"
    cg = b"session-1.scope\0user-0.slice\0"
    data = fn + argv + cwd + cg
    size = m.EXEC.size + len(data)
    for i in range(n):
        pid = 200_000 + i % 100_000 if i % 100_000 else 300_000 + i
        start = base + i * 1000
        out.append(m.FORK.pack(m.MSG_FORK, m.FORK.size, start, pid, ppid, start))
        out.append(m.EXEC.pack(
            m.MSG_EXEC, size, start + 300, pid, pid, ppid, pid, 0, 0, 0, 0, 0xFFFFFFFF, 0, 0, 0,
            start, pstart, 1234, ALL_CAPS, ALL_CAPS, 5555, 0x800001, *ns, 0o100755,
            len(fn), len(argv), len(cwd), 1, len(cg), b"true") + data)
        out.append(m.EXIT.pack(m.MSG_EXIT, m.EXIT.size, start + 600, pid, pid, 0, start))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=64, help="messages per ring-buffer drain")
    ap.add_argument("--format", default="native")
    ap.add_argument("--profile", action="store_true", help="print the top functions (cProfile, all threads off)")
    ap.add_argument("--stages", action="store_true", help="per-stage least CPU over --rounds, one thread")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if args.stages:
        stages(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="siemhub-userpath-"))
    out = tmp / "events.jsonl"
    cfg = config.parse(f"""
sensors: {{process: {{}}}}
exporters:
  out: {{type: file, path: "{out}", format: {args.format}, fsync: never}}
routes: [{{name: all, to: [out]}}]
metrics: {{enabled: false}}
status_interval: 0
""", "<bench>")
    pipe = Pipeline(cfg)
    node = Node(name="bench-node")
    clock = Clock()
    cache = ProcessCache(node.name, clock, pipe.metrics, max_entries=65536, exit_delay=30.0)
    ctx = SensorContext(node, clock, EventIds(), pipe.metrics, cache, pipe.emit)
    sensor = ProcessSensor(ProcessSensorConfig(), ctx)
    own_ns = tuple(os.stat(f"/proc/self/ns/{k}").st_ino for k in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"))
    msgs = messages(args.execs, os.getpid(), own_start_ns(), own_ns, b"userpath-marker")
    batches = [msgs[i:i + args.batch] for i in range(0, len(msgs), args.batch)]
    pipe.start()

    prof = cProfile.Profile() if args.profile else None
    decode_cpu = emit_cpu = 0.0
    t_cpu0 = time.process_time()
    wall0 = time.perf_counter()
    marks = {}
    if prof:
        prof.enable()
    for raw in batches:
        c0 = time.thread_time()
        events = sensor.ready(raw)
        c1 = time.thread_time()
        if events:
            marks = pipe.emit(events, wait=True)  # a full queue waits (the agent would drop and count)
        decode_cpu += c1 - c0
        emit_cpu += time.thread_time() - c1
    if prof:
        prof.disable()
    while not pipe.delivered(marks):
        time.sleep(0.001)
    total_cpu = time.process_time() - t_cpu0
    wall = time.perf_counter() - wall0
    counts = pipe.stop(5)
    sent = counts["out"]["sent"]
    n = args.execs
    size = out.stat().st_size
    print(f"user path: {n} execs ({sent} events: exec + exit) in {wall:.2f}s wall, format {args.format}")
    print(f"  process CPU per exec event: {total_cpu / n * 1e6:.1f} us ({total_cpu / sent * 1e6:.1f} us per event)")
    print(f"    sensor decode + cache: {decode_cpu / n * 1e6:.1f} us, route + queue: {emit_cpu / n * 1e6:.1f} us, "
          f"exporter thread (encode + write) and the rest: {(total_cpu - decode_cpu - emit_cpu) / n * 1e6:.1f} us")
    print(f"  output: {size / max(sent, 1):.0f} bytes per event")
    if sent != 2 * n:
        print(f"  WARNING: expected {2 * n} events, got {sent}")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def stages(args) -> None:
    import gc

    from siemhub.collector.metrics import Metrics
    from siemhub.collector.redact import Redactor
    from siemhub.exporters.formats import FORMATS

    fmt = FORMATS[args.format]
    own_ns = tuple(os.stat(f"/proc/self/ns/{k}").st_ino for k in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"))
    n = args.execs
    msgs = messages(n, os.getpid(), own_start_ns(), own_ns, b"userpath-marker")
    batches = [msgs[i:i + args.batch] for i in range(0, len(msgs), args.batch)]
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)  # as the agent runs
    best = {"decode": float("inf"), "redact": float("inf"), "encode + write": float("inf")}
    fd = os.open(os.devnull, os.O_WRONLY)
    for _ in range(args.rounds):
        metrics = Metrics()
        node = Node(name="bench-node")
        clock = Clock()
        cache = ProcessCache(node.name, clock, metrics)
        sensor = ProcessSensor(ProcessSensorConfig(), SensorContext(node, clock, EventIds(), metrics, cache, lambda e: None))
        red = Redactor()
        d = r = w = 0.0
        for raw in batches:
            t0 = time.thread_time()
            events = sensor.ready(raw)
            t1 = time.thread_time()
            red.apply(events)
            t2 = time.thread_time()
            os.write(fd, fmt.encode_lines(events))
            t3 = time.thread_time()
            d, r, w = d + t1 - t0, r + t2 - t1, w + t3 - t2
        for k, v in zip(best, (d, r, w)):
            best[k] = min(best[k], v / n * 1e6)
    print(f"user path by stage, least of {args.rounds} rounds of {n} execs (us of CPU per exec: exec + exit events):")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()) + f"; total {sum(best.values()):.2f}")


if __name__ == "__main__":
    main()
