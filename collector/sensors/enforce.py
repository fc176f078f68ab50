"""Enforce sensor: SIGKILL from the kernel for the sigkill policy rules beyond file paths (issue 18):
exec of a forbidden binary, open of a path by a forbidden binary, connect to a forbidden destination
(collector/core/enforce_rules.py says which rules; bpf/enforce/enforce.bpf.c how the kernel decides).

The policy engine hands the rules over in KernelFilters.enforce through the sensor's hooks
(kernel_settings, check_kernel_settings, apply_kernel_settings -> set_rules; start-up, reload). They become kernel tables:
rule i is bit i of every mask. Binaries: exact paths and `dir/*` as (device, inode) of the file or
directory, and as entries of an LPM trie of path strings (a script run by its path); names as the task
comm. Processes already running when the rules change are given their bits from /proc (their
executable's inode and directories, and comm), so a running curl is covered too. Each kill is a
`policy_action` event (enforced: true) named by its process, with the file or network body.

Caveats: a process whose exe/comm changes without exec (prctl) keeps the identity of its exec; a binary
reached by a relative name that climbs out of the cwd ("../x") of a script is not matched by directory;
paths and binaries are resolved to inodes when the rules are installed (a file replaced later by another
inode is not covered until the next reload); connect kills need a cgroup v2 hierarchy (its root gets the
connect4/connect6 hooks through a BPF link that closes with the agent).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import struct

from pydantic import Field, field_validator

from siemhub.collector.core.enforce_rules import MAX_RULES, EnforceRule, check_binaries
from siemhub.collector.core.event import SCHEMA_VERSION, Event, File, Network, PolicyAction, Process
from siemhub.collector.core.kernel_settings import KernelFilters
from siemhub.collector.core.settings import PendingConfig, Strict, power_of_two as _power_of_two, settle_field
from siemhub.collector.kernel import ringbuf
from siemhub.collector.kernel.build import compile_program
from siemhub.collector.kernel.maps import u32
from siemhub.collector.sensors import SensorContext
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.attribution import ProcessJoin
from siemhub.collector.sensors.kernel import KernelSensor

log = logging.getLogger("siemhub.sensors.enforce")


class EnforceSensorConfig(Strict):
    ringbuf_pages: int = Field(64, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    settle: float = settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages")(classmethod(lambda cls, v: _power_of_two(v)))


OFFSETS = {
    "OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_TASK_MM": ("task_struct", "mm"),
    "OFF_TASK_FS": ("task_struct", "fs"),
    "OFF_TASK_PID": ("task_struct", "pid"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_SIGNAL": ("task_struct", "signal"),
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_SIGNAL_LIVE": ("signal_struct", "live"),
    "OFF_MM_EXE_FILE": ("mm_struct", "exe_file"),
    "OFF_FILE_F_PATH": ("file", "f_path"),
    "OFF_FILE_F_MODE": ("file", "f_mode"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_FS_PWD": ("fs_struct", "pwd"),
    "OFF_DENTRY_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_NAME": ("dentry", "d_name"),
    "OFF_DENTRY_INODE": ("dentry", "d_inode"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_INODE_I_INO": ("inode", "i_ino"),
    "OFF_INODE_I_SB": ("inode", "i_sb"),
    "OFF_SB_S_DEV": ("super_block", "s_dev"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDTABLE_FD": ("fdtable", "fd"),
}
_MAPS = ["events", "lost", "killed", "task_class", "bin_ino", "file_ino", "path_rules", "name_rules",
         "conn_cidrs", "conn_ports", "rule_masks"]
_INO_KEY = struct.Struct("<QI4x")
_INO_VAL = struct.Struct("<QI4x")
_MASKS = struct.Struct("<8Q")
_U64 = struct.Struct("<Q")
_UNPACK = m.ENFORCE.unpack_from
_BPF_CGROUP_INET4_CONNECT, _BPF_CGROUP_INET6_CONNECT = 10, 11
_FAMILIES = {2: "ipv4", 10: "ipv6"}


def _kdev(st_dev: int) -> int:
    return (os.major(st_dev) << 20) | os.minor(st_dev)  # the kernel's internal dev_t (super_block.s_dev)


def _lpm_union(entries: dict[tuple[int, bytes], int], contains) -> dict[tuple[int, bytes], int]:
    """An LPM trie answers with the longest match only: give each entry the bits of every entry that
    contains it, so that the longest match carries the union."""
    out = {}
    for k, bits in entries.items():
        for k2, b2 in entries.items():
            if k2 != k and contains(k2, k):
                bits |= b2
        out[k] = bits
    return out


class EnforceSensor(KernelSensor):
    name = "enforce"
    config_model = EnforceSensorConfig
    enforces_beyond_files = True  # takes KernelFilters.enforce
    program = "enforce/enforce.bpf.c"
    lost_kinds = {0: "enforce", 1: "task_class_full"}

    def __init__(self, config: EnforceSensorConfig, ctx: SensorContext) -> None:
        super().__init__(config, ctx)
        self.join = ProcessJoin(ctx.cache, config.settle, config.pending.max_events, config.pending.max_wait)
        self.rules: list[EnforceRule] = []
        self._paths: list[str] = []  # open rules' path entries, by index (the kernel reports the index)
        self.kills = 0

    def load(self) -> None:
        c = self.config
        links = {}
        root = _cgroup2_root()
        if root is not None:
            links = {"enforce_connect4": (_BPF_CGROUP_INET4_CONNECT, root),
                     "enforce_connect6": (_BPF_CGROUP_INET6_CONNECT, root)}
        else:
            log.warning("enforce sensor: no cgroup v2 hierarchy: a forbidden connect is killed, but its SYN is sent")
        self._bpf = compile_program(self.program, OFFSETS, {"SH_RINGBUF_PAGES": c.ringbuf_pages}, _MAPS,
                                    cgroup_links=links)
        self._rb = ringbuf.RingBuffer(self._bpf.maps["events"].fd, c.ringbuf_pages * 4096)

    # --- rules (the policy engine's install(), through the sensor's hooks: check_rules, then set_rules) ---

    def kernel_settings(self, config: EnforceSensorConfig, k: KernelFilters) -> tuple:
        return (list(k.enforce),)  # its section has no rules of its own: they all come from policies

    def check_kernel_settings(self, rules: list[EnforceRule]) -> None:
        self.check_rules(rules)

    def apply_kernel_settings(self, rules: list[EnforceRule]) -> None:
        self.set_rules(rules)

    def check_rules(self, rules: list[EnforceRule]) -> None:
        if len(rules) > MAX_RULES:
            raise ValueError(f"{len(rules)} sigkill rules: at most {MAX_RULES} can be enforced in the kernel")
        for r in rules:
            check_binaries(r.binaries)
            for p in r.paths:
                if not os.path.exists(p):
                    raise ValueError(f"sigkill rule {r.policy}/{r.rule}: {p} does not exist")

    def set_rules(self, rules: list[EnforceRule]) -> None:
        self.check_rules(rules)
        maps = self._bpf.maps
        bin_ino: dict[bytes, list] = {}
        file_ino: dict[bytes, list] = {}
        paths: dict[tuple[int, bytes], int] = {}
        names: dict[bytes, int] = {}
        cidrs: dict[tuple[int, bytes], int] = {}
        ports: dict[int, int] = {}
        mk = dict.fromkeys(("exec", "read", "write", "conn", "any_cidr", "any_port", "any_binary"), 0)
        self._paths = []
        for i, r in enumerate(rules):
            bit = 1 << i
            for b in r.binaries:
                if "/" not in b:
                    names[b.encode()[:15].ljust(16, b"\0")] = names.get(b.encode()[:15].ljust(16, b"\0"), 0) | bit
                    continue
                target = b[:-2] if b.endswith("/*") else b
                st = os.stat(target)
                k = _INO_KEY.pack(st.st_ino, _kdev(st.st_dev))
                bin_ino.setdefault(k, [0, 0])[0] |= bit
                for p in {target, os.path.realpath(target)}:
                    raw = (p.rstrip("/") + "/").encode() if b.endswith("/*") else p.encode() + b"\0"
                    raw = raw[:256]
                    paths[(len(raw) * 8, raw)] = paths.get((len(raw) * 8, raw), 0) | bit
            for p in r.paths:
                st = os.stat(p)
                k = _INO_KEY.pack(st.st_ino, _kdev(st.st_dev))
                v = file_ino.setdefault(k, [0, len(self._paths)])
                v[0] |= bit
                self._paths.append(p)
            if r.kind == "exec":
                mk["exec"] |= bit
            elif r.kind == "open":
                mk["read"] |= bit if r.read else 0
                mk["write"] |= bit if r.write else 0
            elif r.kind == "connect":
                mk["conn"] |= bit
                if not r.cidrs:
                    mk["any_cidr"] |= bit
                if not r.ports:
                    mk["any_port"] |= bit
                if not r.binaries:
                    mk["any_binary"] |= bit
                for c in r.cidrs:
                    net = ipaddress.ip_network(c, strict=False)
                    if net.version == 4:
                        key = (96 + net.prefixlen, b"\0" * 10 + b"\xff\xff" + net.network_address.packed)
                    else:
                        key = (net.prefixlen, net.network_address.packed)
                    cidrs[key] = cidrs.get(key, 0) | bit
                for port in r.ports:
                    ports[port] = ports.get(port, 0) | bit
        paths = _lpm_union(paths, lambda a, b: a[0] < b[0] and b[1].startswith(a[1]))
        cidrs = _lpm_union(cidrs, _cidr_contains)
        any_binaries = any(r.binaries for r in rules)
        # off while the tables change: a half-written set must not kill
        maps["rule_masks"].update(u32(0), _MASKS.pack(0, 0, 0, 0, 0, 0, 0, 0))
        for name in ("bin_ino", "file_ino", "path_rules", "name_rules", "conn_cidrs", "conn_ports", "task_class"):
            maps[name].clear()
        for k, (bits, entry) in bin_ino.items():
            maps["bin_ino"].update(k, _INO_VAL.pack(bits, entry))
        for k, (bits, entry) in file_ino.items():
            maps["file_ino"].update(k, _INO_VAL.pack(bits, entry))
        for (plen, raw), bits in paths.items():
            maps["path_rules"].update(u32(plen) + raw.ljust(256, b"\0"), _U64.pack(bits))
        for k, bits in names.items():
            maps["name_rules"].update(k, _U64.pack(bits))
        for (plen, raw), bits in cidrs.items():
            maps["conn_cidrs"].update(u32(plen) + raw, _U64.pack(bits))
        for port, bits in ports.items():
            maps["conn_ports"].update(u32(port), _U64.pack(bits))
        self.rules = list(rules)
        if any_binaries:
            self._scan_procfs(bin_ino, names)
        maps["rule_masks"].update(u32(0), _MASKS.pack(mk["exec"], mk["read"], mk["write"], mk["conn"],
                                                              mk["any_cidr"], mk["any_port"], mk["any_binary"],
                                                              1 if any_binaries else 0))
        if rules:
            log.info("enforce sensor: %d sigkill rules in the kernel", len(rules))

    def _scan_procfs(self, bin_ino: dict[bytes, list], names: dict[bytes, int]) -> None:
        """Bits of the processes already running (their exec happened before these rules)."""
        tc = self._bpf.maps["task_class"]
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                with open(f"/proc/{pid}/comm", "rb") as f:
                    comm = f.read().rstrip(b"\n")[:15].ljust(16, b"\0")
            except OSError:
                continue  # a kernel thread, or gone
            bits = names.get(comm, 0)
            p = exe
            for _ in range(16):
                try:
                    st = os.stat(p)
                except OSError:
                    break
                v = bin_ino.get(_INO_KEY.pack(st.st_ino, _kdev(st.st_dev)))
                if v:
                    bits |= v[0]
                if p == "/":
                    break
                p = os.path.dirname(p)
            if bits:
                tc.update(u32(pid), _U64.pack(bits))

    # --- decoding ---

    def decode(self, raw: list[bytes]) -> None:
        for msg in raw:
            try:
                self._kill(msg)
            except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the stream
                self._decode_error(str(exc) if isinstance(exc, ValueError) else type(exc).__name__)

    def _kill(self, msg: bytes) -> None:
        if msg[0] != m.MSG_ENFORCE or len(msg) != m.ENFORCE.size:
            raise ValueError("length_mismatch")
        (_, size, ktime, pid, tid, start_ns, bits, entry, kind, depth, family, port, acc, _pad, addr,
         names) = _UNPACK(msg)
        if size != len(msg) or not bits:
            raise ValueError("length_mismatch")
        i = (bits & -bits).bit_length() - 1
        if i >= len(self.rules):
            raise ValueError("unknown_rule")
        r = self.rules[i]
        self.kills += 1
        body: dict = {}
        if kind == m.ENF_EXEC:
            what = names.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            reason = f"exec of {what} (binaries {', '.join(r.binaries)})"
        elif kind == m.ENF_OPEN:
            base = self._paths[entry] if entry < len(self._paths) else "?"
            parts = [names[j * 32:(j + 1) * 32].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
                     for j in range(min(depth, 8))]
            path = os.path.join(base, *reversed(parts)) if parts else base
            flags = ["O_RDWR"] if acc == 3 else ["O_WRONLY"] if acc == 2 else ["O_RDONLY"]
            body["file"] = File(operation="open", path=path, flags=flags)
            reason = f"open of {path} by a forbidden binary"
        elif kind == m.ENF_CONNECT:
            fam = _FAMILIES.get(family)
            if fam is None:
                raise ValueError("unknown_kind")
            ip = str(ipaddress.IPv4Address(addr[:4]) if family == 2 else ipaddress.IPv6Address(addr))
            body["network"] = Network(protocol="tcp", family=fam, direction="outbound", destination_ip=ip,
                                      destination_port=port)
            reason = f"connect to {ip}:{port}"
        else:
            raise ValueError("unknown_kind")
        ctx = self.ctx
        when = ctx.clock.from_boot(ktime)
        tags = [f"policy:{r.policy}", *r.tags]

        def build(proc: Process, parent: Process | None) -> Event:
            return Event(id=ctx.ids.new(), time=when, type="policy_action", schema_version=SCHEMA_VERSION,
                         severity=r.severity, node=ctx.node, process=proc, parent=parent, tags=tags,
                         policy=PolicyAction(policy=r.policy, rule=r.rule, action="sigkill", enforced=True,
                                             reason=reason), **body)

        self.join.add(ktime, pid, tid, start_ns, build)

    def counters(self) -> dict[str, int]:
        out = {f"ringbuf_lost_{self.lost_kinds[k]}": v for k, v in self.lost_seen.items()}
        out["kills"] = self.kills
        out["decode_errors"] = self.decode_errors
        return out


def _cidr_contains(a: tuple[int, bytes], b: tuple[int, bytes]) -> bool:
    """LPM key a (prefix length in bits, 16 address bytes) contains key b."""
    if a[0] > b[0] or a == b:
        return False
    shift = 128 - a[0]
    return int.from_bytes(a[1], "big") >> shift == int.from_bytes(b[1], "big") >> shift


def _cgroup2_root() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - cgroup2 " in line:
                return line.split()[4]
    return None
