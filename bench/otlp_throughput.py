"""OTLP exporter throughput vs the straightforward OpenTelemetry SDK path, same events, same rotel, one run.

Starts rotel (an OpenTelemetry collector, `--exporter blackhole`) on 127.0.0.1 and sends the same
events both ways, over OTLP/gRPC by default (--protocol http for OTLP/HTTP):

- **exporter**: siemhub's path. The events go through the delivery runner (buffer, batches of 512,
  encode, submit, poll) into the OTLP exporter, which builds each batch's ExportLogsServiceRequest
  itself (exporters/formats/otel.py) and sends it on a grpcio channel (HTTP: a requests session).
- **sdk**: the SDK path as its documentation shows it: `LoggerProvider(resource)` ->
  `BatchLogRecordProcessor(OTLPLogExporter(...))`, one `Logger.emit(timestamp=..., observed_timestamp=...,
  severity_number=..., severity_text=..., body=..., attributes=..., event_name=...)` per event, with
  the same mapping (exporters.formats.otel.to_otel) computed per event, then force_flush(). Batches of
  512 as on siemhub's side; the processor's queue is as large as the run so that it drops nothing
  (its default of 2,048 would drop most events at this rate; a wrapper around the SDK exporter counts
  what it exported, and the round is valid only if that is every event).

Both sides wait until rotel answered every request. Rounds alternate to share the machine's noise.
Printed per round: events/s and the process' CPU per event (rotel runs in its own process: its CPU is
not counted). Then the ratio exporter/sdk (target >= 3), and a breakdown of CPU per event in one
thread (no I/O): the mapping alone (to_otel), siemhub's encoding (mapping + wire encoding of
whole batches), the same request built from opentelemetry-proto messages and serialized, and the
SDK's own encoder (encode_logs over SDK records, plus building those records).

    .venv/bin/python bench/otlp_throughput.py [--events 50000] [--rounds 3] [--protocol grpc|http]

The process runs with the agent's garbage-collector settings (gc.freeze, threshold 50,000).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry  # noqa: E402

from siemhub.collector import config  # noqa: E402
from siemhub.collector.delivery.runner import ExporterRunner  # noqa: E402
from siemhub.collector.core.event import EVENT_BASE, Event, Node, PodContainer, Pod, Process, Container  # noqa: E402
from siemhub.collector.metrics import Metrics  # noqa: E402
from siemhub.exporters.formats import otel  # noqa: E402
from tests.servers.rotel import Rotel  # noqa: E402

BATCH = 512


def make_events(n: int) -> list[Event]:
    """Exec events of a Kubernetes node: a few dozen pods and binaries, varying pids and arguments."""
    pods = [Pod(namespace=f"team-{k % 5}", name=f"web-{k:02d}-7d9f", uid=f"1f2e3d4c-5b6a-4978-8695-{k:012d}",
                labels={"app": f"web-{k % 7}"}, container=PodContainer(name="app", image=f"registry:5000/web:{k % 3}"),
                workload=f"Deployment/web-{k:02d}") for k in range(40)]
    binaries = ["/usr/bin/curl", "/bin/sh", "/usr/bin/python3", "/usr/local/bin/node", "/bin/ls", "/usr/bin/git"]
    out = []
    for i in range(n):
        pod = pods[i % len(pods)]
        binary = binaries[i % len(binaries)]
        p = Process(exec_id=f"ZXhlYy1ub2RlLWE6{i:012d}", pid=10_000 + i % 30_000, tid=10_000 + i % 30_000,
                    ppid=9_000 + i % 100, parent_exec_id=f"ZXhlYy1ub2RlLWE6{i % 100:012d}", uid=1000, euid=1000,
                    gid=1000, egid=1000, binary=binary,
                    args=[binary.rsplit("/", 1)[-1], "-s", f"https://example.com/{i}"], cwd="/srv/app",
                    comm=binary.rsplit("/", 1)[-1][:15], start_time="2026-11-25T22:21:27.507097186Z",
                    container=Container(id=f"{i % len(pods):064x}", runtime="containerd"), pod=pod)
        parent = Process(exec_id=p.parent_exec_id, pid=p.ppid, binary="/bin/bash", args=["bash"], comm="bash")
        out.append(Event(id=f"bench-{i}", time=f"2026-11-25T22:21:{27 + i // 100000:02d}.{i % 1000000:09d}Z",
                         type="process_exec", node=Node(name="node-a"), process=p, parent=parent, **EVENT_BASE))
    return out


def exporter_cfg(endpoint: str, protocol: str):
    return config.parse(f"""
exporters:
  o: {{type: otlp, endpoint: "{endpoint}", protocol: {protocol}, insecure: true,
      batch: {{max_events: {BATCH}, max_wait: 0.01}}, queue: {{max_events: 1000000}}}}
routes: [{{name: all, to: [o]}}]
""", "<bench>").exporters["o"]


def run_exporter(endpoint: str, protocol: str, events: list[Event]) -> tuple[float, float]:
    cls, cfg = exporter_cfg(endpoint, protocol)
    runner = ExporterRunner(cls("o", cfg), Metrics(CollectorRegistry()))
    runner.start()
    warm = make_events(BATCH)  # connected before the clock starts, as the SDK exporter is
    runner.put_many(warm, wait=True)
    while runner.finished < runner.accepted:
        time.sleep(0.001)
    n0 = runner.finished
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(events), 1000):
        runner.put_many(events[i : i + 1000], wait=True)
    while runner.finished - n0 < len(events):
        time.sleep(0.0005)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    runner.stop(time.monotonic() + 5)
    assert runner.sent == len(events) + len(warm) and runner.dropped == {}, (runner.sent, runner.dropped)
    return wall, cpu


def _sdk_provider(endpoint: str, protocol: str, n: int):
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
    from opentelemetry.sdk.resources import Resource

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(endpoint=endpoint + "/v1/logs")
    exported = [0]
    inner = exporter.export

    def export(batch):  # count what really went out
        result = inner(batch)
        if result is LogRecordExportResult.SUCCESS:
            exported[0] += len(batch)
        return result

    exporter.export = export
    resource = Resource.create(otel.resource_attributes(Node(name="node-a")))
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=BATCH,
                                                              max_queue_size=n + BATCH, schedule_delay_millis=10))
    return provider, exported


def _emit_all(logger, events: list[Event]) -> None:
    from opentelemetry._logs import SeverityNumber

    observed = time.time_ns()
    for e in events:
        r = otel.to_otel(e, observed)
        logger.emit(timestamp=r["time_unix_nano"], observed_timestamp=observed,
                    severity_number=SeverityNumber(r["severity_number"]), severity_text=r["severity_text"],
                    body=r["body"], attributes=r["attributes"], event_name=r["event_name"])


def run_sdk(endpoint: str, protocol: str, events: list[Event]) -> tuple[float, float]:
    provider, exported = _sdk_provider(endpoint, protocol, len(events))
    logger = provider.get_logger("siemhub", otel.siemhub_version())
    _emit_all(logger, make_events(BATCH))  # connected before the clock starts
    provider.force_flush(30_000)
    n0 = exported[0]
    cpu0, t0 = time.process_time(), time.perf_counter()
    _emit_all(logger, events)
    provider.force_flush(120_000)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    provider.shutdown()
    assert exported[0] - n0 == len(events), f"the SDK exported {exported[0] - n0} of {len(events)}"
    return wall, cpu


# --- CPU per event of each stage, one thread, no I/O --------------------------------------------------


def stages(events: list[Event]) -> dict[str, float]:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
    out = {}

    def timed(name, fn):
        t0 = time.thread_time()
        fn()
        out[name] = (time.thread_time() - t0) / len(events) * 1e6

    observed = time.time_ns()
    timed("mapping (to_otel)", lambda: [otel.to_otel(e, observed) for e in events])
    enc = otel.LogsEncoder()
    timed("siemhub: mapping + wire encoding", lambda: [enc.encode(b, observed) for b in batches])
    timed("proto messages: mapping + build + serialize",
          lambda: [otel.request_message(b, observed).SerializeToString() for b in batches])

    # The SDK: build its records (what emit does before the processor queues them), then its encoder.
    from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor

    held: list = []

    class Keep(LogRecordProcessor):
        def on_emit(self, log_record):
            held.append(log_record)

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(Keep())
    logger = provider.get_logger("siemhub")
    timed("sdk: mapping + emit (records built)", lambda: _emit_all(logger, events))
    records = [held[i : i + BATCH] for i in range(0, len(held), BATCH)]
    timed("sdk: encode_logs + serialize", lambda: [encode_logs(b).SerializeToString() for b in records])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    args = ap.parse_args()
    gc.collect()
    gc.freeze()  # as the agent does once it started (collector/agent.py)
    gc.set_threshold(50_000, 20, 50)
    events = make_events(args.events)
    size = len(otel.LogsEncoder().encode(events[:BATCH], 0)) / BATCH
    attrs = len(otel.attributes(events[0]))
    print(f"{args.events} events, {attrs} attributes and ~{size:.0f} bytes of OTLP protobuf each, "
          f"OTLP/{args.protocol} to rotel on 127.0.0.1, batches of {BATCH}")
    with tempfile.TemporaryDirectory() as tmp, Rotel(tmp) as rotel:
        endpoint = rotel.grpc_endpoint if args.protocol == "grpc" else rotel.http_endpoint
        res: dict[str, list[tuple[float, float]]] = {"exporter": [], "sdk": []}
        for r in range(args.rounds):
            for kind, fn in (("exporter", run_exporter), ("sdk", run_sdk)) if r % 2 == 0 else \
                    (("sdk", run_sdk), ("exporter", run_exporter)):
                wall, cpu = fn(endpoint, args.protocol, events)
                res[kind].append((args.events / wall, cpu / args.events * 1e6))
                print(f"  round {r + 1} {kind:8s}: {args.events / wall:9,.0f} events/s, "
                      f"{cpu / args.events * 1e6:6.1f} µs CPU/event (this process)", flush=True)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    pairs = [e[0] / s[0] for e, s in zip(res["exporter"], res["sdk"], strict=True)]
    print(f"median: exporter {med['exporter'][0]:,.0f}/s ({med['exporter'][1]:.1f} µs CPU/event), "
          f"sdk {med['sdk'][0]:,.0f}/s ({med['sdk'][1]:.1f} µs CPU/event)")
    print(f"ratio exporter/sdk: {med['exporter'][0] / med['sdk'][0]:.2f} of the medians "
          f"(rounds {', '.join(f'{p:.2f}' for p in pairs)}; target >= 3); "
          f"CPU per event sdk/exporter: {med['sdk'][1] / med['exporter'][1]:.2f}")
    print("CPU per event by stage (one thread, no I/O):")
    for name, us in stages(events[: min(len(events), 20_000)]).items():
        print(f"  {name:45s} {us:6.1f} µs")


if __name__ == "__main__":
    main()
