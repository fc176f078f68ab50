"""Test helpers: raw kernel messages packed with the struct mirrors in messages.py, a fake /proc tree,
and a ProcessSensor wired to a cache that reads that tree (nothing depends on the real host)."""

from __future__ import annotations

import os
from pathlib import Path

from siemhub.collector import procfs
from siemhub.collector.sensors.process import ProcessSensorConfig
from siemhub.collector.container import PodResolver
from siemhub.collector.core.event import Clock, EventIds, Node
from siemhub.collector.metrics import Metrics
from siemhub.collector.process_cache import ProcessCache
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.process import ProcessSensor, SensorContext

NO_AUID = 0xFFFFFFFF
WALL_AT_BOOT = 1_700_000_000 * 10**9  # fixed Clock offset: boot ns 0 is 2023-11-14T22:13:20Z
TICK = procfs.NS_PER_TICK


def exec_msg(pid: int, *, ppid: int = 1, ktime: int = 5 * 10**9, start: int | None = None,
             pstart: int = 0, filename: bytes = b"/bin/true", args: list[bytes] | None = None,
             cwd: list[bytes] | None = None, cwd_raw: bytes | None = None, tid: int | None = None,
             uid: int = 1000, gid: int = 1000, euid: int | None = None, egid: int | None = None,
             auid: int = NO_AUID, flags: int = 0, cgroup_id: int = 0, comm: bytes = b"",
             size: int | None = None, fn_len: int | None = None, cap_eff: int = 0, cap_prm: int = 0,
             ns: tuple[int, ...] = (0,) * 7, exe_mode: int = 0o100755, exe_uid: int = 0, exe_gid: int = 0,
             exe_ino: int = 0, exe_dev: int = 0, cgroup: tuple[bytes, bytes] | None = None) -> bytes:
    """cwd: components from the root down (["home", "u"]); sent leaf-first and NUL-terminated, as the
    kernel walks them. cwd_raw overrides with exact bytes."""
    fn = filename + b"\0" if filename else b""
    argv = b"".join(a + b"\0" for a in (args if args is not None else [filename]))
    if cwd_raw is None:
        cwd_raw = b"".join(c + b"\0" for c in reversed(cwd or []))
    cg = b"".join(c + b"\0" for c in cgroup) if cgroup else b""
    data = fn + argv + cwd_raw + cg
    total = m.EXEC.size + len(data)
    fixed = m.EXEC.pack(
        m.MSG_EXEC, total if size is None else size, ktime,
        pid, pid if tid is None else tid, ppid, pid, uid, gid, uid if euid is None else euid,
        gid if egid is None else egid, auid, flags, exe_uid, exe_gid,
        ktime if start is None else start, pstart, cgroup_id, cap_eff, cap_prm, exe_ino,
        exe_dev, *ns, exe_mode,
        len(fn) if fn_len is None else fn_len, len(argv), len(cwd_raw), len(cwd or []), len(cg), comm,
    )
    return fixed + data


def fork_msg(pid: int, ppid: int, *, ktime: int, start: int | None = None, size: int | None = None) -> bytes:
    return m.FORK.pack(m.MSG_FORK, m.FORK.size if size is None else size, ktime, pid, ppid,
                       ktime if start is None else start)


def exit_msg(pid: int, *, ktime: int, code: int = 0, start: int, tid: int | None = None,
             size: int | None = None) -> bytes:
    return m.EXIT.pack(m.MSG_EXIT, m.EXIT.size if size is None else size, ktime, pid,
                       pid if tid is None else tid, code, start)


def make_proc(root: Path, pid: int, *, ppid: int, start_ticks: int, comm: bytes = b"sh",
              exe: bytes | None = b"/bin/sh", cmdline: bytes = b"sh\0", cwd: bytes | None = b"/",
              uids: tuple[int, ...] = (0, 0, 0, 0), gids: tuple[int, ...] = (0, 0, 0, 0),
              loginuid: bytes | None = b"4294967295") -> Path:
    """A /proc/<pid> directory as the kernel lays it out (only the files procfs.py reads)."""
    d = root / str(pid)
    d.mkdir(parents=True)
    # field 3 (state) onwards; field 22 is starttime (index 19 after the comm)
    rest = ["S", str(ppid)] + ["0"] * 17 + [str(start_ticks)] + ["0"] * 30
    (d / "stat").write_bytes(f"{pid} (".encode() + comm + b") " + " ".join(rest).encode() + b"\n")
    (d / "cmdline").write_bytes(cmdline)
    if exe is not None:
        os.symlink(exe, bytes(d / "exe"))
    if cwd is not None:
        os.symlink(cwd, bytes(d / "cwd"))
    (d / "status").write_bytes(
        b"Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\nPPid:\t%d\n"
        b"Uid:\t%s\nGid:\t%s\nFDSize:\t64\nGroups:\t\n" % (
            pid, pid, ppid, "\t".join(map(str, uids)).encode(), "\t".join(map(str, gids)).encode()))
    if loginuid is not None:
        (d / "loginuid").write_bytes(loginuid)
    return d


def make_clock() -> Clock:
    c = Clock()
    c._offset = WALL_AT_BOOT
    return c


def make_ids(prefix: str = "00000000deadbeef-") -> EventIds:
    ids = EventIds()
    ids._prefix = prefix
    return ids


def fake_kubelet(root: Path) -> PodResolver:
    """A PodResolver reading a kubelet tree under root (var/log/pods, var/log/containers, var/lib/kubelet/
    pods, sys/fs/cgroup), empty unless a test creates it (see add_pod)."""
    return PodResolver(str(root / "var/log/pods"), str(root / "var/log/containers"),
                       str(root / "var/lib/kubelet/pods"), (str(root / "sys/fs/cgroup"),), negative_ttl=30.0,
                       runtime_dirs=(str(root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"),
                                     str(root / "run/containers/storage/overlay-containers")))


def add_pod(root: Path, namespace: str, name: str, uid: str, containers: dict[str, str | None]) -> None:
    """The kubelet's directories for a pod: its log directory per container and, for containers given
    an id, the /var/log/containers symlink that names it."""
    pod_dir = root / "var/log/pods" / f"{namespace}_{name}_{uid}"
    links = root / "var/log/containers"
    links.mkdir(parents=True, exist_ok=True)
    for cname, cid in containers.items():
        (pod_dir / cname).mkdir(parents=True, exist_ok=True)
        (pod_dir / cname / "0.log").touch()
        if cid is not None:
            (links / f"{name}_{namespace}_{cname}-{cid}.log").symlink_to(pod_dir / cname / "0.log")


def add_bundle(root: Path, cid: str, annotations: dict[str, str], crio: bool = False) -> None:
    """A container runtime's OCI bundle for a container: containerd's <id>/config.json or CRI-O's
    <id>/userdata/config.json, with these annotations."""
    import json

    if crio:
        d = root / "run/containers/storage/overlay-containers" / cid / "userdata"
    else:
        d = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "process": {"args": ["/pause"]},
                                               "annotations": annotations}))


class Harness:
    """A ProcessSensor that is never load()ed: decode() only, against a fake /proc."""

    def __init__(self, proc_root: Path, *, max_entries: int = 65536, exit_delay: float = 30.0,
                 node: Node | None = None, k8s_root: Path | None = None) -> None:
        self.metrics = Metrics()
        self.node = node or Node(name="node-a")
        self.clock = make_clock()
        self.ids = make_ids()
        self.cache = ProcessCache(self.node.name, self.clock, self.metrics, max_entries=max_entries,
                                  exit_delay=exit_delay, proc_root=str(proc_root),
                                  pods=fake_kubelet(k8s_root or proc_root.parent / "k8s"))
        self.emitted: list = []
        # pending.max_wait 0: an event for an unknown process goes out (flagged) at the end of the
        # batch, as it would after the wait in the agent; tests of the wait itself set their own.
        self.sensor = ProcessSensor(ProcessSensorConfig(pending={"max_wait": 0}), SensorContext(
            self.node, self.clock, self.ids, self.metrics, self.cache, self.emitted.extend))

    def decode(self, *msgs: bytes):
        return self.sensor.decode(list(msgs)) + self.sensor.pending.drain()

    def one(self, msg: bytes):
        events = self.decode(msg)
        assert len(events) == 1, events
        return events[0]

    def errors(self, reason: str | None = None) -> float:
        if reason is None:
            return self.sensor.decode_errors
        return self.metrics.value("siemhub_decode_errors_total", sensor="process", reason=reason)


S = 10**9  # one second in ns
INIT_START = 0  # ticks; exec_msg() sends parent_start_boottime 0 by default, so ppid 1 resolves


def proc_with_init(tmp_path) -> Path:
    """A fake /proc under tmp_path holding pid 1 (systemd)."""
    root = tmp_path / "proc"
    make_proc(root, 1, ppid=0, start_ticks=INIT_START, comm=b"systemd", exe=b"/usr/lib/systemd/systemd",
              cmdline=b"/sbin/init\0splash\0")
    return root
