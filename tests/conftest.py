"""Shared fixtures. eBPF tests use `bpf_agent`, a real agent (process sensor -> router -> file
exporter) started once per session: compiling the BPF program takes seconds. Where eBPF cannot run,
those tests skip -- unless SIEMHUB_REQUIRE_BPF=1 (CI), where that is a failure."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import msgspec
import pytest

from siemhub.collector.sensors import BPFUnavailable, bpf_required

REPO = Path(__file__).resolve().parents[1]


def bpf_unavailable(reason: str):
    if bpf_required():
        pytest.fail(f"eBPF required (SIEMHUB_REQUIRE_BPF=1) but unavailable: {reason}")
    pytest.skip(f"eBPF unavailable: {reason}")


def server_unavailable(reason: str):
    """A test server (from the `servers` extra) or tool is missing: a skip on a developer's machine, a
    failure in CI (SIEMHUB_REQUIRE_BPF=1: there `make test` installs them, so missing means broken)."""
    if bpf_required():
        pytest.fail(f"required in CI (SIEMHUB_REQUIRE_BPF=1) but missing: {reason}")
    pytest.skip(reason)


class RunningAgent:
    """An agent running in a background thread, writing native JSON lines to `path`."""

    def __init__(self, path: Path, agent) -> None:
        self.path = path
        self.agent = agent
        self._offset = 0
        self._seen: list[dict] = []

    def events(self) -> list[dict]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        self._seen.extend(msgspec.json.decode(line) for line in data[:end].split(b"\n") if line)
        return self._seen

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "events") -> list[dict]:
        """Events matching predicate, waiting until at least one shows up."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if found or time.monotonic() > deadline:
                if not found:
                    raise AssertionError(f"no {what} within {timeout}s")
                return found
            time.sleep(0.05)


@contextlib.contextmanager
def process_sensor_held(agent: RunningAgent):
    """Inside the block the agent's process sensor reads nothing (each poll waits), as on a loaded
    machine where it falls behind the other sensors; it reads everything once the block ends."""
    sensor = next(s for s in agent.agent.sensors if s.name == "process")
    poll, go = sensor.poll, threading.Event()

    def held(timeout):
        go.wait(5)
        return poll(timeout)

    sensor.poll = held
    try:
        time.sleep(0.2)  # a poll that began before is over
        yield
    finally:
        del sensor.poll
        go.set()


# The agent sees every process of the machine: on a busy machine (exec storms of benchmarks beside the
# tests) its file passed the exporter's default 100 MB and rotated, and RunningAgent's offset then pointed
# into the middle of a line of the new file. A test agent's file never rotates.
NEVER_ROTATE = 1 << 40


def running_agent(base: Path, sensors: str, extra: str = ""):
    """Generator for fixtures: a real agent (these sensors, YAML under `sensors:`) writing native JSON
    lines to base/events.jsonl, evicting its cache like the agent's main loop; yields a RunningAgent and
    shuts the agent down after. eBPF missing: skip, or fail under SIEMHUB_REQUIRE_BPF=1."""
    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    from siemhub.collector import config
    from siemhub.collector.agent import Agent

    out = base / "events.jsonl"
    text = f"""
sensors:
{sensors}
exporters:
  out: {{type: file, path: "{out}", format: native, fsync: never, rotate_bytes: {NEVER_ROTATE},
         batch: {{max_events: 64, max_wait: 0.05}}}}
routes:
  - {{name: all, to: [out]}}
metrics: {{enabled: false}}
status_interval: 0
{extra}
"""
    agent = Agent(config.parse(text, "<test agent>"))
    try:
        agent.start()
    except BPFUnavailable as exc:
        agent.shutdown()
        bpf_unavailable(str(exc))
    stop = threading.Event()

    def housekeeping():
        while not stop.wait(0.5):
            agent.cache.evict()

    threading.Thread(target=housekeeping, daemon=True).start()
    try:
        yield RunningAgent(out, agent)
    finally:
        stop.set()
        agent.shutdown()


@pytest.fixture(scope="session")
def bpf_agent(tmp_path_factory):
    if os.geteuid() != 0:
        bpf_unavailable("tests are not running as root")
    import subprocess

    # A process that exists before the agent starts: tests check it is known (flag procfs).
    pre = subprocess.Popen(["/bin/sh", "-c", "read line; exec /bin/true pre-existing-child"], stdin=subprocess.PIPE)
    try:
        for running in running_agent(tmp_path_factory.mktemp("agent"), "  process: {poll_interval: 0.05, ancestors: 4}"):
            running.pre_existing = pre
            yield running
    finally:
        pre.kill()
