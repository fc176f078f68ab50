"""End-to-end, real kernel: policies on the running sensors. A post policy on a watched "secret" file,
an ignore policy pushed down into the process sensor's kernel filter, a sigkill policy that kills a
reader before it reads a byte, and policies reloaded by SIGHUP in a running `siemhub run` (a broken file
is rejected, the running set stays)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from tests.conftest import bpf_unavailable, running_agent

pytestmark = pytest.mark.bpf

CHILD = r"""
import sys
data = open(sys.argv[1]).read()
sys.stdout.write(data)
sys.stdout.flush()
"""


@pytest.fixture(scope="module")
def policy_agent(tmp_path_factory):
    base = tmp_path_factory.mktemp("policies")
    secret = base / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    guarded = base / "guarded"
    guarded.mkdir()
    (guarded / "key").write_text("PRIVATE-KEY\n")
    quiet = base / "quiet-true"
    shutil.copy("/bin/true", quiet)
    pol = base / "pol"
    pol.mkdir()
    (pol / "secret.yaml").write_text(f"""
name: secret-read
description: reading the test secret
rules:
  - name: read
    match: {{paths: ["{secret}"], operations: [open_read]}}
    action: post
    severity: high
""")
    (pol / "quiet.yaml").write_text(f"""
name: quiet
description: drop the quiet binary in the kernel
rules:
  - match: {{binaries: ["{quiet}"]}}
    action: ignore
""")
    (pol / "guard.yaml").write_text(f"""
name: guard
description: nobody reads the guarded directory
rules:
  - name: no-read
    match: {{paths: ["{guarded}/"], operations: [open_read]}}
    action: sigkill
""")
    for running in running_agent(base, f"""  process: {{poll_interval: 0.05}}
  file: {{poll_interval: 0.05, watch: ["{base}/unrelated/"]}}""",
                                 f'policies: {{library: false, paths: ["{pol}"]}}'):
        running.paths = {"secret": secret, "guarded": guarded, "quiet": quiet}
        yield running


def test_post_policy_on_a_secret_file(policy_agent):
    secret = policy_agent.paths["secret"]
    p = subprocess.run(["/bin/cat", str(secret)], capture_output=True, check=True)
    assert p.stdout == b"TOP-SECRET\n"
    pa = policy_agent.wait_for(lambda e: e["type"] == "policy_action" and e["policy"]["policy"] == "secret-read")[0]
    assert pa["severity"] == "high" and pa["policy"]["rule"] == "read" and pa["policy"]["action"] == "post"
    assert pa["file"]["path"] == str(secret)
    assert pa["process"]["binary"].endswith("/cat") and pa["process"]["args"] == ["/bin/cat", str(secret)]
    assert pa["parent"]["pid"] == os.getpid()
    fa = policy_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == str(secret))[0]
    assert fa["severity"] == "high" and "policy:secret-read" in fa["tags"]


def test_ignore_policy_drops_execs_in_the_kernel(policy_agent):
    quiet = policy_agent.paths["quiet"]
    sensor = next(s for s in policy_agent.agent.sensors if s.name == "process")
    assert str(quiet) in sensor.filters["binaries"]
    sensor.check_counters()
    before = policy_agent.agent.metrics.value("siemhub_kernel_filtered_events_total", sensor="process")
    hidden = f"hidden-{time.monotonic_ns()}"
    subprocess.run([str(quiet), hidden], check=True)
    shown = f"shown-{time.monotonic_ns()}"
    subprocess.run(["/bin/true", shown], check=True)
    policy_agent.wait_for(lambda e: shown in (e.get("process") or {}).get("args", []))
    time.sleep(0.3)
    assert not [e for e in policy_agent.events() if hidden in (e.get("process") or {}).get("args", [])]
    sensor.check_counters()
    after = policy_agent.agent.metrics.value("siemhub_kernel_filtered_events_total", sensor="process")
    assert after >= before + 1
    assert policy_agent.agent.pipeline.policies.counters()["ignored"] == 0  # nothing reached user space


def test_sigkill_policy_kills_before_a_byte_is_read(policy_agent):
    key = policy_agent.paths["guarded"] / "key"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(key)], capture_output=True, timeout=30)
    assert proc.returncode == -9, proc
    assert proc.stdout == b""
    pa = policy_agent.wait_for(lambda e: e["type"] == "policy_action" and e["file"]["path"] == str(key))[0]
    assert pa["policy"]["policy"] == "guard" and pa["policy"]["rule"] == "no-read"
    assert pa["policy"]["action"] == "sigkill" and pa["policy"]["enforced"] is True
    assert pa["parent"]["pid"] == os.getpid()


def test_sighup_reloads_policies_and_rejects_a_broken_file(tmp_path):
    if os.geteuid() != 0:
        bpf_unavailable("not root")
    out = tmp_path / "events.jsonl"
    pol = tmp_path / "pol"
    pol.mkdir()
    one, two = tmp_path / "one-true", tmp_path / "two-true"
    shutil.copy("/bin/true", one)
    shutil.copy("/bin/true", two)

    def policy_file(name, exe):
        (pol / f"{name}.yaml").write_text(f"name: {name}\ndescription: d\nrules:\n"
                                          f"  - match: {{types: [process_exec], binaries: ['{exe}']}}\n"
                                          "    action: post\n    severity: high\n")
    policy_file("p-one", one)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"sensors:\n  process: {{poll_interval: 0.05}}\n"
                   f"exporters:\n  out: {{type: file, path: {out}, fsync: never, batch: {{max_wait: 0.05}}}}\n"
                   f"routes:\n  - {{name: all, to: [out]}}\nmetrics: {{enabled: false}}\nstatus_interval: 0\n"
                   f"policies: {{library: false, paths: [{pol}]}}\n")

    def actions(exe, mark):
        if not out.exists():
            return []
        return [e["policy"]["policy"] for e in map(msgspec.json.decode, out.read_bytes().splitlines())
                if e["type"] == "policy_action" and mark in e["process"].get("args", [])]

    def fires(exe, timeout=15.0):
        """Run exe until its exec is seen (policy_action or not); returns the policies that fired."""
        mark = f"m-{time.monotonic_ns()}"
        deadline = time.monotonic() + timeout
        subprocess.run([str(exe), mark])
        while time.monotonic() < deadline:
            time.sleep(0.2)
            seen = out.exists() and mark.encode() in out.read_bytes()
            if seen:
                time.sleep(0.2)
                return actions(exe, mark)
        raise AssertionError(f"{exe} {mark} never showed up")

    agent = subprocess.Popen([str(Path(sys.executable).with_name("siemhub")), "run", "-c", str(cfg)],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            subprocess.run(["/bin/true"])
            time.sleep(0.2)
        assert fires(one) == ["p-one"] and fires(two) == []
        (pol / "p-one.yaml").unlink()
        policy_file("p-two", two)
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert fires(two) == ["p-two"] and fires(one) == []
        (pol / "p-three.yaml").write_text("name: p-three\ndescription: d\nrules:\n  - match: {binaries: [x]}\n"
                                          "    action: post\n    severity: urgent\n")
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert agent.poll() is None
        assert fires(two) == ["p-two"]  # the old set keeps working
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "reload: applied" in err
    assert f"reload rejected: {pol}/p-three.yaml:6: rules[0].severity:" in err, err
    assert "policies: 1 policies" in err and ("block: unavailable" in err or "block: available" in err)


# --- reload: all sensors or none -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_sensor_agent(tmp_path_factory):
    yield from running_agent(tmp_path_factory.mktemp("staged"), """  process: {poll_interval: 0.05}
  network: {poll_interval: 0.05}""")


def _kernel_filters(process, network):
    """What the two sensors' kernel maps hold: process binaries (inode keys), network ignored ports."""
    from siemhub.collector.kernel.maps import u32

    ports = network._bpf.maps["ignore_ports"]
    return (sorted(process._bpf.maps["ignore_exe"].keys()),
            [p for p in (4444, 5555) if (ports.lookup(u32(p)) or b"\0")[0]],
            network._bpf.maps["filters_on"].lookup(u32(0)))


@pytest.mark.parametrize("refuses", ["check_filters", "set_filters"])
def test_reload_refused_by_the_second_sensor_leaves_the_first_unchanged(two_sensor_agent, tmp_path, monkeypatch,
                                                                        refuses):
    """The process sensor comes first and accepts its new ignore list; the network sensor refuses its own,
    either when asked to check it (nothing is applied) or only while applying it (the process sensor's
    new list is rolled back). Either way the process sensor's kernel filter is what it was, and an exec
    of the binary the refused reload would have ignored is still reported."""
    from siemhub.collector import config, policy

    sensors = two_sensor_agent.agent.sensors
    names = [s.name for s in sensors]
    assert names.index("process") < names.index("network")
    process, network = sensors[names.index("process")], sensors[names.index("network")]
    quiet = tmp_path / "would-be-quiet"
    shutil.copy("/bin/true", quiet)
    new = config.parse(f"""
sensors:
  process: {{ignore: {{binaries: ["{quiet}"]}}}}
  network: {{ignore: {{ports: [4444, 5555]}}}}
exporters: {{out: {{type: stdout}}}}
routes: [{{name: all, to: [out]}}]
""", "<reload>")
    before = _kernel_filters(process, network)
    assert before[1] == []

    def refuse(*_a, **_k):
        raise ValueError("refused for the test")
    monkeypatch.setattr(network, refuses, refuse)
    with pytest.raises(ValueError, match="refused for the test") as refused:
        policy.install(sensors, new.agent, None)
    assert _kernel_filters(process, network) == before
    assert process.filters["binaries"] == []
    assert str(refused.value).startswith("sensor network: ")

    mark = f"still-seen-{time.monotonic_ns()}"
    subprocess.run([str(quiet), mark], check=True)
    two_sensor_agent.wait_for(lambda e: e["type"] == "process_exec" and mark in e["process"].get("args", []),
                              what="the exec the refused reload would have dropped")

    monkeypatch.undo()  # the same settings, accepted by both: applied to both
    policy.install(sensors, new.agent, None)
    try:
        after = _kernel_filters(process, network)
        assert len(after[0]) == len(before[0]) + 1 and after[1] == [4444, 5555]
    finally:
        policy.install(sensors, two_sensor_agent.agent.cfg.agent, None)
    assert _kernel_filters(process, network)[:2] == before[:2]


def test_dns_names_policy_on_a_real_query(tmp_path):
    """A dns_names rule fires on the query a process sends (the network sensor's dns_query event), for the
    name and the names below it only."""
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "dns.yaml").write_text("name: paste-sites\ndescription: d\nrules:\n"
                                  "  - {name: paste, match: {dns_names: [paste.siemhub.test]}, action: post, "
                                  "severity: high}\n")
    send = ("import socket, struct, sys\n"
            "for i, name in enumerate(sys.argv[1:]):\n"
            "    q = struct.pack('>6H', 100 + i, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(p)]) + p.encode()"
            " for p in name.split('.')) + b'\\0\\0\\x01\\0\\x01'\n"
            "    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(q, ('127.0.0.1', 53))\n")
    for running in running_agent(tmp_path, "  process: {poll_interval: 0.05}\n  network: {poll_interval: 0.05}",
                                 f"policies: {{library: false, paths: [{pol}]}}"):
        p = subprocess.run([sys.executable, "-c", send, "x.paste.siemhub.test", "notpaste.siemhub.test",
                            "paste.siemhub.test.evil"], timeout=10)
        assert p.returncode == 0
        qs = running.wait_for(lambda e: e["type"] == "dns_query" and e["network"]["dns"]["id"] == 102,
                              what="the last query")
        events = [e for e in running.events() if e.get("process", {}).get("pid") == qs[0]["process"]["pid"]]
        hit = [e for e in events if e["type"] == "dns_query" and e["network"]["dns"]["id"] == 100]
        assert len(hit) == 1 and hit[0]["severity"] == "high" and "policy:paste-sites" in hit[0]["tags"]
        (action,) = [e for e in events if e["type"] == "policy_action"]
        assert action["policy"]["rule"] == "paste" and action["network"]["dns_query"] == "x.paste.siemhub.test"
        assert not [e for e in events if e["type"] == "dns_query" and e["network"]["dns"]["id"] != 100
                    and "policy:paste-sites" in e.get("tags", [])]


def test_proc_sys_writes_caught_by_the_library_reads_never_reported(tmp_path):
    """The library's container-escape rule on writes under /proc/sys works with the file sensor's
    defaults: the engine watches /proc/sys/ for changes only, so a sysctl write is reported (and the
    policy fires) while reads of /proc/sys never reach user space."""
    host = open("/proc/sys/kernel/hostname").read().strip()
    for running in running_agent(tmp_path, "  process: {poll_interval: 0.05}\n  file: {poll_interval: 0.05}",
                                 "policies: {}"):
        mark = f"sysctl-{time.monotonic_ns()}"
        subprocess.run(["/bin/cat", "/proc/sys/kernel/ostype", "/proc/sys/kernel/hostname"], check=True,
                       capture_output=True)
        # writing the current hostname back changes nothing on the host
        subprocess.run(["/bin/sh", "-c", f"echo {host} > /proc/sys/kernel/hostname # {mark}"], check=True)
        pa = running.wait_for(lambda e: e["type"] == "policy_action" and e["policy"]["policy"] == "container-escape"
                              and mark in " ".join(e["process"].get("args", [])))[0]
        assert pa["file"]["path"] == "/proc/sys/kernel/hostname" and pa["severity"] == "high"
        time.sleep(0.5)
        reads = [e for e in running.events() if e["type"] == "file_access"
                 and e["file"]["path"].startswith("/proc/sys/") and e["process"]["binary"] == "/bin/cat"]
        assert reads == []
        break
