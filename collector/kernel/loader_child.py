"""Compile and attach BPF programs in a short-lived child process; hand back only file descriptors.

bcc links all of LLVM: compiling one program leaves about 150 MB mapped and allocated in the process
that did it. The agent would carry that for its whole life. Instead a child process compiles and
attaches the programs, then sends the agent (over a Unix socket, SCM_RIGHTS) the descriptors that
matter: the maps and the attachments (perf events of tracepoints, raw tracepoint links), which keep
the programs running after the child is gone. The child leaves with os._exit so that bcc's exit hook
does not detach what it attached.

Protocol: the parent sends one JSON request {"src", "cflags"}; the child answers with one message:
JSON metadata plus the descriptors, or {"error": "..."}.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from siemhub.collector.kernel.maps import Map, link_cgroup

# The loader's identity on a command line (`python -m <LOADER_MODULE> <fd>`): the privilege sensor
# recognizes the agent's own loader by it (is_loader_command). __spec__.name is this module's dotted
# name both when imported and when run with -m (where __name__ is "__main__"), so a rename follows.
LOADER_MODULE: str = __spec__.name
_MAX_MSG = 1 << 20
_PERCPU_TYPES = {5, 6, 10}  # BPF_MAP_TYPE_PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH


@dataclass
class Loaded:
    maps: dict[str, Map]
    attachments: list[int]  # descriptors that keep the programs attached; closing them detaches

    def close(self) -> None:
        for fd in self.attachments:
            try:
                os.close(fd)
            except OSError:
                pass
        self.attachments = []
        for m in self.maps.values():
            m.close()


def load(src: str, cflags: list[str], maps: list[str], timeout: float = 120.0,
         before_release: Callable[[int], object] | None = None,
         cgroup_links: dict[str, tuple[int, str]] | None = None) -> Loaded:
    """Compile `src` with bcc in a child process and return the named maps and all attachments.
    `before_release(pid)` runs while the child still lives (it waits for the parent to hang up), so the
    agent can know its own loader by the time the sensor reports the loader's exit.
    Raises RuntimeError with the child's message when compiling or attaching fails."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with parent_sock:
        child = subprocess.Popen(
            [sys.executable, "-m", LOADER_MODULE, str(child_sock.fileno())],
            pass_fds=[child_sock.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        child_sock.close()
        parent_sock.settimeout(timeout)
        parent_sock.sendall(json.dumps({"src": src, "cflags": cflags, "maps": maps,
                                        "cgroup_links": cgroup_links or {}}).encode() + b"\n")
        try:
            msg, fds, _flags, _addr = socket.recv_fds(parent_sock, _MAX_MSG, 256)
        except (TimeoutError, OSError) as exc:
            child.kill()
            raise RuntimeError(f"BPF loader did not answer: {exc}") from None
        if msg and before_release is not None:
            before_release(child.pid)
    # The socket is closed here: the child sees the hang-up and leaves.
    _, err = child.communicate(timeout=timeout)
    if not msg:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError("BPF loader failed: " + (" / ".join(tail) or f"exit code {child.returncode}"))
    meta = json.loads(msg)
    if "error" in meta:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(meta["error"])
    held = {}
    for name, (index, key_size, value_size, percpu) in meta["maps"].items():
        held[name] = Map(fds[index], key_size, value_size, percpu)
    return Loaded(held, [fds[i] for i in meta["attachments"]])


def is_loader_command(args: Sequence[str]) -> bool:
    """True when `args` (a process' argv) is a loader child started by load()."""
    return LOADER_MODULE in args


def _child(sock_fd: int) -> None:
    sock = socket.socket(fileno=sock_fd)
    req = json.loads(sock.makefile("rb").readline())
    try:
        from bcc import BPF

        b = BPF(src_file=req["src"].encode(), cflags=req["cflags"])  # attaches TRACEPOINT/RAW_TRACEPOINT probes
        fds: list[int] = []
        maps = {}
        for name in req["maps"]:
            t = b[name.encode()]
            fds.append(t.map_fd)
            percpu = t.ttype in _PERCPU_TYPES
            # bcc widens per-CPU leaves to one slot per CPU (keeping the single one as sLeaf); the
            # syscall wants the single size. 27: BPF_MAP_TYPE_RINGBUF has neither keys nor values.
            leaf = 0 if t.ttype == 27 else ctypes.sizeof(t.sLeaf if percpu else t.Leaf)
            maps[name] = (len(fds) - 1, 0 if t.ttype == 27 else ctypes.sizeof(t.Key), leaf, percpu)
        attachments = []
        for fd in [*b.tracepoint_fds.values(), *b.raw_tracepoint_fds.values()]:
            fds.append(fd)
            attachments.append(len(fds) - 1)
        for fn_name, (attach_type, cgroup) in (req.get("cgroup_links") or {}).items():
            # cgroup hooks (connect4/6...): attached by a BPF link, which goes when its descriptor closes
            fn = b.load_func(fn_name.encode(), BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
            fds.append(link_cgroup(fn.fd, cgroup, attach_type))
            attachments.append(len(fds) - 1)
        socket.send_fds(sock, [json.dumps({"maps": maps, "attachments": attachments}).encode()], fds)
        sock.recv(1)  # wait for the parent to hang up (it may look at this process meanwhile)
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as text
        sock.sendall(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
    sock.close()
    sys.stderr.flush()
    # No interpreter exit: bcc's atexit hook would disable the attached tracepoints the parent now holds.
    os._exit(0)


if __name__ == "__main__":
    _child(int(sys.argv[1]))
