"""Container and Kubernetes pod identity from cgroup v2 names and the kubelet's on-node directories.

Container runtimes name the cgroup of a container after it; the kernel sends the cgroup's leaf
directory name and its parent's (bpf/process/process.bpf.c), /proc/<pid>/cgroup gives the whole path
for processes found at start-up. Layouts recognised (systemd and cgroupfs drivers):

  docker-<id>.scope                         docker (systemd driver)
  <id> under .../docker/                    docker (cgroupfs driver)
  cri-containerd-<id>.scope                 containerd CRI (systemd driver)
  crio-<id>.scope, crio-<id>                CRI-O (systemd / cgroupfs driver; crio-conmon-<id> is conmon)
  libpod-<id>.scope                         podman
  <id> under .../kubepods*/.../pod<uid>/    Kubernetes with the cgroupfs driver (runtime unknown: "cri")

Kubernetes pods (kubelet's cgroup layout, per QoS class):

  systemd:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _ for ->.slice/<container>
            (Guaranteed pods sit directly in kubepods.slice as kubepods-pod<uid>.slice)
  cgroupfs: /kubepods/<qos>/pod<uid>/<container>  (Guaranteed: /kubepods/pod<uid>/<container>)

The pod's name and namespace are not in the cgroup path. PodResolver finds them without the API
server, in directories every kubelet node has: /var/log/pods/<namespace>_<name>_<uid>/<container>/
(the pod's log directory, created with the pod sandbox) and /var/log/containers/
<name>_<namespace>_<container>-<container id>.log (one symlink per container, created by the kubelet
once the container started), with /var/lib/kubelet/pods/<uid>/containers/<name>/ as a fallback for
container names. The container runtime's OCI bundle, when readable, adds the image and stands in for
the log directories: containerd writes /run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/
config.json, CRI-O /run/containers/storage/overlay-containers/<id>/userdata/config.json, both with the
CRI's annotations (pod namespace, name and uid, container name, image). Results are cached by
container id; misses are retried after `negative_ttl`.
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache

import msgspec

from siemhub.collector.core.event import Pod, PodContainer

_ID = r"([0-9a-f]{64})"
_SCOPED = re.compile(r"^(docker|cri-containerd|crio|libpod)-" + _ID + r"(?:\.scope)?$")
_BARE = re.compile(r"^" + _ID + r"$")
_UID = r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
# systemd: kubepods-pod<uid>.slice (Guaranteed), kubepods-burstable-pod<uid>.slice, kubepods-besteffort-...
_POD_SYSTEMD = re.compile(r"^kubepods(?:-(burstable|besteffort))?-pod" + _UID + r"\.slice$")
# cgroupfs: pod<uid>
_POD_CGROUPFS = re.compile(r"^pod" + _UID + r"$")
_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o", "libpod": "podman"}
# Kubernetes' names for the QoS classes (pod.status.qosClass), by their cgroup directory name
QOS = {"burstable": "Burstable", "besteffort": "BestEffort", "": "Guaranteed"}


def _pod_of(parent: str, grandparent: str | None) -> tuple[str | None, str | None]:
    """(pod uid, QoS class) from the container's parent cgroup name (and its parent's, when known)."""
    m = _POD_SYSTEMD.match(parent)
    if m:
        return m.group(2).replace("_", "-"), QOS[m.group(1) or ""]
    m = _POD_CGROUPFS.match(parent)
    if m:
        # The QoS class is the grandparent's name; the kernel sends only two levels (None: unknown).
        qos = None
        if grandparent in ("burstable", "besteffort"):
            qos = QOS[grandparent]
        elif grandparent and grandparent.startswith("kubepods"):
            qos = QOS[""]
        return m.group(1).replace("_", "-"), qos
    return None, None


@lru_cache(maxsize=4096)
def parse(leaf: str, parent: str, grandparent: str | None = None) -> tuple[str, str, str | None, str | None] | None:
    """(container id, runtime, pod uid or None, QoS class or None) for a container's cgroup, else None."""
    pod_uid, qos = _pod_of(parent, grandparent)
    m = _SCOPED.match(leaf)
    if m:
        return m.group(2), _RUNTIME[m.group(1)], pod_uid, qos
    m = _BARE.match(leaf)
    if m:
        if parent == "docker":
            return m.group(1), "docker", None, None
        if pod_uid or parent.startswith("kubepods"):
            return m.group(1), "cri", pod_uid, qos
        return m.group(1), "unknown", None, None
    return None


def parse_path(path: str) -> tuple[str, str, str | None, str | None] | None:
    """parse() for a full cgroup path such as /proc/<pid>/cgroup's `0::/system.slice/docker-<id>.scope`."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    return parse(parts[-1], parts[-2] if len(parts) > 1 else "", parts[-3] if len(parts) > 2 else None)


# CRI annotations on a container's OCI spec: containerd's (io.kubernetes.cri.*), then CRI-O's
_ANNOTATIONS = {
    "namespace": ("io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"),
    "name": ("io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"),
    "uid": ("io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"),
    "container": ("io.kubernetes.cri.container-name", "io.kubernetes.container.name"),
    "image": ("io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName"),
}
DEFAULT_RUNTIME_DIRS = ("/run/containerd/io.containerd.runtime.v2.task/k8s.io",
                        "/run/containers/storage/overlay-containers")


class _Spec(msgspec.Struct):
    annotations: dict[str, str] = {}


_spec_decoder = msgspec.json.Decoder(_Spec)


def bundle_annotations(runtime_dirs: tuple[str, ...], cid: str) -> dict[str, str]:
    """The pod fields the runtime recorded on the container's OCI spec ({} when not found)."""
    for root in runtime_dirs:
        for path in (os.path.join(root, cid, "config.json"), os.path.join(root, cid, "userdata", "config.json")):
            try:
                with open(path, "rb") as f:
                    ann = _spec_decoder.decode(f.read()).annotations
            except (OSError, msgspec.DecodeError, msgspec.ValidationError):
                continue
            return {field: next((ann[k] for k in keys if ann.get(k)), "") for field, keys in _ANNOTATIONS.items()}
    return {}


class PodResolver:
    """Pod name, namespace and container name for a container id and pod uid, from the kubelet's
    directories on this node (no API server). Lookups are cached per container id; a miss (or a pod
    found without its container's name yet) is looked up again after `negative_ttl` seconds."""

    def __init__(self, log_pods_dir: str = "/var/log/pods", log_containers_dir: str = "/var/log/containers",
                 kubelet_pods_dir: str = "/var/lib/kubelet/pods",
                 cgroup_roots: tuple[str, ...] = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"),
                 negative_ttl: float = 10.0, max_entries: int = 4096, enabled: bool = True,
                 runtime_dirs: tuple[str, ...] = DEFAULT_RUNTIME_DIRS) -> None:
        self.log_pods_dir = log_pods_dir
        self.runtime_dirs = tuple(runtime_dirs)
        self.log_containers_dir = log_containers_dir
        self.kubelet_pods_dir = kubelet_pods_dir
        self.cgroup_roots = tuple(cgroup_roots)
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self.enabled = enabled
        # container id -> (Pod or None, monotonic time to look again, None when complete)
        self._by_cid: dict[str, tuple[Pod | None, float | None]] = {}
        self.resolved = self.unresolved = 0  # directory look-ups (not cache hits), for tests and status

    def lookup(self, cid: str, uid: str | None, qos: str | None = None) -> Pod | None:
        """The Pod for a container (id from the cgroup, uid of its pod), or None when not found."""
        if uid is None or not self.enabled:
            return None
        hit = self._by_cid.get(cid)
        if hit is not None and (hit[1] is None or time.monotonic() < hit[1]):
            return hit[0]
        pod = self._resolve(cid, uid, qos)
        complete = pod is not None and pod.container is not None
        if len(self._by_cid) >= self.max_entries:
            self._by_cid.clear()  # containers come and go; a rebuild costs a few directory reads
        self._by_cid[cid] = (pod, None if complete else time.monotonic() + self.negative_ttl)
        return pod

    # --- directory look-ups ---

    def _resolve(self, cid: str, uid: str, qos: str | None) -> Pod | None:
        spec = bundle_annotations(self.runtime_dirs, cid) if self.runtime_dirs else {}
        if spec and spec["uid"] != uid:
            spec = {}  # not this pod's container (a stale bundle): trust only the cgroup path
        found = self._pod_dir(uid)
        if found is not None:
            namespace, name, logdir = found
            cname = spec.get("container") or self._container_name(cid, namespace, name, uid, logdir)
        elif spec.get("namespace") and spec.get("name"):
            namespace, name, cname = spec["namespace"], spec["name"], spec["container"]
        else:
            self.unresolved += 1
            return None
        self.resolved += 1
        image = spec.get("image") or None
        return Pod(namespace=namespace, name=name, uid=uid, qos_class=qos or self._qos_from_cgroups(uid),
                   container=PodContainer(name=cname, image=image) if cname else None)

    def _pod_dir(self, uid: str) -> tuple[str, str, str] | None:
        """(namespace, name, log directory) from /var/log/pods/<namespace>_<name>_<uid>. Neither names
        nor uids may contain `_` (DNS labels and subdomains), so the split is unambiguous."""
        suffix = "_" + uid
        try:
            with os.scandir(self.log_pods_dir) as it:
                for d in it:
                    if d.name.endswith(suffix):
                        parts = d.name.split("_")
                        if len(parts) == 3 and parts[0] and parts[1]:
                            return parts[0], parts[1], d.path
        except OSError:
            pass
        return None

    def _container_name(self, cid: str, namespace: str, name: str, uid: str, logdir: str) -> str | None:
        # /var/log/containers/<pod>_<namespace>_<container>-<id>.log names the container by its id.
        prefix, suffix = f"{name}_{namespace}_", f"-{cid}.log"
        try:
            with os.scandir(self.log_containers_dir) as it:
                for f in it:
                    n = f.name
                    if n.endswith(suffix) and n.startswith(prefix) and len(n) > len(prefix) + len(suffix):
                        return n[len(prefix) : -len(suffix)]
        except OSError:
            pass
        # A pod with one container: the only directory under its log directory (or the kubelet's).
        for d in (logdir, os.path.join(self.kubelet_pods_dir, uid, "containers")):
            try:
                names = [e.name for e in os.scandir(d) if e.is_dir()]
            except OSError:
                continue
            if len(names) == 1:
                return names[0]
            if names:
                return None  # several containers and no symlink yet: unknown (retried after negative_ttl)
        return None

    def _qos_from_cgroups(self, uid: str) -> str | None:
        """The QoS class for the cgroupfs layout, where the kernel's two cgroup names stop at pod<uid>."""
        for root in self.cgroup_roots:
            for qdir, qos in (("besteffort/", "BestEffort"), ("burstable/", "Burstable"), ("", "Guaranteed")):
                if os.path.isdir(os.path.join(root, "kubepods", f"{qdir}pod{uid}")):
                    return qos
        return None
