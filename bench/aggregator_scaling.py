"""Aggregator scaling: events/s of one `siemhub aggregate` replica vs two in one consumer group.

Starts Tansu on 127.0.0.1 and, per run, a fresh topic of P partitions and the real CLI (one process
per replica, a file exporter each, fsync never) in a fresh consumer group. Once every replica owns
its share of the partitions (read from each replica's /metrics: assigned - revoked - lost), the
replicas are stopped (SIGSTOP), N native events (serialized beforehand) are produced, and the replicas
are continued together (SIGCONT; producing takes 1-2 s, well within the 6 s session timeout). The
window runs from there until all N are delivered: every replica starts with its whole share ahead of
it, and no producer takes CPU from the replicas. (Producing after the group settled matters: with a
topic filled before the replicas start, the first replica to join reads alone until the second one's
join rebalances the group, about half of session.timeout.ms on Tansu.) A rebalance inside the window
is reported. Rounds alternate one replica and two, to share the machine's noise. Delivered events are
counted by reading only what each output file gained since the last look, so the benchmark itself
takes little CPU from the replicas. --pin runs replica r on CPU r only: a core per replica, as
replicas on their own nodes have (one replica's exporter thread otherwise spills onto the second core,
which two replicas then cannot have).

CPU is reported per process for the measured window (/proc/<pid>/stat user+system): each replica,
the broker, this script, and what the rest of the machine used (/proc/stat busy time minus those):
the two cores are shared with the broker and with whatever else runs, so the ratio is bounded by the
machine, not only by siemhub.

    .venv/bin/python bench/aggregator_scaling.py [--events 1000000] [--partitions 4] [--rounds 3] [--pin]

Defaults: 1,000,000 events.

Measured (2 vCPU VM, load average 1.2-1.7 from the benchmarks themselves), issue 6's third round, after
the consumer-lag fix (the lag metric no longer asks the broker from the consuming thread; that blocked a
replica 40% of its time with a backlog) and faster redaction: one replica 126k-176k events/s. With
--pin: **scaling 1.65x, 1.77x and 1.74x** (median of 3 rounds; rounds 1.41-1.92; CPU per event, x2:
1.81x, 1.96x and 1.87x). Without: 1.38x and 1.59x (rounds 1.36-1.80): one replica then uses 1.0-1.15 cores and two
get 1.8 of the machine's 2. Before the fix one replica stalled half the time (64k-77k events/s on half
a core), which made the ratio look better than it was (2.5x-2.9x on the same machine; earlier
1.57x-2.78x on a shared one).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Producer  # noqa: E402

from kafka_throughput import make_events  # noqa: E402
from siemhub.collector.core.event import encode_json  # noqa: E402
from tests.servers.tansu import Tansu, free_port  # noqa: E402

SIEMHUB = Path(sys.executable).with_name("siemhub")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def machine_busy() -> float:
    """CPU seconds every core spent not idle since boot (all processes)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / TICK  # minus idle and iowait


class LineCounter:
    """Delivered events: newlines in the output files, reading only what was appended since last time."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.each = [0] * len(paths)  # per replica
        self.lines = 0

    def count(self) -> int:
        for i, p in enumerate(self.paths):
            if not p.exists():
                continue
            with open(p, "rb") as f:
                f.seek(self.offsets[i])
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    n = chunk.count(b"\n")
                    self.lines += n
                    self.each[i] += n
                    self.offsets[i] += len(chunk)
        return self.lines


def owned_partitions(port: int) -> int | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
    except OSError:
        return None
    n = {"assigned": 0.0, "revoked": 0.0, "lost": 0.0}
    for line in text.splitlines():
        if line.startswith("siemhub_kafka_rebalances_total{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            n[kind] = float(line.rsplit(" ", 1)[1])
    return int(n["assigned"] - n["revoked"] - n["lost"])


PIN = False  # --pin: replica r runs on CPU r only (one core per replica)


def run(replicas: int, broker: Tansu, messages: list[tuple[bytes, bytes]], partitions: int, tmp: Path) -> dict:
    group = f"scale-{replicas}-{time.monotonic_ns()}"
    topic, bootstrap, broker_pid, n = group, broker.bootstrap, broker.proc.pid, len(messages)
    broker.create_topic(topic, partitions)
    procs, outs, ports = [], [], []
    for r in range(replicas):
        out = tmp / f"{group}-{r}.jsonl"
        cfg = tmp / f"{group}-{r}.yaml"
        port = free_port()
        cfg.write_text(f"""
sources:
  kafka: {{brokers: ["{bootstrap}"], topics: ["{topic}"], group_id: {group}, session_timeout_ms: 6000,
          max_poll_messages: 5000, commit_interval: 1}}
exporters:
  out: {{type: file, path: "{out}", fsync: never, rotate_bytes: 100000000000,
         batch: {{max_events: 4096, max_wait: 0.05}}, queue: {{max_events: 50000}}}}
routes: [{{name: all, to: [out]}}]
metrics: {{listen: "127.0.0.1:{port}"}}
status_interval: 0
""")
        cpus = sorted(os.sched_getaffinity(0))
        pin = (lambda c=cpus[r % len(cpus)]: os.sched_setaffinity(0, {c})) if PIN else None
        procs.append(subprocess.Popen([str(SIEMHUB), "aggregate", "-c", str(cfg), "--log-level", "warning"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f"{group}-{r}.log", "wb"),  # noqa: SIM115
                                      preexec_fn=pin))
        outs.append(out)
        ports.append(port)
    counter = LineCounter(outs)
    deadline = time.monotonic() + 300

    def shares() -> list[int | None]:
        return [owned_partitions(p) for p in ports]

    # steady state starts when every replica owns a share and together they own every partition
    while time.monotonic() < deadline:
        s = shares()
        if all(x for x in s) and sum(s) == partitions:  # type: ignore[arg-type]
            break
        time.sleep(0.02)
    else:
        raise RuntimeError(f"the group never settled: {s}")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 1_000_000})
    producer.list_topics(topic, timeout=10)
    failed = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failed.append(err)

    # The replicas are stopped (SIGSTOP) while the events are produced, well within the group's session
    # timeout (6 s), and continued together when all are in the topic: the window starts with the whole
    # backlog ahead of every replica, an equal share each, and no producer taking CPU from them.
    for p in procs:
        p.send_signal(signal.SIGSTOP)
    t_load = time.perf_counter()
    for i, (value, key) in enumerate(messages):
        producer.produce(topic, value, key, on_delivery=on_delivery)
        if i % 1000 == 0:
            producer.poll(0)
    flushed = producer.flush(60)
    load = time.perf_counter() - t_load
    for p in procs:
        p.send_signal(signal.SIGCONT)
    assert flushed == 0 and not failed, f"preload failed: {failed[:3]}"
    if load > 4:
        print(f"  (producing took {load:.1f}s: close to the 6 s session timeout, a rebalance may follow)")
    t0, n0 = time.perf_counter(), counter.count()
    cpu0 = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(broker_pid), time.process_time(), machine_busy()]
    samples = []  # (time, per-replica counts)
    while counter.count() < n and time.monotonic() < deadline:
        samples.append((time.perf_counter(), list(counter.each)))
        time.sleep(0.05)
    t1 = time.perf_counter()
    samples.append((t1, list(counter.each)))
    cpu1 = [cpu_seconds(p.pid) for p in procs] + [cpu_seconds(broker_pid), time.process_time(), machine_busy()]
    moved = shares() != s  # a rebalance inside the window
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)
    got = counter.count()
    assert got >= n, f"only {got} of {n} delivered"
    # While every replica still had work: until the first one delivered its whole share. The rest of
    # the window is a tail in which the replicas that finished early sit idle (their shares are
    # equal, but one may have read more than the other while the events were being produced).
    final = samples[-1][1]
    busy_end = next((t, sum(c)) for t, c in samples if any(x >= f for x, f in zip(c, final, strict=True)))
    all_busy = (busy_end[1] - n0) / (busy_end[0] - t0) if busy_end[0] > t0 else float("nan")
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    wall = t1 - t0
    reps, broker, bench, busy = cpu[:replicas], cpu[-3], cpu[-2], cpu[-1]
    return {"rate": (n - n0) / wall, "all_busy": all_busy, "events": n - n0, "wall": wall, "replica_cpu": reps, "broker_cpu": broker,
            "bench_cpu": bench, "other_cpu": max(0.0, busy - sum(reps) - broker - bench), "moved": moved,
            "us_per_event": sum(reps) / (n - n0) * 1e6}


def show(label: str, r: dict) -> None:
    reps = " + ".join(f"{c:.2f}" for c in r["replica_cpu"])
    print(f"  {label}: {r['rate']:9,.0f} events/s ({r['events']} events in {r['wall']:.2f}s; "
          f"{r['all_busy']:,.0f}/s while every replica had work), "
          f"{r['us_per_event']:5.1f} µs CPU/event; CPU s: replicas {reps}, broker {r['broker_cpu']:.2f}, "
          f"bench {r['bench_cpu']:.2f}, rest of machine {r['other_cpu']:.2f}"
          + ("  [rebalance inside the window]" if r["moved"] else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pin", action="store_true",
                    help="replica r on CPU r only: a core per replica, as replicas on their own nodes have")
    args = ap.parse_args()
    global PIN
    PIN = args.pin
    ratios, busy_ratios, per_core = [], [], []
    messages = [(encode_json(e), f"node-a/{e.process.exec_id}".encode()) for e in make_events(args.events)]
    with Tansu() as broker, tempfile.TemporaryDirectory() as d:
        print(f"{args.events} events over {args.partitions} partitions; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}" + ("; replica r pinned to CPU r" if PIN else ""))
        for rnd in range(args.rounds):
            one = run(1, broker, messages, args.partitions, Path(d))
            show(f"round {rnd + 1}, 1 replica ", one)
            two = run(2, broker, messages, args.partitions, Path(d))
            show(f"round {rnd + 1}, 2 replicas", two)
            ratios.append(two["rate"] / one["rate"])
            busy_ratios.append(two["all_busy"] / one["all_busy"])
            per_core.append(2 * one["us_per_event"] / two["us_per_event"])
            print(f"  round {rnd + 1}: scaling 2 vs 1: {ratios[-1]:.2f}x ({busy_ratios[-1]:.2f}x while every replica "
                  f"had work)")
    print(f"scaling 2 vs 1, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x "
          f"(each round: {', '.join(f'{x:.2f}' for x in ratios)}; target 1.6x, CPU permitting)")
    print(f"while every replica had work: {statistics.median(busy_ratios):.2f}x "
          f"(each round: {', '.join(f'{x:.2f}' for x in busy_ratios)})")
    # Derived, not measured: what two replicas would move if each had a core to itself, given the CPU
    # each event cost them (a replica is one Python process: it cannot use much more than one core).
    print(f"CPU per event 1 replica / 2 replicas, x2: {statistics.median(per_core):.2f}x "
          f"(each round: {', '.join(f'{x:.2f}' for x in per_core)}; derived: the scaling with a core per replica)")


if __name__ == "__main__":
    main()
