"""bpf(2) map access without bcc, and the out-of-process loader, against the running kernel."""

from __future__ import annotations

import os

import pytest

from siemhub.collector.kernel import maps as bpfmaps


def test_possible_cpus_matches_sysfs():
    assert bpfmaps.POSSIBLE_CPUS >= os.cpu_count() >= 1


@pytest.mark.bpf
def test_agent_process_never_maps_bcc(tmp_path):
    """bcc links all of LLVM (about 150 MB): it must live only in the short-lived loader child."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    if os.geteuid() != 0:
        from tests.conftest import bpf_unavailable
        bpf_unavailable("not root")
    cfg = tmp_path / "a.yaml"
    out = tmp_path / "e.jsonl"
    cfg.write_text(f"sensors: {{process: {{}}}}\nexporters: {{out: {{type: file, path: {out}}}}}\n"
                   "routes: [{name: all, to: [out]}]\nmetrics: {enabled: false}\n")
    agent = subprocess.Popen([str(Path(sys.executable).with_name("siemhub")), "run", "-c", str(cfg), "--duration", "6"],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ready once a probe exec is in the output
            subprocess.run(["/bin/true", "probe"])
            if out.exists() and b"probe" in out.read_bytes():
                break
            time.sleep(0.3)
        maps = Path(f"/proc/{agent.pid}/maps").read_text()
        rss_kb = int(Path(f"/proc/{agent.pid}/status").read_text().split("VmRSS:")[1].split()[0])
    finally:
        _, err = agent.communicate(timeout=30)
    assert out.exists() and b"probe" in out.read_bytes(), err
    assert "libbcc" not in maps and "LLVM" not in maps
    assert rss_kb < 100 * 1024, f"agent RSS {rss_kb} kB"


@pytest.mark.bpf
def test_maps_read_and_written_through_bpf_syscalls(bpf_agent):
    sensor = next(s for s in bpf_agent.agent.sensors if s.name == "process")
    loaded = sensor._bpf
    assert loaded.attachments and all(fd >= 0 for fd in loaded.attachments)
    lost = loaded.maps["lost"]
    assert lost.percpu and lost.value_size == 8
    assert len(lost.lookup_percpu_u64((1).to_bytes(4, "little"))) == bpfmaps.POSSIBLE_CPUS
    cg = loaded.maps["ignore_cgroup"]
    key = (123456789).to_bytes(8, "little")
    cg.update(key, b"\x01")
    try:
        assert cg.lookup(key) == b"\x01" and key in cg.keys()
    finally:
        assert cg.delete(key)
    assert cg.lookup(key) is None and not cg.delete(key)
    with pytest.raises(ValueError):
        cg.update(b"short", b"\x01")


@pytest.mark.bpf
def test_run_time_stats_are_held_by_a_descriptor_and_leave_the_sysctl_alone():
    """The benchmarks' statistics switch: a bpf(BPF_ENABLE_STATS) descriptor, not the sysctl, so one
    benchmark never turns off another's statistics (bench/measure.py)."""
    if os.geteuid() != 0:
        from tests.conftest import bpf_unavailable
        bpf_unavailable("not root")
    sysctl = "/proc/sys/kernel/bpf_stats_enabled"
    before = open(sysctl).read()
    fd = bpfmaps.enable_run_time_stats()
    try:
        assert fd >= 0 and os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-stats"
        assert open(sysctl).read() == before
    finally:
        os.close(fd)
    assert open(sysctl).read() == before
