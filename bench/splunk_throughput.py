"""Splunk HEC exporter throughput, side by side in one run against the HEC receiver of
tests/servers/hec.py (standing in for Splunk; run as its own process on 127.0.0.1, so its CPU is not
this process' CPU):

  (a) the exporter: canonical events -> CIM -> HEC events, through the real delivery path
      (ExporterRunner): batches, ~1 MB gzip requests, `concurrency` keep-alive connections
  (b) the baseline: pre-built batched HEC payloads (the same CIM events, encoded and gzipped before
      timing) posted with the same HTTP client (urllib3), the same request size and concurrency
  (c) a per-event POST loop (what Falcosidekick's Splunk output does: one event per request, no gzip)
      with the same client, on a slice of the events
  (d) the exporter with indexer acknowledgement (`ack: true`), for reference

Reported: events/s (wall clock: noisy on a shared machine), this process' CPU per event (robust), the
receiver's CPU per event. Targets: a >= 0.8 b (events/s); client CPU per event c >= 10 a.

    .venv/bin/python bench/splunk_throughput.py [--events 40000] [--naive 2000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import urllib3  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from siemhub.collector.delivery.runner import ExporterRunner  # noqa: E402
from siemhub.collector.core.event import Event  # noqa: E402
from siemhub.collector.metrics import Metrics  # noqa: E402
from siemhub.exporters.splunk import SplunkConfig, SplunkExporter  # noqa: E402
from tests.servers.hec import HecProcess  # noqa: E402
from measure import make_events, proc_cpu  # noqa: E402 - bench/measure.py

TOKEN = "be7c1a00-0000-4000-8000-00000000beef"
CONCURRENCY = 4


def cpu() -> float:
    return time.process_time()


def exporter_config(url: str, n: int, batch: int, ack: bool) -> SplunkConfig:
    return SplunkConfig.model_validate({
        "type": "splunk", "url": url, "token": TOKEN, "ack": ack, "ack_interval": 0.05,
        "concurrency": CONCURRENCY, "batch": {"max_events": batch, "max_wait": 0.05},
        "queue": {"max_events": n + 1}, "health_check": False})


def run_exporter(url: str, events: list[Event], batch: int, ack: bool = False) -> tuple[float, float]:
    ex = SplunkExporter("bench", exporter_config(url, len(events), batch, ack))
    runner = ExporterRunner(ex, Metrics(CollectorRegistry()))
    runner.start()
    c0, t0 = cpu(), time.perf_counter()
    runner.put_many(events, wait=True)
    while runner.finished < runner.accepted:
        time.sleep(0.002)
    wall, used = time.perf_counter() - t0, cpu() - c0
    runner.stop(time.monotonic() + 5)
    assert runner.sent == len(events) and not runner.dropped, (runner.sent, runner.dropped)
    return wall, used


def prebuilt_bodies(url: str, events: list[Event], batch: int) -> list[bytes]:
    """The exporter's own encoding and request split, gzipped as it does: done before timing."""
    ex = SplunkExporter("enc", exporter_config(url, len(events), batch, False))
    bodies = []
    for i in range(0, len(events), batch):
        payload = ex.encode(events[i : i + batch])
        for chunk in ex._chunks(payload.pending(), payload.items):
            c = zlib.compressobj(1, zlib.DEFLATED, 31)
            bodies.append(c.compress(b"".join(payload.items[j] for j in chunk)) + c.flush())
    return bodies


def run_baseline(url: str, bodies: list[bytes]) -> tuple[float, float]:
    http = urllib3.PoolManager(maxsize=CONCURRENCY + 1, retries=False)
    headers = {"Authorization": f"Splunk {TOKEN}", "Content-Encoding": "gzip", "Content-Type": "application/json",
               "X-Splunk-Request-Channel": str(uuid.uuid4())}

    def post(body: bytes) -> int:
        return http.request("POST", url + "/services/collector/event", body=body, headers=headers).status

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        c0, t0 = cpu(), time.perf_counter()
        statuses = list(pool.map(post, bodies))
        wall, used = time.perf_counter() - t0, cpu() - c0
    assert set(statuses) == {200}, set(statuses)
    return wall, used


def run_naive(url: str, events: list[Event]) -> tuple[float, float]:
    """One POST per event, as Falcosidekick's Splunk output: the event encoded at send time."""
    ex = SplunkExporter("enc", exporter_config(url, len(events), 1, False))
    http = urllib3.PoolManager(maxsize=2, retries=False)
    headers = {"Authorization": f"Splunk {TOKEN}", "Content-Type": "application/json"}
    c0, t0 = cpu(), time.perf_counter()
    for e in events:
        body = ex.encode([e]).items[0]
        r = http.request("POST", url + "/services/collector/event", body=body, headers=headers)
        assert r.status == 200, r.status
    return time.perf_counter() - t0, cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--naive", type=int, default=2000, help="events for the per-event POST loop")
    args = ap.parse_args()
    n = args.events
    us = lambda seconds, k: seconds / k * 1e6  # noqa: E731

    with HecProcess([TOKEN], keep_events=False) as hec, HecProcess([TOKEN], ack=True, keep_events=False) as hec_ack:
        spid = hec.proc.pid
        enc = SplunkExporter("enc", exporter_config(hec.url, n, args.batch, False))
        evs = make_events(n, "e")
        c0 = cpu()
        for i in range(0, n, args.batch):
            enc.encode(evs[i : i + args.batch])
        encode_us = us(cpu() - c0, n)

        print(f"events: {n} CIM process_exec events (naive loop: {args.naive}), batch {args.batch}, "
              f"concurrency {CONCURRENCY}, receiver: tests/servers/hec.py in its own process", flush=True)
        results = {}
        # baseline before and after the exporter: its mean is the comparison
        for name, fn in (("b1", lambda: run_baseline(hec.url, prebuilt_bodies(hec.url, make_events(n, "b1"),
                                                                               args.batch))),
                         ("a", lambda: run_exporter(hec.url, make_events(n, "a"), args.batch)),
                         ("b2", lambda: run_baseline(hec.url, prebuilt_bodies(hec.url, make_events(n, "b2"),
                                                                               args.batch))),
                         ("c", lambda: run_naive(hec.url, make_events(args.naive, "c"))),
                         ("d", lambda: run_exporter(hec_ack.url, make_events(n, "d"), args.batch, ack=True))):
            pid = hec_ack.proc.pid if name == "d" else spid
            s0 = proc_cpu(pid)
            wall, used = fn()
            results[name] = (wall, used, proc_cpu(pid) - s0)
            print(f"  {name}: {wall:.2f}s", flush=True)
        received = hec.stats()["events"]
        acked = hec_ack.stats()["events"]
    assert received == 3 * n + args.naive and acked == n, (received, acked)

    wa, ca, sa = results["a"]
    wb = (results["b1"][0] + results["b2"][0]) / 2
    cb = (results["b1"][1] + results["b2"][1]) / 2
    sb = (results["b1"][2] + results["b2"][2]) / 2
    wc, cc, sc = results["c"]
    wd, cd, sd = results["d"]
    a, b, c, d = n / wa, n / wb, args.naive / wc, n / wd
    print(f"(a) exporter via delivery path : {a:9.0f} events/s  client CPU {us(ca, n):6.1f} us/event "
          f"(encode {encode_us:.1f})  receiver CPU {us(sa, n):6.1f} us/event")
    print(f"(b) pre-built batched payloads : {b:9.0f} events/s  client CPU {us(cb, n):6.1f} us/event  "
          f"receiver CPU {us(sb, n):6.1f} us/event  (before a: {n / results['b1'][0]:.0f}, "
          f"after a: {n / results['b2'][0]:.0f})")
    print(f"(c) per-event POST loop        : {c:9.0f} events/s  client CPU {us(cc, args.naive):6.1f} us/event  "
          f"receiver CPU {us(sc, args.naive):6.1f} us/event")
    print(f"(d) exporter with indexer ack  : {d:9.0f} events/s  client CPU {us(cd, n):6.1f} us/event")
    print(f"a/b events/s = {a / b:.2f} (target >= 0.8); client CPU per event c/a = "
          f"{us(cc, args.naive) / us(ca, n):.1f}x (target >= 10x); a/c events/s = {a / c:.1f}")


if __name__ == "__main__":
    main()
