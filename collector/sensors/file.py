"""File sensor: file_access events for watched paths, from bpf/file/file.bpf.c.

The kernel resolves every path to an absolute one and compares it with the watch list (an LPM trie of
path prefixes) before anything is sent: unwatched paths never reach user space. This module turns the
config's watch and enforce lists into trie entries, reads the ring buffer, and decodes messages into
`file_access` events (and `policy_action` events when an enforce rule killed a process), naming the
process through the shared cache.

Watched paths are matched by name, not by inode: a file that does not exist yet (/etc/ld.so.preload)
or that is replaced by a rename (a new inode under /etc/passwd) is still covered. A path that goes
through a symlink (/lib -> /usr/lib on merged-/usr systems) is watched under both names, because the
kernel reports the real path of opened files. Caveats: see docs/sensors/file.md.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Sequence

from pydantic import Field, field_validator

from siemhub.collector.core.event import SCHEMA_VERSION, Event, File, PolicyAction, Process, escape_bytes
from siemhub.collector.core.kernel_settings import FileEnforceRule, KernelFilters, watch_path
from siemhub.collector.core.settings import PendingConfig, Strict, power_of_two as _power_of_two, settle_field
from siemhub.collector.kernel.build import block_support, check_environment
from siemhub.collector.kernel.maps import u32 as _u32
from siemhub.collector.pending import PendingEvents
from siemhub.collector.sensors import BPFUnavailable, SensorContext
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.attribution import ExecGate
from siemhub.collector.sensors.kernel import KernelSensor

log = logging.getLogger("siemhub.sensors.file")


# --- settings (`sensors.file`) ------------------------------------------------------------------


DEFAULT_FILE_WATCH = [
    "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/",
    "/etc/ssh/", "/root/.ssh/", "/etc/cron.d/", "/etc/crontab", "/var/spool/cron/", "/etc/ld.so.preload",
    "/etc/systemd/system/", "/lib/systemd/system/", "/etc/kubernetes/", "/var/lib/kubelet/config.yaml",
    "/etc/containerd/", "/etc/docker/daemon.json",
]


class FileSensorConfig(Strict):
    watch: list[str] = Field(default_factory=lambda: list(DEFAULT_FILE_WATCH),
                             description="absolute paths; a trailing '/' (or an existing directory) watches "
                                         "everything below it")
    watch_writes: list[str] = Field([], description="paths reported only when changed: opened for writing, "
                                                    "written, unlinked, renamed, chmod/chown, truncated (reads are "
                                                    "not reported); e.g. /proc/sys/")
    enforce: list[FileEnforceRule] = Field([], description="paths whose operations get SIGKILL in the kernel")
    path_depth: int = Field(32, ge=4, le=64, description="path components walked in the kernel")
    ringbuf_pages: int = Field(256, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    wakeup_every: int = Field(16, ge=1, le=4096, description="force a wake-up every N messages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    settle: float = settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))

    @field_validator("watch", "watch_writes")
    @classmethod
    def _watch(cls, v: list[str]) -> list[str]:
        return [watch_path(p) for p in v]

OFFSETS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_TASK_FS": ("task_struct", "fs"),
    "OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FILES_FDTAB": ("files_struct", "fdtab"),
    "OFF_FILES_FD_ARRAY": ("files_struct", "fd_array"),
    "OFF_FDTABLE_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FDTABLE_FD": ("fdtable", "fd"),
    "OFF_FILE_F_PATH": ("file", "f_path"),
    "OFF_FILE_F_INODE": ("file", "f_inode"),
    "OFF_FILE_F_MODE": ("file", "f_mode"),
    "OFF_PATH_MNT": ("path", "mnt"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_FS_PWD": ("fs_struct", "pwd"),
    "OFF_DENTRY_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_NAME": ("dentry", "d_name"),
    "OFF_DENTRY_INODE": ("dentry", "d_inode"),
    "OFF_QSTR_LEN": ("qstr", "len"),
    "OFF_QSTR_HASH_LEN": ("qstr", "hash_len"),
    "OFF_QSTR_HASH": ("qstr", "hash"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_MOUNT_MNT": ("mount", "mnt"),
    "OFF_MOUNT_PARENT": ("mount", "mnt_parent"),
    "OFF_MOUNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
    "OFF_VFSMOUNT_ROOT": ("vfsmount", "mnt_root"),
    "OFF_INODE_I_INO": ("inode", "i_ino"),
    "OFF_INODE_I_SB": ("inode", "i_sb"),
    "OFF_SB_S_DEV": ("super_block", "s_dev"),
}
# The syscall arguments are read back at sys_exit from the saved user registers: the registers that
# carry arguments 0-4 on each architecture (the syscall does not change them).
_ARG_REGS = {"x86_64": ("di", "si", "dx", "r10", "r8")}
_IO_URING_OFFSET = {"OFF_IO_KIOCB_OPCODE": ("io_kiocb", "opcode")}
_MAPS = ["events", "lost", "killed", "watch", "below", "stats", "state", "last"]
_TRACEFS = "/sys/kernel/tracing/events/syscalls"
_IO_URING_TRACEFS = "/sys/kernel/tracing/events/io_uring"
# per-CPU counters of the kernel side (bpf/file/file.bpf.c ST_*), by index
_STATS = ("cache_skips", "paths_resolved", "paths_matched", "cache_stores", "cache_invalidations")

OPERATIONS = {m.FILE_OPEN: "open", m.FILE_WRITE: "write", m.FILE_UNLINK: "unlink", m.FILE_RENAME: "rename",
              m.FILE_CHMOD: "chmod", m.FILE_CHOWN: "chown", m.FILE_TRUNCATE: "truncate"}
# x86-64 / generic open flags (asm-generic/fcntl.h); O_RDONLY is the absence of the access bits
_OPEN_FLAGS = ((0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
               (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o4010000, "O_SYNC"), (0o200000, "O_DIRECTORY"),
               (0o400000, "O_NOFOLLOW"), (0o2000000, "O_CLOEXEC"), (0o10000000, "O_PATH"),
               (0o20200000, "O_TMPFILE"))
_ACCESS = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")
_KFLAGS = ((m.FILE_TRUNC_PATH, "truncated_path"), (m.FILE_TRUNC_TARGET, "truncated_target"),
           (m.FILE_RELATIVE, "relative_path"), (m.FILE_RELATIVE_TARGET, "relative_target"),
           (m.FILE_CREATED, "created"))
_WRITES = frozenset(("write", "unlink", "rename", "chmod", "chown", "truncate"))
_UNSET = 0xFFFFFFFF
_WATCH_VAL = struct.Struct("<III")  # struct watch_val {u32 enforce; u32 rule; u32 report}





def open_flag_names(flags: int) -> list[str]:
    out = [_ACCESS[flags & 3]]
    for bit, name in _OPEN_FLAGS:
        if flags & bit == bit:
            out.append(name)
    if "O_TMPFILE" in out:
        out.remove("O_DIRECTORY")
    return out


def _watch_forms(path: str) -> list[bytes]:
    """Trie keys for one configured path: a directory (trailing '/' or an existing directory) is a prefix
    "dir/" plus the directory itself ("dir" + NUL); a file is its exact name + NUL. When the path goes
    through a symlink, the real path is added too (the kernel reports real paths of opened files)."""
    is_dir = path.endswith("/") or os.path.isdir(path)
    names = {os.path.normpath(path)}
    names.add(os.path.realpath(path))
    keys = []
    for name in sorted(names):
        raw = os.fsencode(name)
        if is_dir and raw != b"/":
            keys += [raw + b"/", raw + b"\0"]
        elif is_dir:
            keys.append(b"/")
        else:
            keys.append(raw + b"\0")
    return keys


# What an entry of `watch_writes` reports: every operation but a plain read (struct watch_val.report).
REPORT_CHANGES = sum(v for k, v in m.FILE_ENF.items() if k != "open_read")


def build_watch_entries(watch: list[str], enforce: list,
                        watch_writes: Sequence[str] = ()) -> dict[bytes, tuple[int, int, int]]:
    """{trie key bytes: (enforce mask, rule number, report mask)}. The trie answers with the longest
    matching entry, so each entry carries the enforcement of every rule whose path covers it (a rule's
    key is a prefix of the entry's key), and reports everything (mask 0) unless every entry covering it
    is a `watch_writes` one (then only changes: REPORT_CHANGES)."""
    rules = []  # (keys, mask, number)
    for i, rule in enumerate(enforce, 1):
        mask = 0
        for op in rule.operations:
            mask |= m.FILE_ENF[op]
        rules.append((_watch_forms(rule.path), mask, i))
    keys: set[bytes] = set()
    for p in watch:
        keys.update(_watch_forms(p))
    for rkeys, _, _ in rules:
        keys.update(rkeys)
    full = set(keys)  # entries that report every operation (watch, enforce rules)
    for p in watch_writes:
        keys.update(_watch_forms(p))
    out = {}
    for key in keys:
        mask = number = 0
        for rkeys, rmask, rnum in rules:
            if any(key.startswith(rk) for rk in rkeys):
                mask |= rmask
                number = number or rnum
        covered = any(key.startswith(f) for f in full if f.endswith(b"/") or f == key)
        out[key] = (mask, number, 0 if covered else REPORT_CHANGES)
    return out


def below_entries(keys) -> dict[bytes, int]:
    """{"A/": len("A/")} for every directory A that has watch entries strictly below it (the kernel's
    verdict cache may only call a directory "nothing watched inside" when it is not among these)."""
    out: dict[bytes, int] = {}
    for key in keys:
        end = len(key) - 1 if key.endswith(b"/") else len(key)  # "dir/" itself is not below "dir/"
        i = key.find(b"/")
        while 0 <= i < end:
            out[key[: i + 1]] = i + 1
            i = key.find(b"/", i + 1)
    return out


def lpm_key(key: bytes) -> bytes:
    """struct lpm_key { u32 prefixlen (bits); u8 data[SH_FILE_KEY_MAX]; }"""
    if len(key) > m.FILE_KEY_MAX:
        raise ValueError(f"watched path longer than {m.FILE_KEY_MAX - 1} bytes: {key!r}")
    return _u32(len(key) * 8) + key.ljust(m.FILE_KEY_MAX, b"\0")


class FileSensor(KernelSensor):
    name = "file"
    config_model = FileSensorConfig
    enforces = True
    program = "file/file.bpf.c"
    lost_kinds = {0: "file"}

    def __init__(self, config: FileSensorConfig, ctx: SensorContext) -> None:
        super().__init__(config, ctx)
        self.killed = 0
        self.watch_paths = 0
        self.watch_missing = 0
        self.block_available = False
        self.kernel_stats = dict.fromkeys((*_STATS, "cache_holds"), 0)
        self._held_since: float | None = None
        self._held_warned = False
        self._rules: list = list(config.enforce)
        self.gate = ExecGate(ctx.cache, config.settle)
        self.pending = PendingEvents(self._lookup, max_items=config.pending.max_events,
                                     max_age=config.pending.max_wait)

    # --- lifecycle ---

    def load(self) -> None:
        c = self.config
        check_environment()
        legacy = os.path.exists(os.path.join(_TRACEFS, "sys_enter_open"))
        regs = _ARG_REGS.get(os.uname().machine)
        if regs is None:
            raise BPFUnavailable(f"file sensor: syscall argument registers unknown on {os.uname().machine}")
        offsets = dict(OFFSETS)
        offsets.update({f"OFF_REG_ARG{i}": ("pt_regs", r) for i, r in enumerate(regs)})
        io_uring = all(os.path.exists(os.path.join(_IO_URING_TRACEFS, t))
                       for t in ("io_uring_submit_req", "io_uring_complete"))
        if io_uring:
            offsets.update(_IO_URING_OFFSET)
        defines = {
            "SH_RINGBUF_PAGES": c.ringbuf_pages,
            "SH_WAKEUP_EVERY": c.wakeup_every,
            "SH_PATH_DEPTH": c.path_depth,
            "SH_LEGACY_SYSCALLS": int(legacy),
            "SH_IO_URING": int(io_uring),
        }
        self._open(offsets, defines, _MAPS, c.ringbuf_pages)
        self.set_watch(c.watch, c.enforce, c.watch_writes)
        # Every program is attached now: renames may hold the verdict cache, which turns it on
        # (bpf/file/file.bpf.c, cache_hold).
        self._bpf.maps["state"].update(_u32(2), struct.pack("<Q", 1))
        self.block_available, why = block_support()
        if c.enforce:
            log.info("file sensor: enforcement in force: sigkill from syscall tracepoints (%d rules); "
                     "block: %s", len(c.enforce), "available but not used" if self.block_available
                     else f"unavailable ({why})")
        else:
            log.info("file sensor: no enforce rules; block: %s", "available" if self.block_available
                     else f"unavailable ({why})")

    # --- the policy hook ---

    def kernel_settings(self, config: FileSensorConfig, k: KernelFilters) -> tuple:
        return (list(dict.fromkeys([*config.watch, *k.file_watch])), [*config.enforce, *k.file_enforce],
                list(dict.fromkeys([*config.watch_writes, *k.file_watch_writes])))

    def check_kernel_settings(self, watch: list[str], enforce: list, watch_writes: Sequence[str] = ()) -> tuple[dict, dict]:
        return self.check_watch(watch, enforce, watch_writes)

    def apply_kernel_settings(self, watch: list[str], enforce: list, watch_writes: Sequence[str] = ()) -> None:
        self.set_watch(watch, enforce, watch_writes)

    def check_watch(self, watch: list[str], enforce: list, watch_writes: Sequence[str] = ()) -> tuple[dict, dict]:
        """The trie entries set_watch would install, without changing anything (ValueError when the
        settings cannot be applied): lets a reload check every sensor before it changes any."""
        entries = build_watch_entries(watch, enforce, watch_writes)
        return entries, {lpm_key(k): _WATCH_VAL.pack(*v) for k, v in entries.items()}

    def set_watch(self, watch: list[str], enforce: list, watch_writes: Sequence[str] = ()) -> None:
        """Replace the watch lists and enforce rules in the kernel (at start-up and at run time)."""
        entries, keys = self.check_watch(watch, enforce, watch_writes)  # raises before any change
        below = {lpm_key(k): _u32(n) for k, n in below_entries(entries).items()}
        # The kernel's verdict cache must forget what it learnt from the old set: entries stored while
        # the maps change carry the generation of the first bump and die with the second.
        self._bump_generation()
        for name, want in (("below", below), ("watch", keys)):
            bmap = self._bpf.maps[name]
            for old in bmap.keys():
                if old not in want:
                    bmap.delete(old)
            for k, v in want.items():
                bmap.update(k, v)
        self._bump_generation()
        self._rules = list(enforce)
        paths = list(watch) + list(watch_writes) + [r.path for r in enforce]
        self.watch_paths = len(paths)
        missing = [p for p in paths if not os.path.lexists(p)]
        self.watch_missing = len(missing)
        state = (tuple(paths), len(entries), tuple(missing))
        self.log_once(log, "watch", state, "file sensor: watching %d paths (%d trie entries); %d do not exist and "
                      "are watched by name for their creation%s", len(paths), len(entries), len(missing),
                      f": {', '.join(missing[:8])}" if missing else "")

    def _bump_generation(self) -> None:
        gmap = self._bpf.maps["state"]  # [3]: the user space generation (bpf/file/file.bpf.c)
        cur = gmap.lookup(_u32(3))
        gmap.update(_u32(3), struct.pack("<Q", (struct.unpack("<Q", cur)[0] if cur else 0) + 1))

    def ready(self, raw: list[bytes]) -> list[Event]:
        events = self.decode(raw) if raw else []
        if self.gate:
            for pid, key, build in self.gate.ready():
                events.extend(self._named(pid, key, build))
        if self.pending:
            events.extend(_flat(self.pending.drain()))
        return events

    def flush(self) -> list[Event]:
        events = [e for pid, key, build in self.gate.ready(force=True) for e in self._named(pid, key, build)]
        return events + _flat(self.pending.flush())

    def check_counters(self) -> None:
        super().check_counters()
        self.killed = sum(self._bpf.maps["killed"].lookup_percpu_u64(_u32(0)))
        smap = self._bpf.maps["stats"]
        self.kernel_stats = {name: sum(smap.lookup_percpu_u64(_u32(i))) for i, name in enumerate(_STATS)}
        # opens answered by the fast path are counted in the per-CPU memo (its first field)
        self.kernel_stats["cache_skips"] += sum(self._bpf.maps["last"].lookup_percpu_u64(_u32(0)))
        held = self._bpf.maps["state"].lookup(_u32(1))
        # renames in flight (the cache is off while > 0): a value that stays up means a lost release
        self.kernel_stats["cache_holds"] = struct.unpack("<Q", held)[0] if held else 0
        now = time.monotonic()
        if not self.kernel_stats["cache_holds"]:
            self._held_since = None
        elif self._held_since is None:
            self._held_since = now
        elif now - self._held_since > 60 and not self._held_warned:
            self._held_warned = True
            log.warning("file sensor: the verdict cache has been off for a minute (%d renames seem in flight): "
                        "every open is resolved in full (correct, slower)", self.kernel_stats["cache_holds"])

    def counters(self) -> dict[str, int]:
        return {**super().counters(), "enforce_kills": self.killed,
                "watch_paths": self.watch_paths, "watch_paths_missing": self.watch_missing,
                "enforce_block_available": int(self.block_available),
                "pending_resolved": self.pending.resolved, "pending_expired": self.pending.expired,
                "pending_overflow": self.pending.overflow, "settle_expired": self.gate.expired,
                **self.kernel_stats}

    # --- decoding (pure apart from the cache; tests feed it raw messages) ---

    def _lookup(self, pid: int, key):
        """The cache entry of the image that made the event: the image running at the event's time
        (ProcessCache.image_at: an event from just before an exec belongs to the image before it), and
        with the same comm (an event can be decoded before the exec that renamed the process; then it
        waits for that exec)."""
        start_ns, comm, ktime = key
        e = self.ctx.cache.get(pid, start_ns)
        if e is None:
            return None
        e, _known = self.ctx.cache.image_at(e, ktime)
        return e if e.proc.comm == comm else None

    def decode(self, raw: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for msg in raw:
            try:
                if msg[0] != m.MSG_FILE:
                    self._decode_error("unknown_type")
                    continue
                events.extend(self._file(msg))
            except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
                self._decode_error(type(exc).__name__)
        return events

    def _file(self, msg: bytes) -> list[Event]:
        (_, size, ktime, pid, tid, start_ns, result, ino, dev, uid, gid, op, flags, mode, arg_uid, arg_gid,
         kflags, rule, path_len, target_len, comm) = m.FILE.unpack_from(msg)
        if size != len(msg) or m.FILE.size + path_len + target_len > size or op not in OPERATIONS:
            raise ValueError("length mismatch" if op in OPERATIONS else "unknown operation")
        a = m.FILE.size + path_len
        operation = OPERATIONS[op]
        fflags: list[str] = []
        path = self._text(msg[m.FILE.size : a], "path", fflags)
        target = self._text(msg[a : a + target_len], "target", fflags) if target_len else None
        if op == m.FILE_OPEN:
            fflags[:0] = open_flag_names(flags)
        elif op == m.FILE_UNLINK and flags & 0x200:
            fflags.append("AT_REMOVEDIR")
        elif op == m.FILE_RENAME:
            fflags += [n for b, n in ((1, "RENAME_NOREPLACE"), (2, "RENAME_EXCHANGE"), (4, "RENAME_WHITEOUT"))
                       if flags & b]
        elif op in (m.FILE_CHOWN, m.FILE_CHMOD) and flags & 0x100:
            fflags.append("AT_SYMLINK_NOFOLLOW")
        fflags += [name for bit, name in _KFLAGS if kflags & bit]
        if not kflags & m.FILE_BY_FD and _unnormalized(path, target):
            fflags.append("unnormalized_path")
        body = File(
            operation=operation, path=path, flags=fflags, target=target,
            mode=(mode & 0o7777) if op == m.FILE_CHMOD or (op == m.FILE_OPEN and _creates(flags)) else None,
            uid=None if op != m.FILE_CHOWN or arg_uid == _UNSET else arg_uid,
            gid=None if op != m.FILE_CHOWN or arg_gid == _UNSET else arg_gid,
            inode=ino or None, result=None if op == m.FILE_WRITE else result,
        )
        comm_s = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
        killed = bool(kflags & m.FILE_KILLED)

        def build(entry) -> list[Event]:
            return self._events(entry, body, ktime, pid, tid, start_ns, comm_s, killed, rule)

        key = (start_ns, comm_s, ktime)
        if not self.gate.passes(ktime):
            # The process sensor has not read every exec up to this event yet (attribution.py): a
            # shell that exec'd a shell would still be the old image in the cache, comm and all.
            self.gate.add(ktime, (pid, key, build))
            return []
        return self._named(pid, key, build)

    def _named(self, pid: int, key, build) -> list[Event]:
        entry = self._lookup(pid, key)
        if entry is None:
            # Not known yet (its exec is still on its way through the process sensor): wait for it, so
            # the event carries the same exec_id as the process_exec. Out of time, /proc is asked.
            return _flat(self.pending.add(pid, key, build))
        return build(entry)

    def _events(self, entry, body: File, ktime: int, pid: int, tid: int, start_ns: int, comm: str,
                killed: bool, rule: int) -> list[Event]:
        ctx = self.ctx
        cache = ctx.cache
        if entry is None:
            entry = cache.resolve(pid, start_ns)  # out of time: the process as it is known now, if at all
        if entry is None:
            proc = Process(exec_id=cache.exec_id(pid, start_ns), pid=pid, tid=tid, comm=comm,
                           flags=["missing_process"])
            parent = None
        else:
            proc = entry.proc if entry.proc.tid == tid else _with_tid(entry.proc, tid)
            pe = cache.parent_of(entry)
            parent = pe.summary() if pe is not None else None
        when = ctx.clock.from_boot(ktime)
        severity = "high" if killed else ("medium" if body.operation in _WRITES or _writes(body) else "low")
        out = [Event(id=ctx.ids.new(), time=when, type="file_access", schema_version=SCHEMA_VERSION,
                     severity=severity, node=ctx.node, process=proc, parent=parent, file=body,
                     tags=["sigkill"] if killed else [])]
        if killed:
            r = self._rules[rule - 1] if 0 < rule <= len(self._rules) else None
            out.append(Event(
                id=ctx.ids.new(), time=when, type="policy_action", schema_version=SCHEMA_VERSION,
                severity="high", node=ctx.node, process=proc, parent=parent, file=body,
                policy=PolicyAction(policy="file.enforce", rule=r.path if r is not None else None,
                                    action="sigkill", enforced=True,
                                    reason=f"{body.operation} {body.path}"),
                tags=["sigkill"]))
        return out

    @staticmethod
    def _text(raw: bytes, field: str, flags: list[str]) -> str:
        text, bad = escape_bytes(raw.split(b"\0", 1)[0])
        if bad:
            flags.append(f"non_utf8_{field}")
        return text


def _flat(built: list[list[Event]]) -> list[Event]:
    """The pending queue hands back what the builders made: one list of events per kernel message."""
    return [e for events in built for e in events]


def _writes(body: File) -> bool:
    return body.operation == "open" and any(f in body.flags for f in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"))


def _creates(flags: int) -> bool:
    return bool(flags & 0o100) or flags & 0o20200000 == 0o20200000  # O_CREAT, O_TMPFILE


def _with_tid(proc: Process, tid: int) -> Process:
    import msgspec

    return msgspec.structs.replace(proc, tid=tid)


def _unnormalized(path: str, target: str | None) -> bool:
    for p in (path, target):
        if p and ("//" in p or "/./" in p or "/../" in p or p.endswith(("/.", "/..")) or not p.startswith("/")):
            return True
    return False
