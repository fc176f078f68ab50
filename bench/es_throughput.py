"""Elasticsearch exporter throughput, side by side in one run against noida-db on 127.0.0.1.

  (a) the exporter: canonical events -> ECS -> bulk, through the real delivery path (ExporterRunner)
  (b) a hand-tuned baseline: pre-built ECS documents, pre-serialised NDJSON, es.bulk() with the same
      client settings (gzip, chunks of the same size)
  (c) a naive loop: es.index() per event (on a slice of the events; it is slow)

noida-db is an emulator and is the bottleneck (~5k docs/s on the project's machines), so the
end-to-end rates mostly measure it; the exporter's own CPU per event (this process' CPU time during
(a), and encode alone) is reported separately. Targets: a >= 0.8 b, a >= 5 c.

    .venv/bin/python bench/es_throughput.py [--events 20000] [--batch 2000] [--naive 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from siemhub.collector.delivery import ExporterRunner  # noqa: E402
from siemhub.collector.event import EVENT_BASE, Event, Node, Process  # noqa: E402
from siemhub.collector.metrics import Metrics  # noqa: E402
from siemhub.exporters.elasticsearch import ElasticsearchConfig, ElasticsearchExporter, index_for  # noqa: E402
from siemhub.exporters.formats import ecs  # noqa: E402
from tests.servers.noida import NoidaServer  # noqa: E402


def make_events(n: int, prefix: str) -> list[Event]:
    node = Node(name="bench-node")
    parent = Process(exec_id="cGFyZW50", pid=100, ppid=1, uid=0, euid=0, gid=0, egid=0, binary="/usr/bin/bash",
                     args=["bash"], cwd="/root", comm="bash", start_time="2026-11-25T22:00:00.000000000Z")
    out = []
    for i in range(n):
        p = Process(exec_id=f"ZXhlYy{i:08x}", pid=1000 + i % 30000, tid=1000 + i % 30000, ppid=100,
                    parent_exec_id="cGFyZW50", uid=1000, euid=1000, gid=1000, egid=1000, binary="/usr/bin/curl",
                    args=["curl", "-s", f"https://example.com/{i}"], cwd="/home/alice", comm="curl",
                    start_time="2026-11-25T22:21:27.507097186Z", cgroup_id=4096)
        out.append(Event(id=f"{prefix}-{i:x}", time="2026-11-25T22:21:27.507097186Z", type="process_exec",
                         node=node, process=p, parent=parent, **EVENT_BASE))
    return out


def cpu() -> float:
    return time.process_time()


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--naive", type=int, default=1000, help="events for the per-event index() loop")
    args = ap.parse_args()
    from elasticsearch import Elasticsearch

    with tempfile.TemporaryDirectory() as tmp, NoidaServer(Path(tmp) / "data") as server:
        es = Elasticsearch(server.url, http_compress=True, request_timeout=60, max_retries=0)
        # templates first (the exporter's setup), so every run indexes into mapped data streams
        warm = ElasticsearchExporter("warm", ElasticsearchConfig.model_validate(
            {"type": "elasticsearch", "hosts": [server.url], "namespace": "warm"}))
        warm.start()
        warm.send(warm.encode(make_events(100, "warm")))
        warm.close()

        evs = make_events(args.events, "a")
        c0 = cpu()
        ExporterEncode = ElasticsearchExporter("enc", ElasticsearchConfig.model_validate(
            {"type": "elasticsearch", "hosts": [server.url], "setup": False}))
        for i in range(0, len(evs), args.batch):
            ExporterEncode.encode(evs[i : i + args.batch])
        encode_us = (cpu() - c0) / len(evs) * 1e6

        # The emulator slows down as it holds more documents: the baseline runs before and after the
        # exporter and its mean is the comparison, so neither side gets the emptier server.
        # The naive loop runs first, on the emptiest server: a/c is a conservative figure.
        c0 = cpu()
        wall_c = run_naive(es, make_events(args.naive, "c"))
        cpu_c = cpu() - c0
        c0 = cpu()
        wall_b1 = run_baseline(es, make_events(args.events, "b1"), args.batch)
        cpu_b = cpu() - c0
        wall_a, cpu_a = run_exporter(server.url, evs, args.batch)
        wall_b2 = run_baseline(es, make_events(args.events, "b2"), args.batch)
        wall_b = (wall_b1 + wall_b2) / 2
        es.close()

    a, b, c = args.events / wall_a, args.events / wall_b, args.naive / wall_c
    print(f"events: {args.events} (naive loop: {args.naive}), bulk size {args.batch}, server: noida-db (emulator)")
    print(f"(a) exporter via delivery path : {a:9.0f} events/s")
    print(f"(b) hand-tuned bulk baseline   : {b:9.0f} events/s  (before a: {args.events / wall_b1:.0f}, "
          f"after a: {args.events / wall_b2:.0f})")
    print(f"(c) naive index() per event    : {c:9.0f} events/s")
    print(f"a/b = {a / b:.2f} (target >= 0.8)   a/c = {a / c:.1f} (target >= 5)")
    print(f"exporter CPU in this process during (a): {cpu_a / args.events * 1e6:.1f} us/event "
          f"(encode alone: {encode_us:.1f} us/event)")
    print(f"client CPU per event: (b) {cpu_b / args.events * 1e6:.1f} us (documents pre-built), "
          f"(c) {cpu_c / args.naive * 1e6:.1f} us (documents pre-built)")


if __name__ == "__main__":
    main()
