"""Elasticsearch exporter throughput, side by side in one run against noida-db on 127.0.0.1.

  (a) the exporter: canonical events -> ECS -> bulk, through the real delivery path (ExporterRunner)
  (b) a hand-tuned baseline: pre-built ECS documents, pre-serialised NDJSON, es.bulk() with the same
      client settings (gzip, chunks of the same size)
  (c) a naive loop: es.index() per event (on a slice of the events; it is slow)

noida-db is an emulator and is the bottleneck, so the end-to-end rates mostly measure it; the client
CPU per event (this process, during each phase) and the server's CPU per document (/proc/<pid>/stat of
the noida-db binary) are reported separately: CPU time is robust to a shared machine, wall-clock rates
are not. Every phase runs on its own fresh server. Targets: a >= 0.8 b, a >= 5 c.

    .venv/bin/python bench/es_throughput.py [--events 20000] [--batch 2000] [--naive 1000]

Three runs on the project's 2-core machine, shared with 3-4 other sessions (load average ~4.5):
  a/b = 1.27, 1.10, 0.58 (wall clock; the last run was starved)   a/c = 2.1, 3.0, 1.3
  client CPU per event: (a) 22-33 us (encode 5.3-5.5), (b) 21-22 us, (c) 374-437 us
  server CPU per document: (a) 417-518 us, (b) 386-480 us, (c) 540-570 us
  client + server CPU per event, c/a = 2.2, 2.1, 1.8
Why a/c misses 5x here (what was checked, on noida-db 0.2.3, a stripped Rust binary; py-spy does not
apply, perf was used): the emulator spends ~300-420 us of CPU per ECS document in its bulk path
(perf: mostly malloc/free in its own indexing), 60-75% of what a single index request costs it, and
the naive loop's total cost (client + server) is ~950 us per event; so a/c cannot exceed ~2.2 with any
client. Its cost scales with the document (a 120-byte document costs it ~30 us, the 1.2 KB ECS
document ~310 us), it serialises writes (two concurrent bulk streams never take it above one core,
so `concurrency: 2` / parallel bulk gains nothing), gzip adds 0-20 us per document to its bulk path
(the naive loop pays more: ~130 us per request), and it rewrites its whole store as one JSON file
about once a second, so it slows as it fills (~325 -> ~480 us per document from 4k to 24k stored
documents, with or without explicit _ids): hence a fresh server per phase. Nothing in our requests
(no refresh, no ingest pipeline, chunk size 100-2000, explicit mappings vs dynamic: within noise)
changes its per-document cost. Against Elasticsearch, whose bulk path amortises per-request work over
the batch, the same client-side numbers (22 us vs 374 us per event) are what the 5x target measures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from siemhub.collector.delivery.runner import ExporterRunner  # noqa: E402
from siemhub.collector.core.event import Event  # noqa: E402
from siemhub.collector.metrics import Metrics  # noqa: E402
from siemhub.exporters.elasticsearch import ElasticsearchConfig, ElasticsearchExporter, index_for  # noqa: E402
from siemhub.exporters.formats import ecs  # noqa: E402
from tests.servers.noida import NoidaServer  # noqa: E402
from measure import make_events  # noqa: E402 - bench/measure.py


def cpu() -> float:
    return time.process_time()


def server_pid(server: NoidaServer) -> int:
    """The noida-db binary's pid: the `noida-db` console script runs it as its child."""
    pid = server.proc.pid
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return int(kids[0]) if kids else pid


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of the server so far (/proc/<pid>/stat), robust to a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_exporter(url: str, events: list[Event], batch: int) -> tuple[float, float]:
    cfg = ElasticsearchConfig.model_validate({"type": "elasticsearch", "hosts": [url], "namespace": "bencha",
                                              "batch": {"max_events": batch, "max_wait": 0.05},
                                              "queue": {"max_events": len(events) + 1}})
    ex = ElasticsearchExporter("bench", cfg)
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


def run_baseline(es, events: list[Event], batch: int) -> float:
    import msgspec

    enc = msgspec.json.Encoder()
    index = index_for("process_exec", "benchb")  # same data stream both times: ids differ
    lines = [b'{"create":{"_index":"%s","_id":%s}}\n%s\n' % (index.encode(), enc.encode(e.id),
                                                              enc.encode(ecs.to_ecs(e, "benchb"))) for e in events]
    bodies = [b"".join(lines[i : i + batch]) for i in range(0, len(lines), batch)]  # built before timing
    t0 = time.perf_counter()
    for body in bodies:
        resp = es.bulk(operations=body, filter_path="errors")
        assert not resp["errors"]
    return time.perf_counter() - t0


def run_naive(es, events: list[Event]) -> float:
    index = index_for("process_exec", "benchc")
    docs = [(e.id, ecs.to_ecs(e, "benchc")) for e in events]
    t0 = time.perf_counter()
    for _id, doc in docs:
        es.index(index=index, id=_id, document=doc, op_type="create")
    return time.perf_counter() - t0


class Phase:
    """One measured phase on its own fresh noida-db (templates set up, store empty): the emulator
    snapshots its whole store to disk about once a second, so it slows as it fills, and a phase that
    ran after another would pay for the documents the other one left."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.server = NoidaServer(tmp / name / "data")

    def __enter__(self) -> Phase:
        from elasticsearch import Elasticsearch

        self.server.start()
        self.url = self.server.url
        # the exporter's setup (templates, lifecycle) first, so every phase indexes into mapped data streams
        warm = ElasticsearchExporter("warm", ElasticsearchConfig.model_validate(
            {"type": "elasticsearch", "hosts": [self.url], "namespace": "warm"}))
        warm.start()
        warm.close()
        self.es = Elasticsearch(self.url, http_compress=True, request_timeout=60, max_retries=0)
        self.pid = server_pid(self.server)
        self.c0, self.s0 = cpu(), server_cpu(self.pid)
        return self

    def __exit__(self, *exc) -> None:
        self.client_cpu, self.server_cpu = cpu() - self.c0, server_cpu(self.pid) - self.s0
        self.es.close()
        self.server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--naive", type=int, default=1000, help="events for the per-event index() loop")
    ap.add_argument("--json", help="also write the figures to this file (make bench)")
    args = ap.parse_args()

    evs = make_events(args.events, "a")
    c0 = cpu()
    encoder = ElasticsearchExporter("enc", ElasticsearchConfig.model_validate(
        {"type": "elasticsearch", "hosts": ["http://127.0.0.1:9"], "setup": False}))
    for i in range(0, len(evs), args.batch):
        encoder.encode(evs[i : i + args.batch])
    encode_us = (cpu() - c0) / len(evs) * 1e6

    # Every phase on a fresh server (see Phase). The naive loop indexes only --naive documents, so its
    # store stays the smallest of all: a/c is a conservative figure. The baseline runs before and after
    # the exporter, and its mean is the comparison.
    with tempfile.TemporaryDirectory() as tmp:
        with Phase(Path(tmp), "c") as c_run:
            wall_c = run_naive(c_run.es, make_events(args.naive, "c"))
        with Phase(Path(tmp), "b1") as b_run:
            wall_b1 = run_baseline(b_run.es, make_events(args.events, "b1"), args.batch)
        with Phase(Path(tmp), "a") as a_run:
            wall_a, _ = run_exporter(a_run.url, evs, args.batch)
        with Phase(Path(tmp), "b2") as b2_run:
            wall_b2 = run_baseline(b2_run.es, make_events(args.events, "b2"), args.batch)
    wall_b = (wall_b1 + wall_b2) / 2

    a, b, c = args.events / wall_a, args.events / wall_b, args.naive / wall_c
    us = lambda seconds, n: seconds / n * 1e6  # noqa: E731
    ca, cb, cc = us(a_run.client_cpu, args.events), us(b_run.client_cpu, args.events), us(c_run.client_cpu, args.naive)
    sa, sb, sc = (us(a_run.server_cpu, args.events), us(b_run.server_cpu, args.events),
                  us(c_run.server_cpu, args.naive))
    print(f"events: {args.events} (naive loop: {args.naive}), bulk size {args.batch}, "
          "server: noida-db (emulator), a fresh one per phase")
    print(f"(a) exporter via delivery path : {a:9.0f} events/s")
    print(f"(b) hand-tuned bulk baseline   : {b:9.0f} events/s  (before a: {args.events / wall_b1:.0f}, "
          f"after a: {args.events / wall_b2:.0f})")
    print(f"(c) naive index() per event    : {c:9.0f} events/s")
    print(f"a/b = {a / b:.2f} (target >= 0.8)   a/c = {a / c:.1f} (target >= 5)")
    print(f"client CPU per event: (a) {ca:.1f} us (encode alone: {encode_us:.1f} us), "
          f"(b) {cb:.1f} us (documents pre-built), (c) {cc:.1f} us (documents pre-built)")
    print(f"server (noida-db) CPU per document: (a) {sa:.0f} us, (b, before a) {sb:.0f} us, (c) {sc:.0f} us")
    print(f"client + server CPU per event: (a) {ca + sa:.0f} us, (c) {cc + sc:.0f} us -> c/a = "
          f"{(cc + sc) / (ca + sa):.1f}; a/c cannot exceed {(cc + sc) / sa:.1f} on this server "
          "(c's total cost over the server's own cost per document in bulk)")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({
            "events": args.events, "exporter_eps": round(a), "raw_bulk_eps": round(b), "naive_eps": round(c),
            "ratio_raw": round(a / b, 2), "ratio_naive": round(a / c, 2), "exporter_client_us": round(ca, 1),
            "raw_client_us": round(cb, 1), "naive_client_us": round(cc, 1), "encode_us": round(encode_us, 1),
            "server_us_exporter": round(sa), "server_us_raw": round(sb)}, indent=1))


if __name__ == "__main__":
    main()
