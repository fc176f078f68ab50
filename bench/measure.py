"""What every benchmark measures the same way: CPU time of a process (from /proc) and the in-kernel
run time of the BPF programs an agent attached (bpf_run_time_stats, bpftool). Imported by the
scripts beside it (`python bench/<script>.py` puts this folder on the path)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process  # noqa: E402
from siemhub.collector.kernel.maps import enable_run_time_stats  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_path(stat_path: str) -> float:
    """user + system CPU seconds from a /proc/<pid>[/task/<tid>]/stat file."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu_split(stat_path: str) -> tuple[float, float]:
    """(user, system) CPU seconds from a /proc/<pid>[/task/<tid>]/stat file."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid: int) -> float:
    return proc_cpu_path(f"/proc/{pid}/stat")


@contextlib.contextmanager
def bpf_run_time_stats():
    """BPF programs count their run time (run_time_ns, run_cnt) while this is open: a
    bpf(BPF_ENABLE_STATS) descriptor (collector/kernel/maps.py), not the kernel.bpf_stats_enabled sysctl, so
    it never turns off what another benchmark or session turned on, nor is turned off by them."""
    fd = enable_run_time_stats()
    try:
        yield
    finally:
        os.close(fd)


def bpf_stats(agent_pid: int) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) per tracepoint the agent holds; `bpftool perf show` maps the agent's
    attachments to program ids (names are truncated to 15 characters, so they cannot be used)."""
    attached = json.loads(subprocess.run(["bpftool", "-j", "perf", "show"], capture_output=True, text=True,
                                         check=True).stdout)
    ids = {a["prog_id"]: a["tracepoint"] for a in attached if a.get("pid") == agent_pid and "tracepoint" in a}
    progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    out: dict[str, tuple[int, int]] = {}
    for p in progs:
        name = ids.get(p["id"])
        if name is not None:
            rt, rc = out.get(name, (0, 0))
            out[name] = (rt + p.get("run_time_ns", 0), rc + p.get("run_cnt", 0))  # one tracepoint, several sensors
    return out


def write_agent_config(tmp: Path, sensors: str) -> tuple[Path, Path]:
    """The benchmarks' agent: these sensors (lines under `sensors:`), every event to tmp/events.jsonl as
    native JSON (never rotated, never fsynced), no metrics, no status events. Returns (config, output)."""
    out, cfg = tmp / "events.jsonl", tmp / "bench.yaml"
    cfg.write_text(
        f"sensors:\n{sensors}\n"
        f"exporters:\n  out: {{type: file, path: {out}, format: native, fsync: never, rotate_bytes: {1 << 40}}}\n"
        "routes:\n  - {name: all, to: [out]}\nmetrics: {enabled: false}\nstatus_interval: 0\n"
    )
    return cfg, out


def clean_up(tmp: Path, agent) -> None:
    """Remove the benchmark's files and show the end of the (stopped) agent's stderr."""
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    err = agent.stderr.read() if agent is not None and agent.stderr else ""
    if err.strip():
        print("agent stderr (tail):", *err.strip().splitlines()[-3:], sep="\n  ")


def stop_agent(proc) -> None:
    """SIGTERM the agent's process group (started with start_new_session), SIGKILL after 30 s."""
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def make_events(n: int, prefix: str) -> list[Event]:
    """n process_exec events of distinct curl processes under one bash (the exporter benchmarks' input)."""
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
