"""Container identity from cgroup v2 names.

Container runtimes name the cgroup of a container after it; the kernel sends the cgroup's leaf
directory name and its parent's (bpf/process/process.bpf.c), /proc/<pid>/cgroup gives the same path
for processes found at start-up. Layouts recognised (systemd and cgroupfs drivers):

  docker-<id>.scope                         docker (systemd driver)
  <id> under .../docker/                    docker (cgroupfs driver)
  cri-containerd-<id>.scope                 containerd CRI (systemd driver)
  crio-<id>.scope                           CRI-O (systemd driver; crio-conmon-<id>.scope is conmon)
  libpod-<id>.scope                         podman
  <id> under .../kubepods*/.../pod<uid>/    Kubernetes with the cgroupfs driver (runtime unknown: "cri")
and the pod uid from `pod<uid>` or `kubepods-<qos>-pod<uid_with_underscores>.slice` parents.
"""

from __future__ import annotations

import re
from functools import lru_cache

_ID = r"([0-9a-f]{64})"
_SCOPED = re.compile(r"^(docker|cri-containerd|crio|libpod)-" + _ID + r"\.scope$")
_BARE = re.compile(r"^" + _ID + r"$")
_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$")
_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}


@lru_cache(maxsize=4096)
def parse(leaf: str, parent: str) -> tuple[str, str, str | None] | None:
    """(container id, runtime, pod uid or None) for a container's cgroup, else None."""
    pod = _POD.search(parent)
    pod_uid = pod.group(1).replace("_", "-") if pod else None
    m = _SCOPED.match(leaf)
    if m:
        return m.group(2), _RUNTIME[m.group(1)], pod_uid
    m = _BARE.match(leaf)
    if m:
        if parent == "docker":
            return m.group(1), "docker", None
        if pod_uid or parent.startswith("kubepods"):
            return m.group(1), "cri", pod_uid
        return m.group(1), "unknown", None
    return None


def parse_path(path: str) -> tuple[str, str, str | None] | None:
    """parse() for a full cgroup path such as /proc/<pid>/cgroup's `0::/system.slice/docker-<id>.scope`."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    return parse(parts[-1], parts[-2] if len(parts) > 1 else "")
