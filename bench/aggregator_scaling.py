"""Aggregator scaling: events/s of one `siemhub aggregate` replica vs two in one consumer group.

Starts Tansu on 127.0.0.1, preloads a topic of N native events over P partitions, then runs the real
CLI (one process per replica, a file exporter each, fsync never) with a fresh consumer group reading
from the beginning. The rate is measured in steady state: from the first delivered event until all N
are delivered, so the group join (about half of session.timeout.ms on Tansu) is not counted. CPU per
event is the replicas' own user+system time (/proc/<pid>/stat); the broker runs in its own process
on the same 2 cores, so the ratio is bounded by the machine, not only by siemhub.

    .venv/bin/python bench/aggregator_scaling.py [--events 100000] [--partitions 4]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from confluent_kafka import Producer  # noqa: E402

from kafka_throughput import make_events  # noqa: E402
from siemhub.collector.event import encode_json  # noqa: E402
from tests.servers.tansu import Tansu, free_port  # noqa: E402

SIEMHUB = Path(sys.executable).with_name("siemhub")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def count_lines(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        if p.exists():
            with open(p, "rb") as f:
                n += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return n


def run(replicas: int, bootstrap: str, topic: str, n: int, tmp: Path) -> tuple[float, float]:
    group = f"scale-{replicas}-{time.monotonic_ns()}"
    procs, outs = [], []
    for r in range(replicas):
        out = tmp / f"{group}-{r}.jsonl"
        cfg = tmp / f"{group}-{r}.yaml"
        cfg.write_text(f"""
sources:
  kafka: {{brokers: ["{bootstrap}"], topics: ["{topic}"], group_id: {group}, session_timeout_ms: 6000,
          max_poll_messages: 5000, commit_interval: 1}}
exporters:
  out: {{type: file, path: "{out}", fsync: never, batch: {{max_events: 4096, max_wait: 0.2}},
         queue: {{max_events: 50000}}}}
routes: [{{name: all, to: [out]}}]
metrics: {{listen: "127.0.0.1:{free_port()}"}}
status_interval: 0
""")
        procs.append(subprocess.Popen([str(SIEMHUB), "aggregate", "-c", str(cfg), "--log-level", "warning"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp / f"{group}-{r}.log", "wb")))  # noqa: SIM115
        outs.append(out)
    first = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        got = count_lines(outs)
        if got and first is None:
            first = (time.perf_counter(), got)
        if got >= n:
            break
        time.sleep(0.05)
    done = time.perf_counter()
    cpu = sum(cpu_seconds(p.pid) for p in procs)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(30)
    got = count_lines(outs)
    assert got >= n, f"only {got} of {n} delivered"
    t0, n0 = first
    return (n - n0) / (done - t0), cpu / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    args = ap.parse_args()
    with Tansu() as broker, tempfile.TemporaryDirectory() as d:
        topic = "bench.scaling"
        broker.create_topic(topic, args.partitions)
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20, "compression.type": "lz4",
                      "queue.buffering.max.messages": 1_000_000})
        for e in make_events(args.events):
            p.produce(topic, encode_json(e), f"node-a/{e.process.exec_id}".encode())
            p.poll(0)
        p.flush(60)
        print(f"{args.events} events preloaded over {args.partitions} partitions; {os.cpu_count()} CPUs")
        one_rate, one_cpu = run(1, broker.bootstrap, topic, args.events, Path(d))
        print(f"  1 replica : {one_rate:9,.0f} events/s, {one_cpu:5.1f} µs CPU/event (aggregator processes)")
        two_rate, two_cpu = run(2, broker.bootstrap, topic, args.events, Path(d))
        print(f"  2 replicas: {two_rate:9,.0f} events/s, {two_cpu:5.1f} µs CPU/event (aggregator processes)")
    print(f"scaling 2 vs 1: {two_rate / one_rate:.2f}x (target 1.6x, CPU permitting)")


if __name__ == "__main__":
    main()
