"""The few bpf(2) map commands the agent needs once its programs are loaded, without bcc.

The agent compiles and attaches its programs in a short-lived child process (collector/kernel/loader_child.py)
and keeps only file descriptors: the maps, and the attachments that keep the programs running. This
module reads and writes those maps: lookup (per-CPU arrays included), update, delete, lookup-and-delete,
clear; links a program to a cgroup (link_cgroup, used by the loader child); and turns the kernel's
per-program run-time statistics on for the benchmarks (enable_run_time_stats).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform

_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_MAP_LOOKUP_AND_DELETE_ELEM, BPF_LINK_CREATE = 21, 28
BPF_ENABLE_STATS, BPF_STATS_RUN_TIME = 32, 0

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


def _possible_cpus() -> int:
    # "0-1" or "0,2-3": per-CPU map values have one slot per possible CPU.
    with open("/sys/devices/system/cpu/possible") as f:
        total = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            total += int(hi or lo) - int(lo) + 1
    return total


POSSIBLE_CPUS = _possible_cpus()


class _EnableStatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("_pad", ctypes.c_uint8 * 124)]  # union bpf_attr, zeroed


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    if _NR_BPF is None:
        raise OSError(errno.ENOSYS, f"bpf(2) syscall number unknown on {platform.machine()}")
    return _libc.syscall(_NR_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))


def enable_run_time_stats() -> int:
    """A file descriptor that keeps BPF programs counting run_time_ns/run_cnt until it is closed.
    Holders are counted with each other and with the kernel.bpf_stats_enabled sysctl, so closing it
    never turns off statistics someone else turned on (and their sysctl ...=0 does not turn off ours)."""
    fd = _bpf(BPF_ENABLE_STATS, _EnableStatsAttr(BPF_STATS_RUN_TIME))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(BPF_ENABLE_STATS): {os.strerror(err)}")
    return fd


class _LinkCreateAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("pad", ctypes.c_uint8 * 48)]


def link_cgroup(prog_fd: int, cgroup: str, attach_type: int) -> int:
    """bpf(BPF_LINK_CREATE) of a program to a cgroup directory; the link's descriptor (the program stays
    attached until it is closed)."""
    cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _bpf(BPF_LINK_CREATE, _LinkCreateAttr(prog_fd, cg, attach_type, 0))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bpf(BPF_LINK_CREATE) to {cgroup}: {os.strerror(err)}")
        return fd
    finally:
        os.close(cg)


def u32(v: int) -> bytes:
    """A u32 map key or value (array indexes, flags), as the kernel lays it out on this host."""
    return v.to_bytes(4, "little")


class Map:
    """A BPF map held by file descriptor. Keys and values are bytes of the map's sizes."""

    def __init__(self, fd: int, key_size: int, value_size: int, percpu: bool = False) -> None:
        self.fd, self.key_size, self.value_size, self.percpu = fd, key_size, value_size, percpu
        # Per-CPU values come back as one 8-byte-aligned slot per possible CPU.
        self._slot = (value_size + 7) & ~7
        self._value_bytes = self._slot * POSSIBLE_CPUS if percpu else value_size

    def _attr(self, key: bytes, value: ctypes.Array | None, flags: int = 0) -> tuple[_MapElemAttr, ctypes.Array]:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes for a map with {self.key_size}-byte keys")
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        attr = _MapElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf),
                            value=ctypes.addressof(value) if value is not None else 0, flags=flags)
        return attr, kbuf

    def lookup(self, key: bytes) -> bytes | None:
        vbuf = ctypes.create_string_buffer(self._value_bytes)
        attr, _keep = self._attr(key, vbuf)
        if _bpf(BPF_MAP_LOOKUP_ELEM, attr) < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            raise OSError(err, os.strerror(err))
        return vbuf.raw

    def lookup_and_delete(self, key: bytes) -> bytes | None:
        """Read and delete one element in one bpf(2) call (hash maps, Linux 5.14+); None when absent."""
        vbuf = ctypes.create_string_buffer(self.value_size)
        attr, _keep = self._attr(key, vbuf)
        if _bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, attr) < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return None
            raise OSError(err, os.strerror(err))
        return vbuf.raw

    def lookup_percpu_u64(self, key: bytes) -> list[int]:
        raw = self.lookup(key)
        if raw is None:
            return []
        return [int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), self._slot)]

    def update(self, key: bytes, value: bytes) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes for a map with {self.value_size}-byte values")
        vbuf = ctypes.create_string_buffer(value, self.value_size)
        attr, _keep = self._attr(key, vbuf)
        if _bpf(BPF_MAP_UPDATE_ELEM, attr) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def delete(self, key: bytes) -> bool:
        attr, _keep = self._attr(key, None)
        if _bpf(BPF_MAP_DELETE_ELEM, attr) < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return False
            raise OSError(err, os.strerror(err))
        return True

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        nbuf = ctypes.create_string_buffer(self.key_size)
        attr = _MapElemAttr(map_fd=self.fd, key=0, value=ctypes.addressof(nbuf))  # key NULL: the first key
        while _bpf(BPF_MAP_GET_NEXT_KEY, attr) == 0:
            out.append(nbuf.raw)
            kbuf = ctypes.create_string_buffer(nbuf.raw, self.key_size)
            attr = _MapElemAttr(map_fd=self.fd, key=ctypes.addressof(kbuf), value=ctypes.addressof(nbuf))
            _keep = kbuf  # noqa: F841 - alive until the next call
        return out

    def clear(self) -> None:
        for k in self.keys():
            self.delete(k)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
