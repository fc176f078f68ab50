"""End-to-end, real kernel: in-kernel ignore lists by executable and by cgroup, changed at run time."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf


def _sensor(agent):
    return next(s for s in agent.agent.sensors if s.name == "process")


def _mark(name):
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


def _seen(agent, mark, settle=0.6):
    time.sleep(settle)  # the ring buffer is polled every 50 ms here: give it time to show up
    return [e for e in agent.events() if mark in (e.get("process") or {}).get("args", [])]


def test_ignored_binary_never_reaches_user_space_and_filters_change_at_run_time(bpf_agent, tmp_path):
    exe = tmp_path / "quiet-true"
    shutil.copy("/bin/true", exe)
    sensor = _sensor(bpf_agent)
    before = sensor.filtered
    sensor.set_filters([str(exe)], [])
    try:
        hidden = _mark("hidden")
        subprocess.run([str(exe), hidden], check=True)
        shown = _mark("shown")
        subprocess.run(["/bin/true", shown], check=True)  # a different inode: still reported
        assert bpf_agent.wait_for(lambda e: shown in (e.get("process") or {}).get("args", []))
        assert _seen(bpf_agent, hidden) == []  # neither the exec nor its exit
        sensor.check_counters()
        assert sensor.filtered == before + 1
    finally:
        sensor.set_filters([], [])
    again = _mark("again")
    subprocess.run([str(exe), again], check=True)
    types = {e["type"] for e in bpf_agent.wait_for(lambda e: again in (e.get("process") or {}).get("args", []))}
    time.sleep(0.3)
    types |= {e["type"] for e in _seen(bpf_agent, again, settle=0)}
    assert types == {"process_exec", "process_exit"}


def test_ignored_cgroup(bpf_agent):
    root = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() else Path("/sys/fs/cgroup")
    group = root / f"siemhub-quiet-{os.getpid()}"
    group.mkdir()
    sensor = _sensor(bpf_agent)
    try:
        sensor.set_filters([], [str(group)])
        hidden = _mark("cg-hidden")
        subprocess.run(["/bin/sh", "-c", f"echo $$ > {group}/cgroup.procs && exec /bin/true {hidden}"], check=True)
        shown = _mark("cg-shown")
        subprocess.run(["/bin/true", shown], check=True)
        assert bpf_agent.wait_for(lambda e: shown in (e.get("process") or {}).get("args", []))
        assert _seen(bpf_agent, hidden) == []
    finally:
        sensor.set_filters([], [])
        group.rmdir()


def test_unresolvable_filter_is_rejected_and_the_old_set_stays(bpf_agent, tmp_path):
    sensor = _sensor(bpf_agent)
    exe = tmp_path / "still-quiet"
    shutil.copy("/bin/true", exe)
    sensor.set_filters([str(exe)], [])
    try:
        with pytest.raises(ValueError, match="does-not-exist"):
            sensor.set_filters([str(tmp_path / "does-not-exist")], [])
        hidden = _mark("kept")
        subprocess.run([str(exe), hidden], check=True)
        assert _seen(bpf_agent, hidden) == []
        assert sensor.filters["binaries"] == [str(exe)]
    finally:
        sensor.set_filters([], [])


def test_sighup_reloads_ignore_lists_and_rejects_a_broken_file(tmp_path):
    import signal
    import sys

    import msgspec

    if os.geteuid() != 0:
        from tests.conftest import bpf_unavailable
        bpf_unavailable("not root")
    out = tmp_path / "events.jsonl"
    exe = tmp_path / "hup-true"
    shutil.copy("/bin/true", exe)
    cfg = tmp_path / "agent.yaml"

    def write(ignore: str) -> None:
        cfg.write_text(
            f"sensors:\n  process: {{poll_interval: 0.05, ignore: {{binaries: [{ignore}]}}}}\n"
            f"exporters:\n  out: {{type: file, path: {out}, fsync: never, batch: {{max_wait: 0.05}}}}\n"
            "routes:\n  - {name: all, to: [out]}\nmetrics: {enabled: false}\nstatus_interval: 0\n")

    def execs(mark):
        if not out.exists():
            return []
        return [e for e in map(msgspec.json.decode, out.read_bytes().splitlines())
                if e["type"] == "process_exec" and mark in e["process"].get("args", [])]

    def wait_for(mark, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subprocess.run(["/bin/true", mark])
            if execs(mark):
                return
            time.sleep(0.2)
        raise AssertionError(f"{mark} never showed up")

    write("")
    agent = subprocess.Popen([str(Path(sys.executable).with_name("siemhub")), "run", "-c", str(cfg)],
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(_mark("ready"))
        write(str(exe))
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        hidden = _mark("hup-hidden")
        subprocess.run([str(exe), hidden], check=True)
        wait_for(_mark("after-hup"))
        assert execs(hidden) == []
        cfg.write_text("sensors: [this is not a mapping\n")
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        still = _mark("still-hidden")
        subprocess.run([str(exe), still], check=True)
        wait_for(_mark("alive"))  # the agent kept running with the old settings
        assert agent.poll() is None
        assert execs(still) == []
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "reload: applied" in err and "reload rejected" in err and "YAML syntax error" in err
