"""End-to-end: real programs under a real agent (eBPF on the running kernel -> file exporter)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

pytestmark = pytest.mark.bpf


def _execs(agent, pid=None, binary=None, arg=None):
    def pred(e):
        if e["type"] != "process_exec":
            return False
        p = e["process"]
        return ((pid is None or p["pid"] == pid) and (binary is None or p["binary"] == binary)
                and (arg is None or arg in p["args"]))
    return pred


def _exit_of(exec_id):
    return lambda e: e["type"] == "process_exit" and e["process"]["exec_id"] == exec_id


def test_shell_runs_echo(bpf_agent):
    marker = f"hello-{os.getpid()}-{time.monotonic_ns()}"
    proc = subprocess.run(["/bin/sh", "-c", f"/bin/echo {marker} world; true"], capture_output=True, check=True)
    assert proc.stdout.decode().strip() == f"{marker} world"

    sh = bpf_agent.wait_for(_execs(bpf_agent, pid=proc.args and None, arg=f"/bin/echo {marker} world; true"),
                            what="sh exec")[0]
    echo = bpf_agent.wait_for(_execs(bpf_agent, binary="/bin/echo", arg=marker), what="echo exec")[0]

    assert sh["process"]["binary"] == "/bin/sh"
    assert sh["process"]["args"] == ["/bin/sh", "-c", f"/bin/echo {marker} world; true"]
    assert sh["process"]["ppid"] == os.getpid()
    assert sh["parent"]["pid"] == os.getpid()
    assert sh["parent"]["binary"] == os.path.realpath(sys.executable) or sh["parent"]["binary"] == sys.executable

    p = echo["process"]
    assert p["args"] == ["/bin/echo", marker, "world"]
    assert p["uid"] == os.getuid() and p["euid"] == os.geteuid() and p["gid"] == os.getgid()
    assert p["cwd"] == os.getcwd()
    assert p["ppid"] == sh["process"]["pid"]
    assert p["parent_exec_id"] == sh["process"]["exec_id"]
    assert echo["parent"]["exec_id"] == sh["process"]["exec_id"]
    assert echo["parent"]["binary"] == "/bin/sh"
    assert p["exec_id"] != sh["process"]["exec_id"]
    for e in (sh, echo):
        assert e["schema_version"] and e["id"] and e["time"].endswith("Z")
        assert e["process"]["start_time"] == e["time"]

    echo_exit = bpf_agent.wait_for(_exit_of(p["exec_id"]), what="echo exit")[0]
    sh_exit = bpf_agent.wait_for(_exit_of(sh["process"]["exec_id"]), what="sh exit")[0]
    assert echo_exit["exit"]["code"] == 0 and "signal" not in echo_exit["exit"]
    assert echo_exit["process"]["pid"] == p["pid"]
    assert echo_exit["parent"]["exec_id"] == sh["process"]["exec_id"]
    assert sh_exit["exit"]["code"] == 0
    assert echo_exit["exit"]["duration_ns"] > 0
    assert echo_exit["time"] >= echo["time"]



def test_children_of_subshells_name_their_parent(bpf_agent):
    """`x=$(cmd; true)`: the subshell forks cmd and exits without exec'ing. The kernel reports such a
    fork when it exits (after cmd's exec), so the exec sends it (and its un-exec'd ancestors: nested
    subshells) ahead of itself. Every cmd names its subshell, a clone of bash; before, 39 of 40 of these
    were `missing_parent`."""
    marker = f"subshell-{time.monotonic_ns()}"
    script = (f'for i in $(seq 20); do x=$(/bin/echo {marker} "$i"; true); '
              f'y=$( ( /bin/echo {marker} "nested-$i"; true ); true ); done')
    subprocess.run(["/bin/bash", "-c", script], check=True)
    deadline = time.monotonic() + 10
    while True:
        echoes = [e for e in bpf_agent.events() if e["type"] == "process_exec" and marker in e["process"]["args"]
                  and e["process"]["binary"] == "/bin/echo"]
        if len(echoes) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(echoes) == 40
    missing = [e for e in echoes if "missing_parent" in e["process"].get("flags", [])]
    assert not missing, f"{len(missing)} of 40 children of subshells without a parent"
    bash = ("/bin/bash", "/usr/bin/bash")
    for e in echoes:
        assert e["parent"]["pid"] == e["process"]["ppid"] and "clone" in e["parent"].get("flags", [])
        assert e["parent"]["binary"] in bash
        if e["process"]["args"][-1].startswith("nested-"):  # ( ... ) inside $( ... ): two clones, then bash
            outer, shell = e["ancestors"][0], e["ancestors"][1]
            assert "clone" in outer.get("flags", []) and outer["binary"] in bash
            assert "clone" not in shell.get("flags", []) and shell["binary"] in bash



THREADED = r"""
import ctypes, os, subprocess, sys, threading, time
def worker():
    time.sleep(0.2)
    subprocess.run(["/bin/true", sys.argv[1]])  # forked by this thread: the child's real_parent
    os._exit(3)  # this thread is the process' last: the leader is gone already
threading.Thread(target=worker).start()
ctypes.CDLL(None).pthread_exit(None)  # the main thread (the leader) ends first
"""


def test_threads_fork_and_exit_name_the_process(bpf_agent):
    """A worker thread forks a child and is the last thread to exit. The kernel's task for both is the
    thread, whose start time is its own: the child's parent and the exit must be matched on the process'
    (the leader's) start time, else they are `missing_parent` / `missing_process`."""
    marker = f"threaded-{time.monotonic_ns()}"
    p = subprocess.Popen([sys.executable, "-c", THREADED, marker])
    assert p.wait(10) == 3
    py = bpf_agent.wait_for(_execs(bpf_agent, pid=p.pid), what="python exec")[-1]
    child = bpf_agent.wait_for(_execs(bpf_agent, binary="/bin/true", arg=marker), what="the child's exec")[0]
    assert "missing_parent" not in child["process"].get("flags", [])
    assert child["process"]["ppid"] == p.pid and child["parent"]["exec_id"] == py["process"]["exec_id"]
    x = bpf_agent.wait_for(lambda e: e["type"] == "process_exit" and e["process"]["pid"] == p.pid, what="exit")[0]
    assert "missing_process" not in x["process"].get("flags", [])
    assert x["process"]["exec_id"] == py["process"]["exec_id"] and x["process"]["tid"] != p.pid
    assert x["exit"]["code"] == 3

def test_uid_of_unprivileged_exec(bpf_agent):
    marker = f"uid-{time.monotonic_ns()}"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/true", marker], check=True)
    e = bpf_agent.wait_for(_execs(bpf_agent, binary="/bin/true", arg=marker))[0]
    assert e["process"]["uid"] == 65534 and e["process"]["euid"] == 65534
    assert e["process"]["gid"] == 65534 and e["process"]["egid"] == 65534
    # setpriv execs /bin/true without forking: same pid, a new image with its own exec_id, and the
    # parent is still this test process.
    assert e["parent"]["pid"] == os.getpid()
    setpriv = bpf_agent.wait_for(_execs(bpf_agent, pid=e["process"]["pid"], arg=marker))
    images = {x["process"]["binary"]: x["process"]["exec_id"] for x in setpriv}
    assert len(images) == 2 and "/bin/true" in images and any(b.endswith("/setpriv") for b in images), images
    assert len(set(images.values())) == len(images)


def test_exit_code_and_signal(bpf_agent):
    marker = f"exit-{time.monotonic_ns()}"
    subprocess.run(["/bin/sh", "-c", f"exit 3 # {marker}"])
    e = bpf_agent.wait_for(_execs(bpf_agent, arg=f"exit 3 # {marker}"))[0]
    x = bpf_agent.wait_for(_exit_of(e["process"]["exec_id"]))[0]
    assert x["exit"]["code"] == 3

    victim = subprocess.Popen(["/bin/sleep", "30.5"])
    e = bpf_agent.wait_for(_execs(bpf_agent, pid=victim.pid, binary="/bin/sleep"))[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    x = bpf_agent.wait_for(_exit_of(e["process"]["exec_id"]))[0]
    assert x["exit"]["signal"] == "SIGKILL" and "code" not in x["exit"]


def test_process_started_before_agent(bpf_agent):
    pre = bpf_agent.pre_existing
    pre.stdin.write(b"go\n")
    pre.stdin.flush()
    pre.wait(10)
    # `exec /bin/true` replaces the pre-existing shell: same pid, new image, parent is this test.
    e = bpf_agent.wait_for(_execs(bpf_agent, pid=pre.pid, binary="/bin/true"))[0]
    assert e["process"]["args"] == ["/bin/true", "pre-existing-child"]
    assert e["parent"]["pid"] == os.getpid()
    assert "procfs" in e["parent"]["flags"]  # this test process was found in /proc, not seen exec'ing


def test_cwd_crosses_mount_points(bpf_agent, tmp_path):
    # /dev/shm is a separate tmpfs: the kernel-side walk must cross into its parent mount.
    shm = Path("/dev/shm")
    target = shm / f"siemhub-cwd-{os.getpid()}" / "deeper"
    target.mkdir(parents=True, exist_ok=True)
    marker = f"cwd-{time.monotonic_ns()}"
    try:
        subprocess.run(["/bin/true", marker], cwd=target, check=True)
        e = bpf_agent.wait_for(_execs(bpf_agent, arg=marker))[0]
        assert e["process"]["cwd"] == str(target)
    finally:
        target.rmdir()
        target.parent.rmdir()


def test_relative_binary_made_absolute(bpf_agent, tmp_path):
    exe = tmp_path / "tool"
    exe.write_bytes(Path("/bin/true").read_bytes())
    exe.chmod(0o755)
    marker = f"rel-{time.monotonic_ns()}"
    subprocess.run(["./tool", marker], cwd=tmp_path, check=True)
    e = bpf_agent.wait_for(_execs(bpf_agent, arg=marker))[0]
    assert e["process"]["binary"] == str(exe)


def test_issue_config_runs_as_written(tmp_path):
    """`siemhub run -c that.yaml --duration 8` with the foundation issue's config, as a real process."""
    if os.geteuid() != 0:
        from tests.conftest import bpf_unavailable
        bpf_unavailable("not root")
    out = tmp_path / "events.jsonl"
    cfg = tmp_path / "that.yaml"
    cfg.write_text(
        "sensors:\n  process: {}\n"
        f"exporters:\n  out: {{type: file, path: {out}, format: native}}\n"
        "routes:\n  - {name: everything, to: [out]}\n"
    )
    siemhub = Path(sys.executable).with_name("siemhub")
    agent = subprocess.Popen([str(siemhub), "run", "-c", str(cfg), "--duration", "8"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = f"asis-{time.monotonic_ns()}"
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # wait until the sensor is attached (the agent logs it)
        if out.exists():
            break
        time.sleep(0.1)
    time.sleep(2.5)  # BPF compile + attach take a few seconds after the file opens
    for i in range(3):
        subprocess.run(["/bin/echo", marker, str(i)], capture_output=True, check=True)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()
    lines = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert lines, err.decode()
    for e in lines:
        assert {"id", "time", "type", "schema_version"} <= e.keys()
    mine = [e for e in lines if e["type"] == "process_exec" and marker in e["process"].get("args", [])]
    assert len(mine) == 3, err.decode()
    for e in mine:
        assert {"pid", "binary", "args", "exec_id", "uid", "cwd"} <= e["process"].keys()
        assert {"pid", "binary", "exec_id"} <= e["parent"].keys()
        assert e["process"]["binary"] == "/bin/echo"


# A busy shell's start-up (pyenv's init: ~100 forks and execs within 60 ms) as a loop: command
# substitutions of builtins and of commands, pipelines of functions inside them (children of an
# un-exec'd subshell that exit without exec'ing), nested subshells and background jobs. Every process
# that runs `f` or `p` writes its pid to $LOG (the machine is shared: other processes exit meanwhile).
STORM = r"""
LOG=$1
p() { echo $BASHPID >>"$LOG"; }
f() { p; echo "$1"; }
for i in $(seq 150); do
  a=$(p; f "$i" | cat)
  b=$( (f "$i"; true) | (p; read x; echo "$x") )
  c=$( ( (f "$i") ) )
  (p; exit 3) &
  { f "$i" >/dev/null; } &
  d=$(/bin/true; f "$i")
done
wait
"""


def test_fork_storm_has_no_missing_process(bpf_agent, tmp_path):
    """Thousands of short-lived forks a second: every child forked after the sensor attached exits
    named (binary, args, uid: a clone of the shell), never `missing_process`. Before the fix, a child of
    an un-exec'd subshell that exited without exec'ing lost its parent, and so its exit its process."""
    log = tmp_path / "pids"
    subprocess.run(["/bin/bash", "-c", STORM, "storm", str(log)], check=True, capture_output=True)
    pids = {int(x) for x in log.read_text().split()}
    assert len(pids) > 1000
    shell = bpf_agent.wait_for(_execs(bpf_agent, arg=str(log)), what="the storm shell's exec")[0]
    bpf_agent.wait_for(_exit_of(shell["process"]["exec_id"]), timeout=30, what="the storm shell's exit")
    deadline = time.monotonic() + 20
    while True:  # exits wait up to 0.5 s for their process (pending), then go out flagged
        exits = {e["process"]["pid"]: e for e in bpf_agent.events() if e["type"] == "process_exit"
                 and e["process"]["pid"] in pids and e["time"] >= shell["time"]}
        if len(exits) == len(pids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(exits) == len(pids), f"{len(pids) - len(exits)} of {len(pids)} exits not seen"
    missing = [e for e in exits.values() if "missing_process" in e["process"].get("flags", [])]
    assert not missing, f"{len(missing)} of {len(pids)} exits flagged missing_process, e.g. {missing[:2]}"
    for e in exits.values():
        pr = e["process"]
        assert pr["binary"] in ("/bin/bash", "/usr/bin/bash") and pr["args"][:2] == ["/bin/bash", "-c"], pr
        assert pr["uid"] == os.getuid() and "clone" in pr["flags"] and e["parent"]["pid"] == pr["ppid"], pr
