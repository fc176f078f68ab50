#!/usr/bin/env python3
"""Freshness: how long after the kernel saw an exec its events are a line in the file exporter's output.

Starts `siemhub run` (process sensor -> file exporter, native JSON; the sensor and delivery settings
under test), then execs a static exit(0) program at a paced rate from C loops (fork + execv + waitpid,
each exec at its scheduled time: clock_nanosleep to an absolute deadline), for --seconds per rate.
A reader tails the output file every 2 ms and notes, for each event of ours, when its line appeared;
the latency is that moment minus the event's `time` (the kernel's timestamp of the exec or exit, as a
wall-clock time). Reported per rate: p50 / p99 / max latency, the rate reached, and the agent's CPU per
event (user + system, /proc) so that settings can be compared for cost.

    sudo .venv/bin/python bench/freshness.py [--rates 1000,10000] [--seconds 5]
        [--process-config "poll_interval: 0.25"] [--batch-config "max_wait: 0.5"]

Rates are events per second (an exec and its exit are two events). On a 2-core machine shared with
other work the higher rates may not be reached: the reached rate is printed.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from measure import clean_up, proc_cpu  # bench/measure.py

TINY_TRUE_C = r"""
void _start(void) { __asm__ volatile("mov $60, %eax\n\txor %edi, %edi\n\tsyscall"); } /* exit(0) */
"""

PACED_C = r"""
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {   /* FRESH_MARKER=m paced RATE SECONDS BINARY: RATE execs/s for SECONDS */
    double rate = atof(argv[1]);
    long n = (long)(rate * atof(argv[2]));
    char *args[] = {argv[3], getenv("FRESH_MARKER"), NULL};  /* not in our own argv: only children carry it */
    struct timespec t0, due;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        long long ns = (long long)t0.tv_sec * 1000000000LL + t0.tv_nsec + (long long)(i * 1e9 / rate);
        due.tv_sec = ns / 1000000000LL; due.tv_nsec = ns % 1000000000LL;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
        pid_t p = fork();
        if (p == 0) { execv(argv[3], args); _exit(127); }
        int st;
        if (p < 0 || waitpid(p, &st, 0) < 0) return 1;
    }
    return 0;
}
"""


class Tail:
    """Follows the output file; for each line with the marker, (seen_at - event time) in seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.latencies: list[float] = []
        self.marker = b""
        self._stop = threading.Event()
        self._dates: dict[bytes, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _epoch(self, ts: bytes) -> float:
        day = ts[:19]  # YYYY-MM-DDTHH:MM:SS
        sec = self._dates.get(day)
        if sec is None:
            sec = self._dates[day] = calendar.timegm(time.strptime(day.decode(), "%Y-%m-%dT%H:%M:%S"))
        return sec + int(ts[20:29]) / 1e9

    def _run(self) -> None:
        while not self.path.exists():
            time.sleep(0.01)
        with open(self.path, "rb") as f:
            rest = b""
            while not self._stop.is_set():
                data = f.read()
                now = time.time()
                if not data:
                    time.sleep(0.002)
                    continue
                lines = (rest + data).split(b"\n")
                rest = lines.pop()
                marker = self.marker
                if not marker:
                    continue
                for line in lines:
                    if marker in line:
                        i = line.find(b'"time":"') + 8
                        self.latencies.append(now - self._epoch(line[i:i + 30]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Searcher:
    """Polls Elasticsearch for our events; for each event id first found, (found_at - event time)."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        from elasticsearch import Elasticsearch

        self.es = Elasticsearch(url, request_timeout=30, max_retries=0)
        self.interval = interval
        self.latencies: list[float] = []
        self.marker = ""
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self, marker: str) -> None:
        self.latencies, self._seen, self.marker = [], set(), marker

    def _run(self) -> None:
        from datetime import datetime

        while not self._stop.wait(self.interval):
            marker, latencies, seen = self.marker, self.latencies, self._seen  # one round's, even across reset()
            if not marker:
                continue
            try:
                r = self.es.search(index="logs-siemhub.*", size=10000, source=["@timestamp", "event.id"],
                                   query={"term": {"process.args": marker}})
            except Exception as exc:  # noqa: BLE001 - the server is busy: try again next interval
                print(f"  (search failed: {exc})", flush=True)
                continue
            now = time.time()
            for hit in r["hits"]["hits"]:
                src = hit["_source"]
                eid = src["event"]["id"]
                if eid in seen:
                    continue
                seen.add(eid)
                ts = src["@timestamp"]
                t = datetime.fromisoformat(ts[:26] + "+00:00").timestamp() if len(ts) > 26 else \
                    datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
                latencies.append(now - t)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,10000", help="events per second (exec + exit), comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--process-config", default="", metavar="YAML", help='sensors.process, e.g. "poll_interval: 0.25"')
    ap.add_argument("--batch-config", default="", metavar="YAML", help='the exporter\'s batch, e.g. "max_wait: 0.5"')
    ap.add_argument("--es", action="store_true", help="to an elasticsearch exporter (a noida-db started here) "
                    "instead of a file: latency until the document is found by a search (polled every 0.1 s)")
    ap.add_argument("--json", help="also write the figures to this file (make bench)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")

    siemhub = Path(sys.executable).with_name("siemhub")
    tmp = Path(tempfile.mkdtemp(prefix="siemhub-fresh-"))
    out, cfg = tmp / "events.jsonl", tmp / "fresh.yaml"
    batch = f", batch: {{{args.batch_config}}}" if args.batch_config else ""
    server = None
    if args.es:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.servers.noida import NoidaServer

        server = NoidaServer(tmp / "es").start()
        target = f"{{type: elasticsearch, hosts: [\"{server.url}\"]{batch}}}"
    else:
        target = f"{{type: file, path: {out}, format: native, fsync: never, rotate_bytes: {1 << 40}{batch}}}"
    cfg.write_text(
        f"sensors:\n  process: {{{args.process_config}}}\n"
        f"exporters:\n  out: {target}\n"
        "routes:\n  - {name: all, to: [out]}\nmetrics: {enabled: false}\nstatus_interval: 0\n")
    binary, paced = str(tmp / "true"), str(tmp / "paced")
    (tmp / "true.c").write_text(TINY_TRUE_C)
    (tmp / "paced.c").write_text(PACED_C)
    subprocess.run(["gcc", "-O2", "-nostdlib", "-static", "-o", binary, str(tmp / "true.c")], check=True)
    subprocess.run(["gcc", "-O2", "-o", paced, str(tmp / "paced.c")], check=True)
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--log-level", "warning"],
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    tail = Searcher(server.url) if server is not None else Tail(out)
    results = {}
    try:
        probe = f"probe-{os.getpid()}"
        if server is not None:
            tail.reset(probe)
        else:
            tail.marker = probe.encode()
        deadline = time.monotonic() + 60
        while not tail.latencies and time.monotonic() < deadline:
            subprocess.run([binary, probe])
            time.sleep(0.3)
        if not tail.latencies:
            raise SystemExit("agent did not start")
        time.sleep(1.0)
        for rate in (float(r) for r in args.rates.split(",")):
            marker = f"fresh-{int(rate)}-{os.getpid()}"
            if server is not None:
                tail.reset(marker)
            else:
                tail.latencies = []
                tail.marker = marker.encode()
            execs_per_s = rate / 2
            workers = max(1, int(execs_per_s // 2500) + (1 if execs_per_s % 2500 else 0))
            cpu0, t0 = proc_cpu(agent.pid), time.monotonic()
            env = dict(os.environ, FRESH_MARKER=marker)
            loops = [subprocess.Popen([paced, str(execs_per_s / workers), str(args.seconds), binary], env=env)
                     for _ in range(workers)]
            for p in loops:
                p.wait()
            wall = time.monotonic() - t0
            want = 2 * sum(int(execs_per_s / workers * args.seconds) for _ in range(workers))
            deadline = time.monotonic() + (30 if server is not None else 15)
            while len(tail.latencies) < want and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu = proc_cpu(agent.pid) - cpu0
            lat = tail.latencies
            got = len(lat)
            r = {"target_eps": int(rate), "reached_eps": round(want / wall), "events": got, "lost": want - got,
                 "p50_ms": round(pct(lat, 0.5) * 1e3), "p99_ms": round(pct(lat, 0.99) * 1e3),
                 "max_ms": round(max(lat) * 1e3), "agent_us_per_event": round(cpu / max(got, 1) * 1e6, 1)}
            results[str(int(rate))] = r
            print(f"{int(rate):6d} events/s target ({r['reached_eps']} reached, {got} events, {r['lost']} missing): "
                  f"latency p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms; "
                  f"agent {r['agent_us_per_event']} µs CPU per event", flush=True)
            time.sleep(1.0)
    finally:
        tail.stop()
        os.killpg(agent.pid, signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"process_config": args.process_config, "batch_config": args.batch_config,
                                               "to": "elasticsearch" if args.es else "file", "rates": results}, indent=1))
    clean_up(tmp, agent)


if __name__ == "__main__":
    main()
