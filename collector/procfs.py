"""Reading processes from /proc: the processes that existed before the agent started, and parents the
kernel stream did not show us. Everything here is best effort: a process can vanish mid-read."""

from __future__ import annotations

import os
from dataclasses import dataclass

from siemhub.collector.core.event import escape_always, escape_bytes

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // CLK_TCK


@dataclass(slots=True)
class ProcInfo:
    pid: int
    ppid: int
    start_ticks: int  # /proc/<pid>/stat field 22: start time in clock ticks since boot
    comm: str
    binary: str
    args: list[str]
    cwd: str | None
    uid: int | None
    euid: int | None
    gid: int | None
    egid: int | None
    auid: int | None
    flags: list[str]
    cap_effective: int | None = None
    cap_permitted: int | None = None
    ns: dict[str, int] | None = None
    cgroup_path: str | None = None
    exe_mode: int | None = None
    exe_uid: int | None = None
    exe_gid: int | None = None


NS_KINDS = ("mnt", "pid", "net", "user", "uts", "ipc", "cgroup")


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _link(path: str) -> bytes | None:
    try:
        return os.readlink(path.encode())
    except OSError:
        return None


def read_process(pid: int, root: str = "/proc") -> ProcInfo | None:
    base = f"{root}/{pid}"
    stat = _read(f"{base}/stat")
    if not stat:
        return None
    # comm may contain spaces and parentheses: the fields start after the last ')'.
    lpar, rpar = stat.find(b"("), stat.rfind(b")")
    fields = stat[rpar + 2 :].split()
    try:
        ppid, start_ticks = int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None
    flags = ["procfs"]
    comm, _ = escape_bytes(stat[lpar + 1 : rpar])
    exe = _link(f"{base}/exe")
    if exe is not None and exe.endswith(b" (deleted)"):
        exe = exe[: -len(b" (deleted)")]
    binary, bad = escape_bytes(exe) if exe is not None else ("", False)
    if bad:
        flags.append("non_utf8_binary")
    raw_args = _read(f"{base}/cmdline") or b""
    if raw_args.endswith(b"\0"):
        raw_args = raw_args[:-1]
    args: list[str] = []
    if raw_args:
        try:
            args = raw_args.decode("utf-8").split("\0")
        except UnicodeDecodeError:
            args = [escape_always(a) for a in raw_args.split(b"\0")]
            flags.append("non_utf8_args")
    cwd_raw = _link(f"{base}/cwd")
    cwd = None
    if cwd_raw is not None:
        cwd, bad = escape_bytes(cwd_raw)
        if bad:
            flags.append("non_utf8_cwd")
    uid = euid = gid = egid = cap_eff = cap_prm = None
    status = _read(f"{base}/status") or b""
    for line in status.split(b"\n"):
        if line.startswith(b"Uid:"):
            ids = line.split()[1:]
            uid, euid = int(ids[0]), int(ids[1])
        elif line.startswith(b"Gid:"):
            ids = line.split()[1:]
            gid, egid = int(ids[0]), int(ids[1])
        elif line.startswith(b"CapPrm:"):
            cap_prm = int(line.split()[1], 16)
        elif line.startswith(b"CapEff:"):
            cap_eff = int(line.split()[1], 16)
            break
    ns: dict[str, int] = {}
    for kind in NS_KINDS:
        link = _link(f"{base}/ns/{kind}")  # b"mnt:[4026531841]"
        if link and link.endswith(b"]"):
            ns[kind] = int(link[link.index(b"[") + 1 : -1])
    cgroup_path = None
    for line in (_read(f"{base}/cgroup") or b"").split(b"\n"):
        if line.startswith(b"0::"):
            cgroup_path = line[3:].decode("utf-8", "backslashreplace")
    exe_mode = exe_uid = exe_gid = None
    if exe is not None:
        try:
            st = os.stat(f"{base}/exe")
            exe_mode, exe_uid, exe_gid = st.st_mode, st.st_uid, st.st_gid
        except OSError:
            pass
    auid = None
    raw = _read(f"{base}/loginuid")
    if raw and raw.strip().isdigit():
        auid = int(raw)
        if auid == 0xFFFFFFFF:
            auid = None
    if not binary:
        binary = args[0] if args else f"[{comm}]"  # kernel threads have no exe
    return ProcInfo(pid, ppid, start_ticks, comm, binary, args, cwd, uid, euid, gid, egid, auid, flags,
                    cap_eff, cap_prm, ns or None, cgroup_path, exe_mode, exe_uid, exe_gid)


def list_pids(root: str = "/proc") -> list[int]:
    return sorted(int(n) for n in os.listdir(root) if n.isdigit())
