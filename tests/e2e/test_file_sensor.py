"""End-to-end: the file sensor on the running kernel (process + file sensors -> file exporter).

Watched paths are temporary directories added to the watch list, never real /etc files, except reading
/etc/shadow, which is harmless."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import process_sensor_held, running_agent

pytestmark = pytest.mark.bpf

CAT = os.path.realpath("/bin/cat")


@pytest.fixture(scope="module")
def file_agent(tmp_path_factory):
    base = tmp_path_factory.mktemp("fim")
    watched = base / "watched"
    single = base / "single"
    protected = base / "protected"
    unwatched = base / "unwatched"
    for d in (watched, single, protected, unwatched):
        d.mkdir()
    (protected / "secret").write_text("SECRET-CONTENT\n")
    (protected / "keep").write_text("ORIGINAL\n")
    for running in running_agent(base, f"""  process: {{poll_interval: 0.05}}
  file:
    poll_interval: 0.05
    watch: ["/etc/shadow", "{watched}/", "{single}/passwd"]
    enforce:
      - {{path: "{protected}/secret", action: sigkill, operations: [open_read]}}
      - {{path: "{protected}/keep", action: sigkill, operations: [open_write]}}"""):
        running.dirs = {"watched": watched, "single": single, "protected": protected, "unwatched": unwatched}
        yield running


def _file_events(agent, pred=lambda f: True):
    return [e for e in agent.events() if e["type"] == "file_access" and pred(e["file"])]


def _wait_count(agent, pred, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        found = _file_events(agent, pred)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_reading_etc_shadow_names_process_and_parent(file_agent):
    marker = f"shadow-{time.monotonic_ns()}"
    proc = subprocess.run(["/bin/sh", "-c", f"cat /etc/shadow > /dev/null # {marker}"], check=True)
    sh = file_agent.wait_for(lambda e: e["type"] == "process_exec"
                             and any(marker in a for a in e["process"]["args"]), what="sh exec")[0]
    ev = file_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == "/etc/shadow"
                             and e["process"]["ppid"] == sh["process"]["pid"], what="/etc/shadow read")
    e = ev[0]
    assert e["file"]["operation"] == "open" and "O_RDONLY" in e["file"]["flags"]
    assert e["file"]["result"] >= 0 and e["file"]["inode"] == os.stat("/etc/shadow").st_ino
    assert e["process"]["binary"] in ("/bin/cat", "/usr/bin/cat", CAT)
    assert e["process"]["args"] == ["cat", "/etc/shadow"]
    assert e["process"]["exec_id"] != sh["process"]["exec_id"]
    assert e["parent"]["exec_id"] == sh["process"]["exec_id"] and e["parent"]["binary"] == "/bin/sh"
    assert e["severity"] == "low"
    assert proc.returncode == 0


def test_writes_and_rename_over_are_always_reported(file_agent):
    w = file_agent.dirs["watched"]
    rounds = 25
    for i in range(rounds):
        tmp = w / f"passwd.{i}.tmp"
        with open(tmp, "w") as f:          # open for writing + first write
            f.write("root:x:0:0::/root:/bin/sh\n")
            f.write("more\n")              # second write: not reported (first write per open file)
        os.rename(tmp, w / "passwd")       # rename over the watched file
    opens = _wait_count(file_agent, lambda f: f["operation"] == "open" and ".tmp" in f["path"]
                        and f["path"].startswith(str(w)), rounds)
    writes = _wait_count(file_agent, lambda f: f["operation"] == "write" and f["path"].startswith(str(w)), rounds)
    renames = _wait_count(file_agent, lambda f: f["operation"] == "rename" and f.get("target") == str(w / "passwd"),
                          rounds)
    assert len(opens) == rounds and len(renames) == rounds
    assert len(writes) == rounds, "exactly one write event per open file"
    for f in (e["file"] for e in opens):
        assert {"O_WRONLY", "O_CREAT", "O_TRUNC", "created"} <= set(f["flags"]) and f["mode"] == 0o666
    for e in renames:
        assert e["file"]["result"] == 0 and e["process"]["pid"] == os.getpid()
        assert e["file"]["path"].startswith(str(w / "passwd."))


def test_watched_file_replaced_by_rename_stays_watched(file_agent):
    """A file watched by name (not a directory): renaming a new file over it is reported (the target is
    the watched name) and the new inode under that name is still watched."""
    d = file_agent.dirs["single"]
    (d / "passwd").write_text("v1\n")
    new = d / "passwd.new"
    new.write_text("v2\n")                 # not watched: a sibling of the watched name
    os.rename(new, d / "passwd")
    with open(d / "passwd", "a") as f:
        f.write("v3\n")
    rn = _wait_count(file_agent, lambda f: f["operation"] == "rename" and f.get("target") == str(d / "passwd"), 1)
    assert rn and rn[0]["file"]["path"] == str(new)
    ino = os.stat(d / "passwd").st_ino
    after = _wait_count(file_agent, lambda f: f["operation"] == "write" and f["path"] == str(d / "passwd")
                        and f["inode"] == ino, 1)
    assert after, "the write to the new inode under the watched name was not reported"
    assert not _file_events(file_agent, lambda f: f["path"] == str(new) and f["operation"] == "open")


def test_relative_paths_are_resolved(file_agent):
    w = file_agent.dirs["watched"]
    subprocess.run(["/bin/sh", "-c", "echo hi > ./rel-file && chmod 600 rel-file && mv rel-file rel-moved "
                    "&& rm rel-moved"], cwd=w, check=True)
    want = {("open", str(w / "rel-file")), ("write", str(w / "rel-file")), ("chmod", str(w / "rel-file")),
            ("rename", str(w / "rel-file")), ("unlink", str(w / "rel-moved"))}
    deadline = time.monotonic() + 10
    while True:
        seen = {(f["operation"], f["path"]) for f in (e["file"] for e in _file_events(file_agent))}
        if want <= seen or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert want <= seen, want - seen
    rn = _file_events(file_agent, lambda f: f["operation"] == "rename" and f["path"] == str(w / "rel-file"))
    assert rn[0]["file"]["target"] == str(w / "rel-moved")


def test_unwatched_paths_produce_no_events(file_agent):
    u = file_agent.dirs["unwatched"]
    n = 10_000
    for i in range(n):
        fd = os.open(u / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.close(fd)
    os.rename(u / "f0", u / "g0")
    os.unlink(u / "g0")
    # a watched-path event after the storm proves the stream has caught up
    (file_agent.dirs["watched"] / "sentinel").write_text("x")
    file_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"].endswith("/sentinel"))
    assert not _file_events(file_agent, lambda f: str(u) in f["path"] or str(u) in (f.get("target") or ""))
    assert file_agent.agent.sensors[1].counters()["ringbuf_lost"] == 0


CHILD = r"""
import os, sys
data = open(sys.argv[1]).read()
sys.stdout.write(data)
sys.stdout.flush()
"""

WRITER = r"""
import sys
f = open(sys.argv[1], "w")
f.write("OVERWRITTEN\n")
f.close()
print("wrote")
"""


def test_sigkill_before_a_byte_is_read(file_agent):
    secret = file_agent.dirs["protected"] / "secret"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(secret)], capture_output=True, timeout=30)
    assert proc.returncode == -9, proc
    assert proc.stdout == b"", "the killed process printed what it read"
    pa = file_agent.wait_for(lambda e: e["type"] == "policy_action" and e["file"]["path"] == str(secret),
                             what="policy_action")[0]
    assert pa["policy"] == {"policy": "file.enforce", "rule": str(secret), "action": "sigkill", "enforced": True,
                            "reason": f"open {secret}"}
    assert os.path.basename(pa["process"]["binary"]).startswith("python") and pa["parent"]["pid"] == os.getpid()
    fa = file_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == str(secret))[0]
    assert fa["tags"] == ["sigkill"] and fa["severity"] == "high"
    ex = file_agent.wait_for(lambda e: e["type"] == "process_exit"
                             and e["process"]["exec_id"] == pa["process"]["exec_id"], what="exit")[0]
    assert ex["exit"]["signal"] == "SIGKILL"


def test_sigkill_before_a_write_after_open(file_agent):
    keep = file_agent.dirs["protected"] / "keep"
    proc = subprocess.run([sys.executable, "-c", WRITER, str(keep)], capture_output=True, timeout=30)
    assert proc.returncode == -9 and proc.stdout == b""
    # O_TRUNC happened inside the open syscall itself (the kill lands as it returns): content is gone,
    # but the process never wrote after its open.
    assert "OVERWRITTEN" not in keep.read_text()
    file_agent.wait_for(lambda e: e["type"] == "policy_action" and e["file"]["path"] == str(keep))


def test_startup_reports_enforcement_mode(file_agent):
    sensor = next(s for s in file_agent.agent.sensors if s.name == "file")
    c = sensor.counters()
    assert c["enforce_block_available"] in (0, 1) and c["watch_paths"] == 5
    lockdown = Path("/sys/kernel/security/lockdown")
    if lockdown.exists() and "[none]" not in lockdown.read_text():
        assert c["enforce_block_available"] == 0


# --- the kernel's verdict cache: what it skips must never hide a watched path ---------------------------

def _sensor(agent):
    return next(s for s in agent.agent.sensors if s.name == "file")


def _kernel_stats(agent):
    sensor = _sensor(agent)
    sensor.check_counters()
    return dict(sensor.kernel_stats)


def _write(path: Path, text: str = "x\n") -> None:
    with open(path, "a") as f:
        f.write(text)


def _caught_up(agent, name: str) -> None:
    """A watched write after the actions: once it is seen, every earlier event has been decoded."""
    (agent.dirs["watched"] / name).write_text("x")
    agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"].endswith("/" + name), what=name)


def test_unwatched_opens_are_skipped_by_the_cache(file_agent):
    u = file_agent.dirs["unwatched"] / f"cached-{time.monotonic_ns()}"
    u.mkdir()
    for i in range(50):
        (u / f"f{i}").write_text("x")
    before = _kernel_stats(file_agent)
    for _ in range(20):
        for i in range(50):
            with open(u / f"f{i}") as f:
                f.read()
    after = _kernel_stats(file_agent)
    # other processes open files too, so the counters can only be bounded from below
    assert after["cache_skips"] - before["cache_skips"] >= 900, (before, after)
    _caught_up(file_agent, "sentinel-cache")
    assert not _file_events(file_agent, lambda f: str(u) in f["path"])


def test_directory_moved_into_a_watched_tree_is_reported(file_agent):
    """The cache learnt that nothing inside `mover` (and `outer/inner`) is watched; renaming them under
    the watched directory must make writes inside them visible at once."""
    tag = time.monotonic_ns()
    u, w = file_agent.dirs["unwatched"], file_agent.dirs["watched"]
    mover = u / f"mover-{tag}"
    inner = u / f"outer-{tag}" / "inner"
    for d in (mover, inner):
        d.mkdir(parents=True)
        for _ in range(5):             # the first open walks and stores, the next ones hit the cache
            _write(d / "file")
    assert _kernel_stats(file_agent)["cache_skips"] > 0
    os.rename(mover, w / mover.name)                     # the directory itself moves
    os.rename(u / f"outer-{tag}", w / f"outer-{tag}")    # an ancestor moves: inner's dentry does not
    _write(w / mover.name / "file", "after\n")
    _write(w / mover.name / "new-file", "after\n")
    _write(w / f"outer-{tag}" / "inner" / "file", "after\n")
    want = {str(w / mover.name / "file"), str(w / mover.name / "new-file"),
            str(w / f"outer-{tag}" / "inner" / "file")}
    for path in want:
        found = _wait_count(file_agent, lambda f, p=path: f["operation"] == "write" and f["path"] == p, 1)
        assert found, f"the write to {path} after its directory moved was not reported"
    # before the moves nothing was reported from them (only the renames themselves name the old paths)
    assert not _file_events(file_agent, lambda f: f["operation"] != "rename" and f["path"].startswith(str(u)))
    assert _kernel_stats(file_agent)["cache_holds"] == 0, "a rename left the cache held"


def test_watch_set_change_at_run_time(file_agent):
    """Verdicts cached under the old watch set die with it: a directory added at run time is reported
    at once, and one removed goes quiet."""
    sensor = _sensor(file_agent)
    old_watch, old_enforce = list(sensor.config.watch), list(sensor.config.enforce)
    d = file_agent.dirs["unwatched"] / f"late-{time.monotonic_ns()}"
    d.mkdir()
    for _ in range(5):
        _write(d / "f")                                  # cached: nothing watched here
    try:
        sensor.set_watch(old_watch + [f"{d}/"], old_enforce)
        _write(d / "f", "now watched\n")
        assert _wait_count(file_agent, lambda f: f["operation"] == "write" and f["path"] == str(d / "f"), 1)
    finally:
        sensor.set_watch(old_watch, old_enforce)
    n = len(_file_events(file_agent, lambda f: f["path"] == str(d / "f")))
    for _ in range(5):
        _write(d / "f", "unwatched again\n")
    _caught_up(file_agent, "sentinel-unwatch")
    assert len(_file_events(file_agent, lambda f: f["path"] == str(d / "f"))) == n


def test_relative_names_in_a_cached_cwd_and_symlinked_paths(file_agent):
    """A relative unlink in an unwatched cwd is skipped by the cache, in a watched cwd it is reported;
    an open through a symlink into the watched tree is reported under its real path."""
    tag = time.monotonic_ns()
    u, w = file_agent.dirs["unwatched"], file_agent.dirs["watched"]
    script = "for i in 1 2 3 4 5; do echo x > rel-$i; rm rel-$i; done"
    subprocess.run(["/bin/sh", "-c", script], cwd=u, check=True)
    subprocess.run(["/bin/sh", "-c", script], cwd=w, check=True)
    link = u / f"link-{tag}"
    link.symlink_to(w)
    _write(link / f"via-link-{tag}")
    want = {str(w / f"rel-{i}") for i in range(1, 6)}
    unl = _wait_count(file_agent, lambda f: f["operation"] == "unlink" and f["path"] in want, 5)
    assert {e["file"]["path"] for e in unl} == want
    assert _wait_count(file_agent, lambda f: f["operation"] == "write" and f["path"] == str(w / f"via-link-{tag}"), 1)
    _caught_up(file_agent, "sentinel-rel")
    assert not _file_events(file_agent, lambda f: f["path"].startswith(str(u / "rel-")))


def test_bind_mount_onto_a_watched_path_is_reported(file_agent, tmp_path):
    """The cache is keyed by (dentry, mount): the same unwatched directory seen through a bind mount
    inside the watched tree is a different key, and umount/mount invalidate the cache."""
    src = file_agent.dirs["unwatched"] / f"bind-src-{time.monotonic_ns()}"
    src.mkdir()
    for _ in range(5):
        _write(src / "f")                                # cached: nothing watched in src
    target = file_agent.dirs["watched"] / src.name
    target.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(target)], check=True)
    try:
        _write(target / "f", "through the mount\n")
        assert _wait_count(file_agent, lambda f: f["operation"] == "write" and f["path"] == str(target / "f"), 1)
    finally:
        subprocess.run(["umount", str(target)], check=True)
    _caught_up(file_agent, "sentinel-bind")
    assert not _file_events(file_agent, lambda f: f["path"].startswith(str(src)))


TABLES = r"""
import os, sys
mode, unwatched, watched = sys.argv[1:]
keep = [os.open("/dev/null", os.O_RDONLY) for _ in range(100 if mode == "large" else 0)]
for i in range(50):
    with open(os.path.join(unwatched, "f%d" % (i % 5))) as f:
        f.read()
with open(os.path.join(watched, "table-" + mode), "w") as f:
    f.write("x")
"""


def test_small_and_large_descriptor_tables(file_agent):
    """A process that never had more than 64 descriptors is served by direct loads from the table
    embedded in files_struct, a larger one by bpf_probe_read_kernel: both must report the watched
    write and nothing else. (A subshell's fork copies a table sized by the subshell's own descriptors.)"""
    u = file_agent.dirs["unwatched"] / f"tables-{time.monotonic_ns()}"
    u.mkdir()
    for i in range(5):
        (u / f"f{i}").write_text("x")
    w = file_agent.dirs["watched"]
    py = sys.executable
    subprocess.run(["/bin/sh", "-c", f'("{py}" -c "$0" small {u} {w}); ("{py}" -c "$0" large {u} {w})', TABLES],
                   check=True)
    for mode in ("small", "large"):
        path = str(w / f"table-{mode}")
        assert _wait_count(file_agent, lambda f, p=path: f["operation"] == "open" and f["path"] == p, 1), mode
        assert _wait_count(file_agent, lambda f, p=path: f["operation"] == "write" and f["path"] == p, 1), mode
    assert not _file_events(file_agent, lambda f: f["path"].startswith(str(u)))


MEMO = r"""
import os, sys
unwatched_a, unwatched_b, watched = sys.argv[1:]
with open("/proc/self/status") as f:
    size = int(next(line for line in f if line.startswith("FDSize:")).split()[1])
assert size <= 64, f"descriptor table of {size}: the fast path would not run"
def warm(d):
    for _ in range(20):
        for i in range(5):
            with open(os.path.join(d, "f%d" % i)) as f:
                f.read()
warm(unwatched_a)
moved = os.path.join(watched, os.path.basename(unwatched_a))
os.rename(unwatched_a, moved)
with open(os.path.join(moved, "f0"), "a") as f:
    f.write("after the rename\n")
warm(unwatched_b)
print("ready", flush=True)
sys.stdin.readline()
with open(os.path.join(unwatched_b, "f0"), "a") as f:
    f.write("after the watch change\n")
"""


def test_fast_path_memo_follows_renames_and_watch_changes(file_agent):
    """The per-CPU memo of the last unwatched directory answers most opens of a process with a small
    descriptor table (on_open_exit's fast path): a rename of that directory into the watched tree, and a
    watch-set change that covers it, must both make the next write there visible at once, from the
    same process, while the memo is warm."""
    tag = time.monotonic_ns()
    u, w = file_agent.dirs["unwatched"], file_agent.dirs["watched"]
    a, b = u / f"memo-a-{tag}", u / f"memo-b-{tag}"
    for d in (a, b):
        d.mkdir()
        for i in range(5):
            (d / f"f{i}").write_text("x")
    sensor = _sensor(file_agent)
    old_watch, old_enforce = list(sensor.config.watch), list(sensor.config.enforce)
    before = _kernel_stats(file_agent)
    child = subprocess.Popen(["/bin/sh", "-c", f'("{sys.executable}" -c "$0" {a} {b} {w})', MEMO],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        sensor.set_watch(old_watch + [f"{b}/"], old_enforce)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(30) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sensor.set_watch(old_watch, old_enforce)
    assert _kernel_stats(file_agent)["cache_skips"] - before["cache_skips"] >= 150
    for path in (str(w / a.name / "f0"), str(b / "f0")):
        found = _wait_count(file_agent, lambda f, p=path: f["operation"] == "write" and f["path"] == p, 1)
        assert found, f"the write to {path} was not reported"
    # the warm-up opens were never reported (the rename itself names the old path)
    assert not _file_events(file_agent, lambda f: f["operation"] != "rename" and f["path"].startswith(str(a)))
    assert not _file_events(file_agent, lambda f: f["path"].startswith(str(b)) and f["operation"] == "open"
                            and f["path"] != str(b / "f0"))


def test_a_shell_that_execs_a_shell_is_named_by_its_last_image(file_agent):
    """sh execs sh, which reads a watched file, while the process sensor is held: pid and comm are the
    same for both images, so only waiting until the process sensor has read up to the read tells them
    apart (collector/sensors/attribution.py). The read must carry the second image's exec_id."""
    target = file_agent.dirs["watched"] / f"exec-chain-{time.monotonic_ns()}"
    target.write_text("x\n")
    sh = subprocess.Popen(["/bin/sh", "-c", 'read go; exec /bin/sh -c ": < \\"$0\\"; echo done"', str(target)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = file_agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == sh.pid,
                                what="the first shell's exec")[-1]
    with process_sensor_held(file_agent):
        sh.stdin.write("go\n")
        sh.stdin.close()
        assert sh.stdout.readline().strip() == "done" and sh.wait(10) == 0
        time.sleep(0.6)
        assert not [e for e in _file_events(file_agent, lambda f: f["path"] == str(target))
                    if e["process"]["pid"] == sh.pid]  # waiting for the process sensor
    file_agent.wait_for(lambda e: e["type"] == "process_exit" and e["process"]["pid"] == sh.pid, what="exit")
    execs = [e for e in file_agent.events() if e["type"] == "process_exec" and e["process"]["pid"] == sh.pid]
    assert len(execs) == 2 and execs[0]["process"]["exec_id"] == first["process"]["exec_id"]
    (read,) = file_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == str(target)
                                  and e["process"]["pid"] == sh.pid, what="the read")
    assert read["process"]["exec_id"] == execs[1]["process"]["exec_id"]
    assert read["process"]["args"][-1].startswith(": <")
    assert _sensor(file_agent).counters()["settle_expired"] == 0



def test_a_worker_thread_is_named_by_its_process(file_agent):
    """A read of a watched file by a worker thread: the kernel's task is the thread, whose start time is
    its own, so the event must carry the process' (leader's) start time to find its exec, the tid of the
    thread, and no missing_process."""
    target = file_agent.dirs["watched"] / f"thread-read-{time.monotonic_ns()}"
    target.write_text("x\n")
    code = ("import sys, threading, time\ntime.sleep(0.3)\n"
            "t = threading.Thread(target=lambda: open(sys.argv[1]).read())\nt.start(); t.join()\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(target)])
    assert p.wait(10) == 0
    (read,) = file_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == str(target)
                                  and e["process"]["pid"] == p.pid, what="the thread's read")
    py = file_agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["pid"] == p.pid)[-1]
    assert "missing_process" not in read["process"].get("flags", [])
    assert read["process"]["exec_id"] == py["process"]["exec_id"] and read["process"]["tid"] != p.pid
