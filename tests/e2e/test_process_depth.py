"""End-to-end, real kernel: process context at Tetragon's depth (issue 3's must-show list)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siemhub.collector.core.event import unescape_bytes

pytestmark = pytest.mark.bpf


def _exec_with(agent, arg, binary=None, timeout=10.0):
    def pred(e):
        if e["type"] != "process_exec" or arg not in e["process"].get("args", []):
            return False
        return binary is None or e["process"]["binary"] == binary
    return agent.wait_for(pred, timeout=timeout, what=f"exec with {arg!r}")


def _marker(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


def test_deep_tree_has_correct_ancestry(bpf_agent):
    mark = _marker("deep")
    py = sys.executable
    # `; true` keeps each shell alive (a shell execs its last command instead of forking it).
    subprocess.run(["/bin/bash", "-c", f"/bin/sh -c '{py} -c \"import os; os.system(\\\"/bin/true {mark}\\\")\"; true'; true"],
                   check=True)
    leaf = _exec_with(bpf_agent, mark, "/bin/true")[0]
    # /bin/true <- sh (os.system) <- python <- sh <- bash <- this test
    chain = [leaf["parent"]] + leaf["ancestors"]
    bins = [p["binary"] for p in chain]
    assert bins[0] == "/bin/sh" and os.path.basename(bins[1]).startswith("python") and bins[2] == "/bin/sh"
    assert bins[3] == "/bin/bash"
    # every link is the real parent: pids and exec ids chain up
    assert leaf["process"]["ppid"] == chain[0]["pid"]
    assert leaf["process"]["parent_exec_id"] == chain[0]["exec_id"]
    for child, parent in zip(chain, chain[1:]):
        assert child["ppid"] == parent["pid"]
        assert child["parent_exec_id"] == parent["exec_id"]
    assert len(leaf["ancestors"]) == 4  # capped at sensors.process.ancestors


def test_setuid_binary_runs_with_uid_not_euid(bpf_agent, tmp_path):
    exe = tmp_path / "suid-id"
    shutil.copy("/usr/bin/id", exe)
    os.chown(exe, 0, 0)
    exe.chmod(0o4755)
    tmp_path.chmod(0o755)
    mark = _marker("suid")
    # `id -u <marker>` looks the marker up as a user name and fails; the exec is what counts.
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(exe), "-u", mark],
                   capture_output=True)
    e = _exec_with(bpf_agent, mark, str(exe))[0]["process"]
    assert e["uid"] == 65534 and e["euid"] == 0, e
    assert e["binary_properties"]["setuid"] == 0


def test_capabilities_and_namespaces_match_proc(bpf_agent):
    mark = _marker("caps")
    p = subprocess.Popen(["/bin/sh", "-c", f"sleep 3 # {mark}"])
    try:
        e = _exec_with(bpf_agent, f"sleep 3 # {mark}")[0]["process"]
        status = Path(f"/proc/{p.pid}/status").read_text()
        eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff")), 16)
        assert len(e["caps"]["effective"]) == bin(eff).count("1")
        if eff & (1 << 21):
            assert "CAP_SYS_ADMIN" in e["caps"]["effective"]
        for kind in ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup"):
            link = os.readlink(f"/proc/{p.pid}/ns/{kind}")
            assert e["ns"][kind] == int(link.split("[")[1].rstrip("]")), kind
    finally:
        p.kill()
        p.wait()


def _set_next_pid(pid: int) -> bool:
    try:
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        return True
    except OSError:
        return False


def test_pid_reuse_gets_a_new_identity(bpf_agent):
    first = _marker("reuse1")
    p1 = subprocess.run(["/bin/true", first])
    e1 = _exec_with(bpf_agent, first)[0]
    pid = e1["process"]["pid"]
    # Make the kernel hand out the same pid again (root in the initial pid namespace can).
    second = _marker("reuse2")
    for _ in range(20):
        if not _set_next_pid(pid):
            pytest.fail("cannot write /proc/sys/kernel/ns_last_pid to force pid reuse")
        child = subprocess.Popen(["/bin/sh", "-c", f"exec /bin/true {second}"])
        child.wait()
        if child.pid == pid:
            break
    else:
        pytest.fail("pid was not reused")
    assert p1.returncode == 0
    e2 = [e for e in _exec_with(bpf_agent, second) if e["process"]["pid"] == pid][0]
    assert e2["process"]["exec_id"] != e1["process"]["exec_id"]
    assert e2["process"]["start_time"] > e1["process"]["start_time"]
    assert e2["parent"]["pid"] == os.getpid()
    # The exit of the second process is reported with the second identity, never the first.
    x = bpf_agent.wait_for(lambda e: e["type"] == "process_exit" and e["process"]["pid"] == pid
                           and second in e["process"].get("args", []))[0]
    assert x["process"]["exec_id"] == e2["process"]["exec_id"]


def test_thread_that_execs(bpf_agent):
    mark = _marker("thread")
    code = ("import os, threading\n"
            "def run():\n"
            f"    os.execv('/bin/true', ['/bin/true', '{mark}'])\n"
            "t = threading.Thread(target=run); t.start(); t.join()\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    child.wait(10)
    e = _exec_with(bpf_agent, mark, "/bin/true")[0]
    # After exec the thread takes over the process: same pid (tgid), parent unchanged.
    assert e["process"]["pid"] == child.pid and e["process"]["tid"] == child.pid
    assert e["parent"]["pid"] == os.getpid()
    x = bpf_agent.wait_for(lambda ev: ev["type"] == "process_exit" and ev["process"]["exec_id"] == e["process"]["exec_id"])
    assert x[0]["exit"]["code"] == 0


def test_nsenter_into_another_process_namespaces_is_flagged(bpf_agent):
    mark = _marker("nsenter")
    script = f"sleep 30; : holder-{mark}"
    holder = subprocess.Popen(["unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "/bin/sh", "-c", script])
    try:
        target = _exec_with(bpf_agent, script, "/bin/sh")[0]
        # The holder created its namespaces: it is not an entry, though they differ from its parent's.
        assert "namespace_entry" not in target["process"].get("flags", [])
        own_net = int(os.readlink("/proc/self/ns/net").split("[")[1].rstrip("]"))
        assert target["process"]["ns"]["net"] != own_net
        pid = target["process"]["pid"]
        subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "/bin/true", mark], check=True)
        e = _exec_with(bpf_agent, mark, "/bin/true")[0]["process"]
        assert "namespace_entry" in e["flags"]
        assert {"mnt", "uts", "ipc", "net"} <= set(e["entered_namespaces"])
        for kind in ("mnt", "uts", "ipc", "net"):
            assert e["ns"][kind] == target["process"]["ns"][kind]
        # An ordinary child of this test is not flagged.
        plain = _marker("plain")
        subprocess.run(["/bin/true", plain], check=True)
        assert "namespace_entry" not in _exec_with(bpf_agent, plain)[0]["process"].get("flags", [])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_ten_thousand_arguments_are_truncated_and_flagged(bpf_agent):
    mark = _marker("many")
    args = [mark] + [f"arg{i:05d}" for i in range(10_000)]
    subprocess.run(["/bin/true", *args], check=True)
    e = _exec_with(bpf_agent, mark, "/bin/true")[0]["process"]
    assert "truncated_args" in e["flags"]
    got = e["args"]
    assert got[:3] == ["/bin/true", mark, "arg00000"]
    assert 100 < len(got) < 10_001
    assert got[:-1] == ["/bin/true", *args][: len(got) - 1]  # all complete but the cut last one
    assert ("/bin/true " + " ".join(args)).startswith(" ".join(got))


def test_non_utf8_binary_name_is_flagged_and_lossless(bpf_agent, tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/tru\xff\xfee\\x41"
    with open(raw, "wb") as f:
        f.write(Path("/bin/true").read_bytes())
    os.chmod(raw, 0o755)
    mark = _marker("nonutf8")
    subprocess.run([raw, mark], check=True)
    e = _exec_with(bpf_agent, mark)[0]["process"]
    assert "non_utf8_binary" in e["flags"]
    assert unescape_bytes(e["binary"]) == raw


def test_container_id_from_the_cgroup(bpf_agent):
    root = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() else Path("/sys/fs/cgroup")
    cid = "5e" * 32
    group = root / f"siemhub-test-{os.getpid()}" / f"docker-{cid}.scope"
    try:
        group.mkdir(parents=True)
    except OSError as exc:
        pytest.fail(f"cannot create a cgroup v2 group to test container ids: {exc}")
    mark = _marker("container")
    try:
        subprocess.run(["/bin/sh", "-c", f"echo $$ > {group}/cgroup.procs && exec /bin/true {mark}"], check=True)
        e = _exec_with(bpf_agent, mark, "/bin/true")[0]["process"]
        assert e["container"] == {"id": cid, "runtime": "docker"}
    finally:
        group.rmdir()
        group.parent.rmdir()


FORKER = r"""
import os, socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(4)
port = srv.getsockname()[1]
kids = []
pid = os.fork()
if pid == 0:  # a worker that never execs: connects, lives on a while (its event is named meanwhile), exits
    import time
    c = socket.create_connection(("127.0.0.1", port)); c.close(); time.sleep(1.5); os._exit(0)
kids.append(pid)
conn, _ = srv.accept(); conn.close()
pid2 = os.fork()
if pid2 == 0:  # never execs, exits with a code
    os._exit(3)
kids.append(pid2)
for k in kids:
    os.waitpid(k, 0)
print(os.getpid(), kids[0], kids[1], port, flush=True)
"""


@pytest.fixture(scope="module")
def fork_agent(tmp_path_factory):
    from tests.conftest import running_agent

    yield from running_agent(tmp_path_factory.mktemp("fork-agent"), """  process: {poll_interval: 0.05}
  network: {poll_interval: 0.05}""")


def test_fork_without_exec_is_named_from_the_kernels_fork_map(fork_agent):
    """Forks are not sent as messages (the kernel keeps them in a map): a forked worker that never
    execs is still named on another sensor's event (read from the map on demand), and its exit is
    reported with its parent's image, flagged clone."""
    out = subprocess.run([sys.executable, "-c", FORKER, _marker("forker")], capture_output=True, text=True,
                         check=True).stdout.split()
    parent_pid, worker, quitter, port = map(int, out)
    parent = fork_agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == parent_pid,
                                 what="exec of the forking python")[-1]["process"]
    conn = fork_agent.wait_for(lambda e: e["type"] == "network_connect" and e["process"]["pid"] == worker
                               and e["network"].get("destination_port") == port, what="connect of the worker")[0]
    p = conn["process"]
    assert "clone" in p["flags"] and p["binary"] == parent["binary"] and p["args"] == parent["args"]
    assert p["ppid"] == parent_pid and p["parent_exec_id"] == parent["exec_id"]
    assert p["exec_id"] != parent["exec_id"]
    deadline = time.monotonic() + 10
    while True:
        ends = {e["process"]["pid"]: e for e in fork_agent.wait_for(
            lambda e: e["type"] == "process_exit" and e["process"]["pid"] in (worker, quitter), what="exits of the forks")}
        if len(ends) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert set(ends) == {worker, quitter}
    assert ends[quitter]["exit"]["code"] == 3
    for pid in (worker, quitter):
        q = ends[pid]["process"]
        assert "clone" in q["flags"] and q["binary"] == parent["binary"] and q["parent_exec_id"] == parent["exec_id"]
    assert ends[worker]["process"]["exec_id"] == p["exec_id"]  # one process, one exec_id on every event


MANY_FORKS = r"""
import os, sys
r, w = os.pipe()
kids = []
for i in range(12):
    pid = os.fork()
    if pid == 0:  # never execs: waits until every sibling exists, then exits with its own code
        os.close(w)
        os.read(r, 1)
        os._exit(10 + i)
    kids.append(pid)
os.close(w)  # the children's reads return: all exit
for k in kids:
    os.waitpid(k, 0)
print(os.getpid(), *kids, flush=True)
"""


def test_forks_sharing_a_slot_of_the_fork_map_are_all_reported(tmp_path, monkeypatch):
    """The kernel's fork map is an array indexed by pid modulo its size: a forked process whose slot is
    taken by another live, never-exec'd process is sent as a fork message before the slot is reused.
    With 4 slots and 12 such children alive at once, every child's exit must still be named (clone, the
    parent's image, its own exit code), none a missing_process."""
    from siemhub.collector.sensors import process as process_sensor
    from tests.conftest import running_agent

    monkeypatch.setattr(process_sensor, "FORK_SLOTS", 4)
    for agent in running_agent(tmp_path, "  process: {poll_interval: 0.05}"):
        out = subprocess.run([sys.executable, "-c", MANY_FORKS, _marker("many-forks")], capture_output=True,
                             text=True, check=True).stdout.split()
        parent_pid, kids = int(out[0]), [int(x) for x in out[1:]]
        parent = agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == parent_pid,
                                what="exec of the forking python")[-1]["process"]
        deadline = time.monotonic() + 15
        while True:
            ends = {e["process"]["pid"]: e for e in agent.wait_for(
                lambda e: e["type"] == "process_exit" and e["process"]["pid"] in kids, what="exits of the forks")}
            if len(ends) == len(kids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert set(ends) == set(kids)
        for i, pid in enumerate(kids):
            q = ends[pid]
            assert q["exit"]["code"] == 10 + i
            assert "clone" in q["process"]["flags"] and "missing_process" not in q["process"]["flags"]
            assert q["process"]["binary"] == parent["binary"] and q["process"]["parent_exec_id"] == parent["exec_id"]
