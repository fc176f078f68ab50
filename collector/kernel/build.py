"""Building a BPF program's load: environment checks, kernel filesystems, and the compile flags.

bcc compiles the C at load time against the installed kernel headers, which do not match the running
kernel; so every kernel struct field a program reads comes from BTF as an -DOFF_* define
(collector/kernel/btf.py). The compile and attach itself happens in the loader child
(collector/kernel/loader_child.py). `block_support` tells whether a BPF LSM program (the policies'
`block`) could work on this kernel.
"""

from __future__ import annotations

import importlib.util
import os
from importlib import resources
from pathlib import Path

from siemhub.collector.kernel import btf, loader_child, ringbuf


class BPFUnavailable(RuntimeError):
    """The kernel or this process cannot load BPF programs (not root, no BTF, no bcc...)."""


_FILESYSTEMS = (("tracefs", "/sys/kernel/tracing", "events"), ("debugfs", "/sys/kernel/debug", "tracing"))


def bpf_dir() -> Path:
    return Path(str(resources.files("siemhub.bpf")))


def check_environment() -> None:
    """Raise BPFUnavailable with the reason when this process cannot load our programs."""
    if os.geteuid() != 0:
        raise BPFUnavailable("loading eBPF programs needs root (CAP_BPF and CAP_PERFMON)")
    if not os.path.exists(btf.DEFAULT_PATH):
        raise BPFUnavailable(f"the kernel has no BTF ({btf.DEFAULT_PATH} missing)")
    # Only look for bcc: importing it would map all of LLVM into the agent; the loader child uses it.
    if importlib.util.find_spec("bcc") is None:
        raise BPFUnavailable("bcc's Python bindings are missing (Debian package python3-bpfcc)")
    for fstype, where, probe in _FILESYSTEMS:
        if not os.path.exists(os.path.join(where, probe)):
            os.makedirs(where, exist_ok=True)
            if os.system(f"mount -t {fstype} {fstype} {where} 2>/dev/null") != 0:  # noqa: S605 - fixed strings
                raise BPFUnavailable(f"{fstype} is not mounted on {where} and mounting it failed")


def compile_program(relpath: str, offsets: dict[str, tuple[str, str]], defines: dict[str, int], maps: list[str],
                    before_release=None, cgroup_links: dict[str, tuple[int, str]] | None = None):
    """Compile and attach bpf/<relpath> with the BTF offsets it needs and the given -D settings, in a
    child process (collector/kernel/loader_child.py); returns the named maps and the attachments."""
    check_environment()
    try:
        resolved = btf.resolve_offsets(offsets)
    except btf.BTFError as exc:
        raise BPFUnavailable(f"this kernel lacks a field the sensor needs: {exc}") from None
    root = bpf_dir()
    cflags = [f"-I{root / 'include'}", *btf.cflags(resolved), *(f"-D{k}={v}" for k, v in sorted(defines.items()))]
    if not ringbuf.available():
        raise BPFUnavailable("the ring buffer reader supports x86-64 only for now (memory ordering)")
    try:
        return loader_child.load(str(root / relpath), cflags, maps, before_release=before_release,
                                 cgroup_links=cgroup_links)
    except RuntimeError as exc:
        raise BPFUnavailable(f"loading {relpath} failed: {exc}") from exc
    finally:
        btf.release()


def block_support() -> tuple[bool, str]:
    """Whether `block` (a BPF LSM program returning -EPERM) could work on this kernel: needs "bpf" among
    the active LSMs and no lockdown (lockdown refuses BPF LSM and fentry programs with EPERM)."""
    try:
        with open("/sys/kernel/security/lockdown") as f:
            lockdown = f.read()
        mode = lockdown[lockdown.index("[") + 1 : lockdown.index("]")]
    except (OSError, ValueError):
        mode = "unknown"
    try:
        with open("/sys/kernel/security/lsm") as f:
            lsms = f.read().strip().split(",")
    except OSError:
        lsms = []
    if "bpf" not in lsms:
        return False, "the bpf LSM is not active (lsm= boot parameter)"
    if mode not in ("none", "unknown"):
        return False, f"kernel lockdown is '{mode}': BPF LSM programs are refused"
    return True, "BPF LSM available"
