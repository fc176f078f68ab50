"""Linux capability bit numbers to names (include/uapi/linux/capability.h)."""

from __future__ import annotations

from functools import lru_cache

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@lru_cache(maxsize=1024)
def names(mask: int) -> tuple[str, ...]:
    """Names of the bits set in a capability mask; unknown bits become CAP_<n>. Cached: a host has few
    distinct masks, so the hot path is one dict lookup."""
    return tuple(NAMES[i] if i < len(NAMES) else f"CAP_{i}" for i in range(64) if mask >> i & 1)


def _full_mask() -> int:
    """Every capability a root process here can hold: the bounding set the agent runs with (on a host,
    every capability the kernel knows; a sandbox or container may drop some), else every capability of
    /proc/sys/kernel/cap_last_cap, else of the names above."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = len(NAMES) - 1
    return (1 << (last + 1)) - 1


FULL = _full_mask()


def telling(effective: int, permitted: int, euid: int | None) -> bool:
    """Whether a process' capability sets tell something beyond its effective uid: False for the
    default sets (for euid 0 every capability root can hold here, FULL; none for any other euid), which
    the events leave out (docs/schema.md, `caps`)."""
    if euid == 0:
        return not (effective == FULL and permitted == FULL)
    return bool(effective or permitted) or euid is None
