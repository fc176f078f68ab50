"""rotel, an OpenTelemetry collector written in Rust (PyPI `rotel`, binary `rotel/rotel-agent`; needs
Debian's libpython3.11), on free 127.0.0.1 ports: OTLP/gRPC and OTLP/HTTP receivers.

What rotel receives is exported either to Kafka topics as OTLP protobuf (`kafka=` a Tansu bootstrap;
logs to `topic`, metrics to `<topic>_metrics`; `read_log_records` reads logs back, one
ExportLogsServiceRequest per message) or nowhere (blackhole, benchmarks).
`stop()` sends SIGTERM (rotel drains its pipeline to the exporter first) and `start()` again keeps the
ports, so clients reconnect to the same endpoints.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def rotel_binary() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Rotel:
    def __init__(self, workdir: str | os.PathLike, kafka: str | None = None, topic: str = "otlp_logs",
                 grpc_port: int | None = None, http_port: int | None = None) -> None:
        binary = rotel_binary()
        if binary is None:
            raise RuntimeError("the rotel-agent binary is missing: install the 'servers' extra (rotel)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kafka, self.topic = kafka, topic
        self.metrics_topic = f"{topic}_metrics"  # what rotel receives on the metrics signal
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.grpc_endpoint = f"http://127.0.0.1:{self.grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{self.http_port}"
        self.log_path = self.workdir / "rotel.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [str(self.binary), "start",
               "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
               "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
               "--pid-file", str(self.workdir / "rotel.pid")]
        if self.kafka:
            cmd += ["--exporter", "kafka", "--kafka-exporter-brokers", self.kafka,
                    "--kafka-exporter-logs-topic", self.topic, "--kafka-exporter-format", "protobuf",
                    "--kafka-exporter-metrics-topic", self.metrics_topic, "--metrics-batch-timeout", "50ms",
                    "--logs-batch-timeout", "50ms",
                    # rotel puts a whole batch into one Kafka message: 8,192 records of ~600 bytes
                    # exceed the broker's 1 MB message limit and rotel drops them. 1,024 stay near
                    # 600 KB; smaller batches than a request (512 records) make rotel drop the request
                    # ("Too many batch items split").
                    "--logs-batch-max-size", "1024"]
        else:
            cmd += ["--exporter", "blackhole"]
        return cmd

    def start(self, timeout: float = 15.0) -> Rotel:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rotel exited with {self.proc.returncode}; its log:\n{self.log_tail()}")
            if _listening(self.grpc_port) and _listening(self.http_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rotel did not listen on {self.grpc_port}/{self.http_port} within {timeout}s:\n"
                           f"{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def export_errors(self) -> list[str]:
        """rotel's own export failures (to Kafka): a loss there is the test setup's, not siemhub's."""
        return [line for line in self.log_tail(10**7).splitlines()
                if "Failed to send" in line or "dropping data" in line]

    def __enter__(self) -> Rotel:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def read_log_records(bootstrap: str, topic: str, want: int, timeout: float = 60.0,
                     stop_when=None) -> list[tuple]:
    """Every LogRecord in the topic, as (resource attributes, scope, record) tuples, decoding each Kafka
    message as the ExportLogsServiceRequest rotel wrote. Reads until `want` records were seen (or
    `stop_when(records)` is true) and the topic stays quiet for a second, or `timeout`."""
    from confluent_kafka import Consumer
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    c.subscribe([topic])
    out: list[tuple] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                done = stop_when(out) if stop_when is not None else len(out) >= want
                if done and time.monotonic() - quiet_since > 1.0:
                    break
                continue
            quiet_since = time.monotonic()
            req = ExportLogsServiceRequest.FromString(msg.value())
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        out.append((rl.resource, sl.scope, r))
    finally:
        c.close()
    return out
