"""Privilege sensor: privilege_change events from bpf/privilege/privilege.bpf.c.

Operations: setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid, setfsgid, capset (reported
when they changed the credentials), ptrace (PTRACE_ATTACH / PTRACE_SEIZE), module_load (init_module,
finit_module; attempts included, with their result), bpf_load (BPF_PROG_LOAD by any process but this
agent's own loader), mount, and memfd_exec (an exec whose executable is a memfd: fileless execution).

Severity, chosen per event from what it did:
  high    real uid 0 gained by a process whose real uid was not 0, or euid 0 gained from a non-root
          euid and real uid; any module load attempt; any ptrace attach
  medium  any other gain: gid 0, new effective or permitted capabilities, bpf program loads, mounts,
          memfd exec
  low     a credential change that gives nothing new (a daemon dropping root, switching between
          unprivileged ids)
"""

from __future__ import annotations

import logging
import os

from pydantic import Field, field_validator

from siemhub.collector import caps as capnames
from siemhub.collector.core.event import SCHEMA_VERSION, Event, Privilege, Process
from siemhub.collector.core.settings import PendingConfig, Strict, power_of_two as _power_of_two, settle_field
from siemhub.collector.kernel.loader_child import is_loader_command
from siemhub.collector.sensors import SensorContext
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.attribution import ProcessJoin
from siemhub.collector.sensors.kernel import KernelSensor

log = logging.getLogger("siemhub.sensors.privilege")


# --- settings (`sensors.privilege`) -------------------------------------------------------------


class PrivilegeSensorConfig(Strict):
    ringbuf_pages: int = Field(64, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    module_loads: bool = Field(True, description="report init_module/finit_module attempts; on kernels "
                               "without module support this watches every syscall exit (see docs)")
    settle: float = settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages")(classmethod(lambda cls, v: _power_of_two(v)))

OFFSETS = {
    "OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_TASK_CRED": ("task_struct", "cred"),
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_TASK_MM": ("task_struct", "mm"),
    "OFF_MM_EXE_FILE": ("mm_struct", "exe_file"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_F_PATH": ("file", "f_path"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_DENTRY_NAME": ("dentry", "d_name"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_CRED_UID": ("cred", "uid"),
    "OFF_CRED_EUID": ("cred", "euid"),
    "OFF_CRED_SUID": ("cred", "suid"),
    "OFF_CRED_FSUID": ("cred", "fsuid"),
    "OFF_CRED_GID": ("cred", "gid"),
    "OFF_CRED_EGID": ("cred", "egid"),
    "OFF_CRED_CAP_EFFECTIVE": ("cred", "cap_effective"),
    "OFF_CRED_CAP_PERMITTED": ("cred", "cap_permitted"),
    "OFF_PT_REGS_ORIG_AX": ("pt_regs", "orig_ax"),
    "OFF_PT_REGS_DI": ("pt_regs", "di"),
}

OPERATIONS = {
    m.PRIV_SETUID: "setuid", m.PRIV_SETGID: "setgid", m.PRIV_SETREUID: "setreuid", m.PRIV_SETREGID: "setregid",
    m.PRIV_SETRESUID: "setresuid", m.PRIV_SETRESGID: "setresgid", m.PRIV_SETFSUID: "setfsuid",
    m.PRIV_SETFSGID: "setfsgid", m.PRIV_CAPSET: "capset", m.PRIV_PTRACE: "ptrace", m.PRIV_MODULE: "module_load",
    m.PRIV_BPF_LOAD: "bpf_load", m.PRIV_MOUNT: "mount", m.PRIV_MEMFD_EXEC: "memfd_exec",
}
_CRED_OPS = frozenset(range(m.PRIV_SETUID, m.PRIV_CAPSET + 1))
_PTRACE = {16: "PTRACE_ATTACH", 0x4206: "PTRACE_SEIZE"}
_MAPS = ["events", "lost"]
_UNPACK = m.PRIV.unpack_from
_SIZE = m.PRIV.size
_MODULE_TRACEPOINT = "/sys/kernel/tracing/events/syscalls/sys_enter_finit_module"


def _cstr(raw: bytes) -> str | None:
    s = raw.split(b"\0", 1)[0]
    return s.decode("utf-8", "backslashreplace") if s else None


def severity(op: int, old_uid: int, old_euid: int, new_uid: int, new_euid: int, old_gid: int, old_egid: int,
             new_gid: int, new_egid: int, old_caps: int, new_caps: int) -> str:
    if op in (m.PRIV_MODULE, m.PRIV_PTRACE):
        return "high"
    if op in _CRED_OPS:
        if (old_uid != 0 and new_uid == 0) or (old_uid != 0 and old_euid != 0 and new_euid == 0):
            return "high"
        if (old_gid != 0 and new_gid == 0) or (old_gid != 0 and old_egid != 0 and new_egid == 0):
            return "medium"
        if new_caps & ~old_caps:
            return "medium"
        return "low"
    return "medium"


class PrivilegeSensor(KernelSensor):
    name = "privilege"
    config_model = PrivilegeSensorConfig
    program = "privilege/privilege.bpf.c"
    lost_kinds = {0: "privilege"}

    def __init__(self, config: PrivilegeSensorConfig, ctx: SensorContext) -> None:
        super().__init__(config, ctx)
        self.own_bpf_loads = 0
        self.join = ProcessJoin(ctx.cache, config.settle, config.pending.max_events, config.pending.max_wait)
        self.agent_pid = os.getpid()
        self.module_mode = "off"

    # --- lifecycle ---

    def load(self) -> None:
        c = self.config
        modules = 0
        if c.module_loads:
            # Kernels built without module support have no tracepoints for these syscalls: then every
            # syscall exit is watched for their numbers (x86-64 only), which costs every syscall a little.
            modules = 1 if os.path.exists(_MODULE_TRACEPOINT) else 2
        self.module_mode = {0: "off", 1: "tracepoints", 2: "raw_syscalls"}[modules]
        defines = {"SH_RINGBUF_PAGES": c.ringbuf_pages, "SH_MODULES": modules}
        self._open(OFFSETS, defines, _MAPS, c.ringbuf_pages)
        log.info("privilege sensor: module loads watched through %s", self.module_mode)

    def counters(self) -> dict[str, int]:
        return {**super().counters(), "missing_process": self.join.missing,
                "settle_expired": self.join.settle_expired, "own_bpf_loads": self.own_bpf_loads}

    # --- decoding ---

    def decode(self, raw: list[bytes]) -> None:
        for msg in raw:
            try:
                if msg[0] != m.MSG_PRIV:
                    raise ValueError("unknown_type")
                self._priv(msg)
            except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
                self.decode_errors += 1
                self._m_decode.labels(self.name, str(exc) if isinstance(exc, ValueError) else type(exc).__name__).inc()

    def _own_loader(self, proc: Process) -> bool:
        """This agent's BPF loader child (collector/kernel/loader_child.py) loading our own programs."""
        return proc.ppid == self.agent_pid and is_loader_command(proc.args)

    def _priv(self, msg: bytes) -> None:
        (_, size, ktime, pid, tid, start_ns, op, target_pid, result, arg, old_uid, old_euid, _old_suid, old_fsuid,
         new_uid, new_euid, _new_suid, new_fsuid, old_gid, old_egid, new_gid, new_egid, old_cap, new_cap, new_prm,
         name, source, target) = _UNPACK(msg)
        if size != len(msg) or size != _SIZE:
            raise ValueError("length_mismatch")
        operation = OPERATIONS.get(op)
        if operation is None:
            raise ValueError("unknown_operation")
        body = Privilege(operation=operation)
        if op in _CRED_OPS:
            # old/new uid: the real uid (setfsuid: the filesystem uid); old/new gid: the real gid
            if op == m.PRIV_SETFSUID:
                body.old_uid, body.new_uid = old_fsuid, new_fsuid
            else:
                body.old_uid, body.new_uid = old_uid, new_uid
            body.old_gid, body.new_gid = old_gid, new_gid
            gained = new_cap & ~old_cap
            if gained:
                body.new_caps = list(capnames.names(gained))
            body.result = result
        elif op == m.PRIV_PTRACE:
            body.target_pid = target_pid
            body.name = _PTRACE.get(arg, str(arg))
            body.result = result
        elif op == m.PRIV_MODULE:
            body.name = _cstr(name)
            body.result = result
        elif op == m.PRIV_BPF_LOAD:
            body.name = _cstr(name) or f"type:{arg}"
            body.result = result
        elif op == m.PRIV_MOUNT:
            body.name = _cstr(name)
            body.source = _cstr(source)
            body.target = _cstr(target)
            body.result = result
        elif op == m.PRIV_MEMFD_EXEC:
            body.name = _cstr(name)
            body.target = _cstr(target)  # the path handed to exec (/dev/fd/N, /proc/self/fd/N)
        sev = severity(op, old_uid, old_euid, new_uid, new_euid, old_gid, old_egid, new_gid, new_egid, old_cap,
                       new_cap)
        ctx = self.ctx
        when = ctx.clock.from_boot(ktime)

        def build(proc: Process, parent: Process | None) -> Event | None:
            if op == m.PRIV_BPF_LOAD and self._own_loader(proc):
                self.own_bpf_loads += 1
                return None
            return Event(id=ctx.ids.new(), time=when, type="privilege_change", schema_version=SCHEMA_VERSION,
                         severity=sev, node=ctx.node, process=proc, parent=parent, privilege=body)

        self.join.add(ktime, pid, tid, start_ns, build)
