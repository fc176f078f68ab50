"""Process sensor: process_exec and process_exit events from bpf/process/process.bpf.c.

Kernel messages are copied out of the ring buffer in one loop (collector/kernel/ringbuf.py, through the
shared KernelSensor lifecycle) and decoded in a batch after each poll with struct.unpack_from, then
joined with the process cache to name the parent. Forks are not emitted: the kernel keeps them in a
map that the cache reads for a process it is asked about before its exec (a fork that never execs is
sent as a message when it exits, or ahead of the exec of its child: a subshell's command), so the
common fork + exec costs one message, not two.

Caveats: the binary is the path given to execve (made absolute against cwd when relative), not the
resolved target of symlinks; cwd is walked in the kernel up to `cwd_depth` components (deeper paths
are flagged `truncated_cwd`); argv beyond `args_max_bytes` is cut and flagged `truncated_args`.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import sys
import time
from typing import Literal

import msgspec
from pydantic import Field, field_validator

from siemhub.collector import container
from siemhub.collector.core.event import (
    SCHEMA_VERSION, Container, Event, Exit, Namespaces, Process, escape_always,
)
from siemhub.collector.core.kernel_settings import KernelFilters
from siemhub.collector.core.settings import PendingConfig, Strict, power_of_two as _power_of_two
from siemhub.collector.k8s.config import KubernetesApiConfig
from siemhub.collector.kernel.btf import BTF
from siemhub.collector.kernel.maps import u32 as _u32
from siemhub.collector.pending import PendingEvents
from siemhub.collector.process_cache import NO_AUID, NS_KINDS, binary_properties
from siemhub.collector.sensors import BPFUnavailable
from siemhub.collector.sensors import SensorContext  # noqa: F401 - SensorContext re-exported
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.kernel import KernelSensor

log = logging.getLogger("siemhub.sensors.process")


# --- settings (`sensors.process`) ---------------------------------------------------------------


class ProcessCacheConfig(Strict):
    max_entries: int = Field(65_536, ge=1024)
    exit_delay: float = Field(30.0, ge=0, description="seconds an exited process stays resolvable")


class IgnoreConfig(Strict):
    binaries: list[str] = Field([], description="executables whose execs are dropped in the kernel (by inode)")
    cgroups: list[str] = Field([], description="cgroup v2 directories whose execs are dropped in the kernel")


class KubernetesConfig(Strict):
    """Pod enrichment from the kubelet's directories on the node (no API server access needed), and
    from the API server when one is reachable (`api`, collector/k8s/)."""
    enabled: bool = True
    log_pods_dir: str = Field("/var/log/pods", description="<namespace>_<pod>_<uid>/<container>/ per pod")
    log_containers_dir: str = Field("/var/log/containers", description="<pod>_<namespace>_<container>-<id>.log")
    kubelet_pods_dir: str = Field("/var/lib/kubelet/pods", description="<uid>/containers/<name>/ per pod")
    cgroup_roots: list[str] = Field(["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
                                    description="cgroup v2 mounts, for the QoS class of cgroupfs-layout pods")
    negative_ttl: float = Field(10.0, ge=0, le=3600, description="seconds before a pod not found is looked up again")
    runtime_dirs: list[str] = Field(
        ["/run/containerd/io.containerd.runtime.v2.task/k8s.io", "/run/containers/storage/overlay-containers"],
        description="container runtimes' OCI bundle directories (<id>/config.json, <id>/userdata/config.json): "
                    "the image, and the pod when the log directories are not mounted; [] to skip")
    api: KubernetesApiConfig = Field(KubernetesApiConfig(), description="pod labels, annotations, images and "
                                     "owning workloads from the API server (docs/kubernetes.md)")


class ProcessSensorConfig(Strict):
    args_max_bytes: int = Field(8192, ge=256, le=16384, description="argv bytes copied (power of two)")
    filename_max_bytes: int = Field(1024, ge=256, le=4096, description="binary path bytes (power of two)")
    cwd_depth: int = Field(24, ge=1, le=48, description="path components walked for cwd")
    procfs_scan: bool = True
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    # Large batches keep user space cheap (a batch of ~1,000 messages costs ~25% less CPU per message
    # than one of ~250: the workload evicts the agent's caches between polls; bench/exec_storm.py), so
    # the kernel wakes the reader rarely and the latency bound is poll_interval.
    wakeup_every: int = Field(4096, ge=1, le=65536, description="force a wake-up every N messages per CPU "
                              "(power of two); a quarter of the ring unread also wakes the reader")
    poll_interval: float = Field(0.5, gt=0, le=5, description="seconds between ring buffer polls: the latency "
                                 "bound of process events")
    ancestors: int = Field(0, ge=0, le=32, description="ancestors above the parent listed on process_exec")
    caps: Literal["telling", "always"] = Field(
        "telling", description="`telling`: capability lists only where they differ from the default for the "
        "process' euid (for 0 all that root can hold on the node, none otherwise); `always`: on every process")
    ignore: IgnoreConfig = IgnoreConfig()
    pending: PendingConfig = PendingConfig()
    cache: ProcessCacheConfig = ProcessCacheConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    _p2 = field_validator("args_max_bytes", "filename_max_bytes", "ringbuf_pages", "wakeup_every")(
        classmethod(lambda cls, v: _power_of_two(v)))

OFFSETS = {
    "OFF_TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_PID": ("task_struct", "pid"),
    "OFF_TASK_MM": ("task_struct", "mm"),
    "OFF_TASK_EXIT_CODE": ("task_struct", "exit_code"),
    "OFF_TASK_LOGINUID": ("task_struct", "loginuid"),
    "OFF_TASK_FS": ("task_struct", "fs"),
    "OFF_TASK_CRED": ("task_struct", "cred"),
    "OFF_TASK_SIGNAL": ("task_struct", "signal"),
    "OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_MM_ARG_START": ("mm_struct", "arg_start"),
    "OFF_MM_ARG_END": ("mm_struct", "arg_end"),
    "OFF_FS_PWD": ("fs_struct", "pwd"),
    "OFF_PATH_MNT": ("path", "mnt"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_DENTRY_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_NAME": ("dentry", "d_name"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_MOUNT_MNT": ("mount", "mnt"),
    "OFF_MOUNT_PARENT": ("mount", "mnt_parent"),
    "OFF_MOUNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
    "OFF_VFSMOUNT_ROOT": ("vfsmount", "mnt_root"),
    "OFF_CRED_EUID": ("cred", "euid"),
    "OFF_CRED_EGID": ("cred", "egid"),
    "OFF_SIGNAL_LIVE": ("signal_struct", "live"),
    "OFF_CRED_CAP_EFFECTIVE": ("cred", "cap_effective"),
    "OFF_CRED_CAP_PERMITTED": ("cred", "cap_permitted"),
    "OFF_CRED_USER_NS": ("cred", "user_ns"),
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_NSPROXY_MNT": ("nsproxy", "mnt_ns"),
    "OFF_NSPROXY_PID": ("nsproxy", "pid_ns_for_children"),
    "OFF_NSPROXY_NET": ("nsproxy", "net_ns"),
    "OFF_NSPROXY_UTS": ("nsproxy", "uts_ns"),
    "OFF_NSPROXY_IPC": ("nsproxy", "ipc_ns"),
    "OFF_NSPROXY_CGROUP": ("nsproxy", "cgroup_ns"),
    "OFF_MNTNS_NS": ("mnt_namespace", "ns"),
    "OFF_PIDNS_NS": ("pid_namespace", "ns"),
    "OFF_NETNS_NS": ("net", "ns"),
    "OFF_UTSNS_NS": ("uts_namespace", "ns"),
    "OFF_IPCNS_NS": ("ipc_namespace", "ns"),
    "OFF_CGROUPNS_NS": ("cgroup_namespace", "ns"),
    "OFF_USERNS_NS": ("user_namespace", "ns"),
    "OFF_NSCOMMON_INUM": ("ns_common", "inum"),
    "OFF_MM_EXE_FILE": ("mm_struct", "exe_file"),
    "OFF_FILE_F_INODE": ("file", "f_inode"),
    "OFF_INODE_I_MODE": ("inode", "i_mode"),
    "OFF_INODE_I_UID": ("inode", "i_uid"),
    "OFF_INODE_I_GID": ("inode", "i_gid"),
    "OFF_INODE_I_INO": ("inode", "i_ino"),
    "OFF_INODE_I_SB": ("inode", "i_sb"),
    "OFF_SB_S_DEV": ("super_block", "s_dev"),
    "OFF_TASK_CGROUPS": ("task_struct", "cgroups"),
    "OFF_CSS_SET_DFL_CGRP": ("css_set", "dfl_cgrp"),
    "OFF_CGROUP_KN": ("cgroup", "kn"),
    "OFF_KERNFS_NODE_NAME": ("kernfs_node", "name"),
}


def _offsets() -> dict[str, tuple[str, str]]:
    """OFFSETS plus fields whose name changed across kernels."""
    wanted = dict(OFFSETS)
    parent = "__parent" if BTF.load().has_field("kernfs_node", "__parent") else "parent"  # renamed in 6.15
    wanted["OFF_KERNFS_NODE_PARENT"] = ("kernfs_node", parent)
    return wanted

_EXEC_UNPACK = m.EXEC.unpack_from
_FORK_UNPACK = m.FORK.unpack_from
_EXIT_UNPACK = m.EXIT.unpack_from
_EXEC_SIZE = m.EXEC.size
_MSG_EXEC, _MSG_FORK, _MSG_EXIT = m.MSG_EXEC, m.MSG_FORK, m.MSG_EXIT
_ARGS_MEMO_MAX = 512  # argument lists up to this many bytes are memoized (longer: hashing costs as much)
_KFLAGS = ((m.EXEC_TRUNC_FILENAME, "truncated_binary"), (m.EXEC_TRUNC_ARGS, "truncated_args"),
           (m.EXEC_TRUNC_CWD, "truncated_cwd"), (m.EXEC_ARGS_FAULT, "args_unreadable"))

_MAPS = ["events", "lost", "filtered", "ignore_exe", "ignore_cgroup", "filters_on", "forks"]
_FORK_INFO = struct.Struct("<IIQQ")  # struct fork_info {u32 pid; u32 ppid; u64 start_boottime; u64 ktime}
FORK_SLOTS = 65536  # SH_FORK_SLOTS: the forks array is indexed by pid modulo this
_EXE_KEY = struct.Struct("<QI4x")


_intern = sys.intern





_UNSEEN = object()

_LOST_KINDS = {m.MSG_EXEC: "exec", m.MSG_FORK: "fork", m.MSG_EXIT: "exit"}


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


class ProcessSensor(KernelSensor):
    name = "process"
    config_model = ProcessSensorConfig
    program = "process/process.bpf.c"
    lost_kinds = _LOST_KINDS
    counts_filtered = True

    def __init__(self, config: ProcessSensorConfig, ctx: SensorContext) -> None:
        super().__init__(config, ctx)
        if ctx.cache is not None:
            ctx.cache.caps_always = config.caps == "always"
        self._ns_cache: dict[tuple[int, ...], Namespaces] = {}
        self.pending = PendingEvents(lambda pid, start: ctx.cache.get(pid, start),
                                     max_items=config.pending.max_events, max_age=config.pending.max_wait)
        self._early: list[Event] = []  # events the pending queue pushed out while decoding
        self.filters: dict[str, list[str]] = {"binaries": [], "cgroups": []}
        self._containers: dict[str, Container] = {}
        self._by_cgroup: dict[int, tuple[Container, tuple | None] | None] = {}
        self._forks_map = None
        self._gen = 0  # polls begun + ended (exec_horizon)
        self._read_until = 0
        self._paths: dict[tuple[bytes, bytes, int], tuple[str, str | None, tuple[str, ...]]] = {}
        self._comms: dict[bytes, str | tuple[str, str]] = {}
        self._args: dict[bytes, tuple[list[str], str | None]] = {}
        self._attached_ns = 0  # boot time when the programs were attached: older processes may be unknown
        self.missing: dict[str, int] = {}  # missing_process exits by cause (_count_missing)

    # --- lifecycle ---

    def load(self) -> None:
        c = self.config
        self._attached_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME)  # just before: errs towards not_seen
        defines = {
            "SH_ARGS_MAX": c.args_max_bytes,
            "SH_FILENAME_MAX": c.filename_max_bytes,
            "SH_CWD_DEPTH": c.cwd_depth,
            "SH_RINGBUF_PAGES": c.ringbuf_pages,
            "SH_WAKEUP_EVERY": c.wakeup_every,
            "SH_NR_CPUS": _pow2_at_least(os.cpu_count() or 1),
            "SH_FORK_SLOTS": FORK_SLOTS,
        }
        # The loader child is a process like any other: learn it while it lives, so its exit (the first
        # event the sensor sees) names it instead of being a `missing_process`.
        try:
            self._open(_offsets(), defines, _MAPS, c.ringbuf_pages, before_release=self.ctx.cache.resolve)
        except BPFUnavailable as exc:
            if "failed" not in str(exc):
                raise
            # Kernels before 5.11 lack bpf_get_current_task_btf (direct, verifier-checked loads): the same
            # program with every field read through bpf_probe_read_kernel instead (slower, same fields).
            log.warning("process sensor: %s; retrying with probe reads only", exc)
            self._open(_offsets(), {**defines, "SH_PROBE_READ_ONLY": 1}, _MAPS, c.ringbuf_pages,
                       before_release=self.ctx.cache.resolve)
        self._forks_map = self._bpf.maps["forks"]
        self.ctx.cache.fork_source = self.fork_info
        self.ctx.cache.exec_horizon = self.exec_horizon  # the other sensors now wait for us (attribution.py)
        self.set_filters(c.ignore.binaries, c.ignore.cgroups)
        if c.procfs_scan:
            started = time.monotonic()
            n = self.ctx.cache.scan_procfs()
            log.info("process sensor: %d running processes read from /proc in %.2fs", n, time.monotonic() - started)

    def ready(self, raw: list[bytes]) -> list[Event]:
        events = self.decode(raw) if raw else []
        if self.pending:
            events.extend(self.pending.drain())
        return events

    def flush(self) -> list[Event]:
        return self.pending.flush()

    def poll(self, timeout: float) -> int:
        if self._bpf is None:
            return 0
        if timeout > 0:
            self._rb.wait(timeout)
        self._gen += 1  # odd while records may be out of the ring and not yet in the cache
        try:
            return super().poll(0)
        finally:
            self._gen += 1

    def read_until(self, ktime: int) -> None:
        self._read_until = ktime  # every exec before `ktime` is in the cache

    def exec_horizon(self) -> int:
        """Boot time up to which every exec is in the cache (other sensors' threads ask). Now, when the
        ring is empty and no poll is between taking records and decoding them (checked like a seqlock:
        the poll count is even and the same before and after); else the start of the last poll that
        emptied the ring. An exec is committed to the ring before anything its process does next, so an
        event up to that time finds its image in the cache."""
        gen, rb = self._gen, self._rb
        if not gen & 1 and rb is not None:
            now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            try:
                if not rb.pending():
                    if self._gen == gen:
                        return now
                else:
                    # Messages wait for a batched wake-up or the poll timeout (up to poll_interval):
                    # someone is waiting on them, so read them now.
                    rb.wake()
            except (ValueError, OSError):  # unmapped or closed by an unload in the meantime
                pass
        return self._read_until

    def unload(self) -> None:
        super().unload()
        if self.ctx.cache.fork_source == self.fork_info:
            self.ctx.cache.fork_source = None
        if self.ctx.cache.exec_horizon == self.exec_horizon:
            self.ctx.cache.exec_horizon = None
        self._forks_map = None

    def fork_info(self, pid: int) -> tuple[int, int, int] | None:
        """(ppid, start_ns, fork ktime) of a process forked and not exec'd yet, from the kernel's
        `forks` map: forks are not sent as messages (most exec at once, and the exec says it all)."""
        m = self._forks_map
        if m is None:
            return None
        try:
            raw = m.lookup(_u32(pid & (FORK_SLOTS - 1)))
        except OSError:
            return None
        if raw is None:
            return None
        slot_pid, ppid, start_ns, ktime = _FORK_INFO.unpack(raw)
        return (ppid, start_ns, ktime) if slot_pid == pid else None

    # --- the policy hook ---

    def kernel_settings(self, config: ProcessSensorConfig, k: KernelFilters) -> tuple:
        # an ignore policy naming a binary that does not exist (yet) stays a user-space drop
        kb = [b for b in k.process_binaries if os.path.exists(b)]
        return list(dict.fromkeys([*config.ignore.binaries, *kb])), list(config.ignore.cgroups)

    def check_kernel_settings(self, binaries: list[str], cgroups: list[str]) -> tuple[list, list]:
        return self.check_filters(binaries, cgroups)

    def apply_kernel_settings(self, binaries: list[str], cgroups: list[str]) -> None:
        self.set_filters(binaries, cgroups)

    def set_filters(self, binaries: list[str], cgroups: list[str]) -> None:
        """Replace the in-kernel ignore lists (at start-up and at run time). Binaries are matched by the
        device and inode of the file (a path that is replaced later is not followed); cgroups by the id
        of a cgroup v2 directory, given as a path under the cgroup2 mount or absolute. Raises ValueError,
        leaving the current filters in force, when a path cannot be resolved."""
        keys, ids = self.check_filters(binaries, cgroups)
        self._apply_filters(binaries, cgroups, keys, ids)

    def check_filters(self, binaries: list[str], cgroups: list[str]) -> tuple[list, list]:
        """What set_filters would put in the kernel, without changing anything (ValueError when a path
        cannot be resolved): lets a reload check every sensor before it changes any."""
        keys, ids, problems = [], [], []
        for path in binaries:
            try:
                st = os.stat(path)
            except OSError as exc:
                problems.append(f"ignore.binaries: {path}: {exc.strerror}")
                continue
            kdev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)  # the kernel's internal dev_t
            keys.append((st.st_ino, kdev))
        root = _cgroup2_root()
        for path in cgroups:
            full = path if path.startswith("/sys/") else os.path.join(root or "/sys/fs/cgroup", path.lstrip("/"))
            try:
                ids.append(os.stat(full).st_ino)  # on cgroup v2 the directory's inode is the cgroup id
            except OSError as exc:
                problems.append(f"ignore.cgroups: {full}: {exc.strerror}")
        if problems:
            raise ValueError("; ".join(problems))
        return keys, ids

    def _apply_filters(self, binaries: list[str], cgroups: list[str], keys: list, ids: list) -> None:
        maps = self._bpf.maps
        exe_map, cg_map = maps["ignore_exe"], maps["ignore_cgroup"]
        exe_map.clear()
        cg_map.clear()
        for ino, dev in keys:
            exe_map.update(_EXE_KEY.pack(ino, dev), b"\x01")  # struct exe_key {u64 ino; u32 dev; u32 pad}
        for cid in ids:
            cg_map.update(cid.to_bytes(8, "little"), b"\x01")
        if keys or ids:
            maps["filters_on"].update(_u32(0), _u32(1))  # stays on: ignored_pids may hold entries
        self.filters = {"binaries": list(binaries), "cgroups": list(cgroups)}
        state = (tuple(keys), tuple(ids))
        self.log_once(log, "filters", state, "process sensor: ignoring %d binaries and %d cgroups in the kernel",
                      len(keys), len(ids))

    def counters(self) -> dict[str, int]:
        out = super().counters()
        out["pending_resolved"] = self.pending.resolved
        out["pending_expired"] = self.pending.expired
        out["pending_overflow"] = self.pending.overflow
        for cause, n in self.missing.items():
            out[f"missing_process_{cause}"] = n
        return out

    # --- decoding (pure apart from the cache; tests feed it raw messages) ---

    def decode(self, raw: list[bytes]) -> list[Event]:
        events: list[Event] = self._early
        self._early = []
        append, exec_, exit_ = events.append, self._exec, self._exit
        for msg in raw:
            try:
                kind = msg[0]
                if kind == _MSG_EXEC:
                    append(exec_(msg))
                elif kind == _MSG_EXIT:
                    ev = exit_(msg)
                    if ev is not None:
                        append(ev)
                elif kind == _MSG_FORK:
                    self._fork(msg)
                else:
                    self._decode_error("unknown_type")
            except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
                self._decode_error(type(exc).__name__)
        return events

    def _exec(self, msg: bytes) -> Event:
        # The hot path: one unpack, slices, and str.decode fast paths; the rare cases (non-UTF-8,
        # truncation, relative paths, containers, namespace entry) take the slow branches.
        (_, size, ktime, pid, tid, ppid, _old_tid, uid, gid, euid, egid, auid, kflags, exe_uid, exe_gid,
         start_ns, pstart_ns, cgroup_id, cap_eff, cap_prm, _exe_ino, _exe_dev, ns_mnt, ns_pid, ns_net,
         ns_user, ns_uts, ns_ipc, ns_cgroup, exe_mode, fn_len, args_len, cwd_len, _depth, cg_len,
         comm) = _EXEC_UNPACK(msg)
        if size != len(msg) or _EXEC_SIZE + fn_len + args_len + cwd_len + cg_len > size:
            raise ValueError("length mismatch")
        a = _EXEC_SIZE + fn_len
        b = a + args_len
        c = b + cwd_len
        # A host runs few distinct (binary, cwd) pairs: decode each once.
        key = (msg[_EXEC_SIZE:a], msg[b:c], kflags & m.EXEC_TRUNC_CWD)
        paths = self._paths.get(key)
        if paths is None:
            paths = self._decode_paths(key)
        binary, cwd, path_flags = paths
        flags: list[str] = [*path_flags] if path_flags else []
        if args_len:
            raw_args = msg[a:b]
            # Command lines repeat (shells, cron, probes, build steps): short ones are decoded once and the
            # list shared by the images that have it (processes are immutable once built).
            hit = self._args.get(raw_args) if args_len <= _ARGS_MEMO_MAX else None
            if hit is None:
                n = len(flags)
                args = _split_args(raw_args, flags)
                if args_len <= _ARGS_MEMO_MAX:
                    if len(self._args) >= 4096:
                        self._args.clear()
                    self._args[raw_args] = (args, flags[n] if len(flags) > n else None)  # non_utf8_args
            else:
                args, flag = hit
                if flag is not None:
                    flags.append(flag)
        else:
            args = []
        if kflags:
            flags.extend(name for bit, name in _KFLAGS if kflags & bit and name not in flags)
        comm_s = self._comms.get(comm)
        if comm_s is None:
            comm_s = self._decode_comm(comm)
        if comm_s.__class__ is tuple:  # not UTF-8: (escaped, flag)
            flags.append(comm_s[1])
            comm_s = comm_s[0]

        ctx = self.ctx
        cache = ctx.cache
        parent = cache.resolve(ppid, pstart_ns)
        if parent is None:
            if ppid:  # pid 1 and kernel threads have no parent to find
                flags.append("missing_parent")
            pproc = None
            parent_exec_id = None
        else:
            pproc = parent.summary()
            parent_exec_id = pproc.exec_id
        inums = (ns_mnt, ns_pid, ns_net, ns_user, ns_uts, ns_ipc, ns_cgroup)
        ns = self._ns_cache.get(inums)
        if ns is None:
            ns = self._ns(pid, inums)
        entered: list[str] = []
        if ns is not None:
            entered = cache.entered_namespaces(pid, ns, parent.proc.ns if parent is not None else None)
            if entered:
                flags.append("namespace_entry")
        found = self._by_cgroup.get(cgroup_id, _UNSEEN) if cg_len else None
        if found is _UNSEEN:
            found = self._container_of(cgroup_id, msg[c : c + cg_len])
        cont = pod = None
        if found is not None:
            cont, pod_key = found
            if pod_key is not None:
                pod = cache.pods.lookup(*pod_key)  # its own cache; a pod not found yet is retried later
        when = ctx.clock.from_boot(ktime)
        # Positional, in Process' field order (see collector/core/event.py: 23 keywords cost 6x more).
        proc = Process(
            cache.exec_id(pid, ktime), pid, tid, ppid, parent_exec_id,
            uid, euid, gid, egid, None if auid == NO_AUID else auid,
            binary, args, cwd, comm_s, when, flags,
            cache.caps(cap_eff, cap_prm, euid), ns, entered,
            binary_properties(exe_mode, exe_uid, exe_gid) if exe_mode & 0o6000 else None,
            cgroup_id, cont, pod,
        )
        entry = cache.add_exec(proc, start_ns, ktime, pstart_ns if parent is not None else None, pproc)
        return Event(id=ctx.ids.new(), time=when, type="process_exec", schema_version=SCHEMA_VERSION,
                     severity="info", node=ctx.node, process=proc, parent=pproc,
                     ancestors=cache.ancestors(entry, self.config.ancestors) if self.config.ancestors else [])

    def _decode_paths(self, key: tuple[bytes, bytes, int]) -> tuple[str, str | None, tuple[str, ...]]:
        """(binary, cwd, flags) from the kernel's filename and cwd components (leaf first, each
        NUL-terminated) and its truncated-cwd bit; memoized in a bounded dict."""
        raw_fn, raw_cwd_parts, trunc_cwd = key
        flags: list[str] = []
        raw_fn = raw_fn.split(b"\0", 1)[0]
        if raw_cwd_parts:
            parts = raw_cwd_parts[:-1].split(b"\0")
            parts.reverse()
            raw_cwd = b"/" + b"/".join(parts)
        else:
            raw_cwd = None if trunc_cwd else b"/"
        if raw_fn[:1] != b"/" and raw_fn and raw_cwd is not None:
            # Relative path: join the raw bytes, so escaping (if needed) happens once, on the result.
            raw_fn = os.path.normpath(os.path.join(raw_cwd, raw_fn))
            if trunc_cwd:
                flags.append("truncated_binary")
        cwd = None
        if raw_cwd is not None:
            try:
                cwd = _intern(raw_cwd.decode())
            except UnicodeDecodeError:
                cwd = escape_always(raw_cwd)
                flags.append("non_utf8_cwd")
        try:
            binary = _intern(raw_fn.decode())  # thousands of processes share a few binaries and dirs
        except UnicodeDecodeError:
            binary = escape_always(raw_fn)
            flags.append("non_utf8_binary")
        out = (binary, cwd, tuple(flags))
        if len(self._paths) >= 4096:
            self._paths.clear()
        self._paths[key] = out
        return out

    def _decode_comm(self, comm: bytes) -> str | tuple[str, str]:
        raw = comm.split(b"\0", 1)[0]
        try:
            out: str | tuple[str, str] = _intern(raw.decode())
        except UnicodeDecodeError:
            out = (escape_always(raw), "non_utf8_comm")
        if len(self._comms) >= 4096:
            self._comms.clear()
        self._comms[comm] = out
        return out

    def _ns(self, pid: int, inums: tuple[int, ...]) -> Namespaces | None:
        # Few distinct namespace sets exist on a host: share one object per set.
        if not any(inums):
            return None
        ns = self._ns_cache.get(inums)
        if ns is None:
            if len(self._ns_cache) > 4096:
                self._ns_cache.clear()
            ns = self._ns_cache[inums] = Namespaces(**{k: v or None for k, v in zip(NS_KINDS, inums)})
            # A namespace's first user is noted once, when its set is first seen (before this exec is
            # compared with its parent: a process that creates namespaces is their owner, not a joiner).
            self.ctx.cache.note_namespaces(pid, ns)
        return ns

    def _container_of(self, cgroup_id: int, raw: bytes) -> tuple[Container, tuple | None] | None:
        """The container of a cgroup and the key of its pod (container id, pod uid, QoS class), from its
        leaf and parent directory names. Parsed once per cgroup id: a cgroup v2 id is the directory's
        inode number and is not reused while the cgroup exists; the cache is dropped whole when it grows
        past its bound."""
        names = raw.split(b"\0")
        found = container.parse(names[0].decode("utf-8", "replace"),
                                names[1].decode("utf-8", "replace") if len(names) > 1 else "")
        out = None
        if found:
            out = (self._container(found[0], found[1]), (found[0], found[2], found[3]) if found[2] is not None else None)
        if cgroup_id:
            if len(self._by_cgroup) > 4096:
                self._by_cgroup.clear()
            self._by_cgroup[cgroup_id] = out
        return out

    def _container(self, cid: str, runtime: str) -> Container:
        c = self._containers.get(cid)
        if c is None:
            if len(self._containers) > 4096:
                self._containers.clear()
            c = self._containers[cid] = Container(id=cid, runtime=runtime)
        return c

    def _fork(self, msg: bytes) -> None:
        _, size, ktime, pid, ppid, start_ns = _FORK_UNPACK(msg)
        if size != len(msg):
            raise ValueError("length mismatch")
        self.ctx.cache.add_fork(pid, ppid, start_ns, ktime)

    def _exit(self, msg: bytes) -> Event | None:
        _, size, ktime, pid, tid, code, start_ns = _EXIT_UNPACK(msg)
        if size != len(msg):
            raise ValueError("length mismatch")
        entry = self.ctx.cache.get(pid, start_ns)
        if entry is None:
            # Not known (yet): wait briefly for it rather than emit a half-enriched event.
            self._early.extend(self.pending.add(
                pid, start_ns, lambda e: self._exit_event(e, ktime, pid, tid, code, start_ns)))
            return None
        return self._exit_event(entry, ktime, pid, tid, code, start_ns)

    def _count_missing(self, pid: int, start_ns: int) -> None:
        """Why an exit names no process, by cause (counters `missing_process_<cause>` and the metric
        siemhub_process_missing{cause}): `before_attach`, it started before the sensor attached and was
        gone from /proc; `parent_unknown`, its fork was seen but not the process that forked it;
        `not_seen`, neither its fork nor its exec reached user space (ring buffer lost, or filtered)."""
        orphans = self.ctx.cache.orphans
        if start_ns < self._attached_ns:
            cause = "before_attach"
        elif orphans.get(pid) == start_ns:
            cause = "parent_unknown"
            del orphans[pid]
        else:
            cause = "not_seen"
        self.missing[cause] = self.missing.get(cause, 0) + 1
        self.ctx.metrics.process_missing.labels(cause).inc()

    def _exit_event(self, entry, ktime: int, pid: int, tid: int, code: int, start_ns: int) -> Event:
        ctx = self.ctx
        cache = ctx.cache
        if entry is None:
            proc = Process(exec_id=cache.exec_id(pid, start_ns), pid=pid, tid=tid, flags=["missing_process"])
            parent = None
            self._count_missing(pid, start_ns)
        else:
            proc = entry.proc
            if proc.tid != tid:  # the last thread to exit was not the leader
                proc = msgspec.structs.replace(proc, tid=tid)
            parent = entry.parent  # as at its exec: the process its parent_exec_id names
            if parent is None:  # not seen exec'ing (/proc, clone): the parent it has now, if the same process
                pe = cache.parent_of(entry)
                parent = pe.summary() if pe is not None else None
            cache.mark_exited(pid, entry)
        sig = code & 0x7F
        duration = ktime - entry.exec_ktime if entry is not None and entry.exec_ktime else None
        if sig:
            ex = Exit(signal=signal_name(sig), core_dumped=bool(code & 0x80), duration_ns=duration)
        else:
            ex = Exit(code=(code >> 8) & 0xFF, duration_ns=duration)
        return Event(id=ctx.ids.new(), time=ctx.clock.from_boot(ktime), type="process_exit",
                     schema_version=SCHEMA_VERSION, severity="info", node=ctx.node, process=proc, parent=parent,
                     exit=ex)


def _cgroup2_root() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - cgroup2 " in line:
                return line.split()[4]
    return None


def _split_args(raw: bytes, flags: list[str]) -> list[str]:
    if not raw:
        return []
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    try:
        return raw.decode("utf-8").split("\0")
    except UnicodeDecodeError:
        flags.append("non_utf8_args")
        return [escape_always(a) for a in raw.split(b"\0")]


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p
