"""The node's pods as the API server shows them, keyed by uid, and how one becomes an event's `pod`.

Keys are pod uids, never names: a pod deleted and re-created under the same name (a StatefulSet's
`web-0`) has a new uid and a new cgroup (`pod<uid>`), so the processes of the old and the new pod
never share an entry. A deleted pod stays known for `deleted_ttl` seconds, since its last processes
still exit after the API server forgot it.

The store is written by the watcher thread only and read by the sensors' threads: each entry is an
immutable PodInfo replaced whole, so a reader sees one version or the next, never a mix.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from siemhub.collector.core.event import Pod, PodContainer


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    image: str | None
    image_id: str | None


@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    resource_version: str
    labels: dict[str, str]
    annotations: dict[str, str]  # only the selected ones
    qos_class: str | None
    workload_kind: str | None
    workload: str | None
    by_cid: dict[str, ContainerInfo]  # container id (no runtime prefix) -> container, from the status
    images: dict[str, str] = field(default_factory=dict)  # container name -> image, from the spec

    def to_pod(self, cid: str, node_name: str | None = None, node_qos: str | None = None) -> Pod:
        """The event's Pod for container `cid` of this pod. A container the kubelet has not reported yet
        (the first process of a container runs before its status reaches the API server) is named by
        the on-node resolution (`node_name`) or, in a pod of one container, by the spec."""
        c = self.by_cid.get(cid)
        if c is not None:
            container = PodContainer(name=c.name, image=c.image, image_id=c.image_id or None)
        else:
            name = node_name
            if name is None and len(self.images) == 1:
                name = next(iter(self.images))
            container = PodContainer(name=name, image=self.images.get(name)) if name else None
        return Pod(namespace=self.namespace, name=self.name, labels=self.labels, container=container,
                   workload=self.workload, uid=self.uid, qos_class=self.qos_class or node_qos,
                   workload_kind=self.workload_kind, annotations=self.annotations)


def _strip_runtime(container_id: str) -> str:
    """`containerd://<id>` (or docker://, cri-o://) -> `<id>`, as the cgroup names it."""
    return container_id.partition("://")[2] or container_id


def select_annotations(annotations: dict[str, str] | None, wanted: tuple[str, ...]) -> dict[str, str]:
    if not annotations or not wanted:
        return {}
    out = {}
    for k, v in annotations.items():
        for w in wanted:
            if k == w or (w.endswith("*") and k.startswith(w[:-1])):
                out[k] = v
                break
    return out


def controller_of(meta: dict) -> tuple[str, str] | None:
    """(kind, name) of the object's controlling owner reference, if any."""
    for ref in meta.get("ownerReferences") or ():
        if ref.get("controller"):
            return ref.get("kind", ""), ref.get("name", "")
    return None


def pod_info(obj: dict, annotations: tuple[str, ...], workload: tuple[str | None, str | None]) -> PodInfo:
    """PodInfo from a Pod object as JSON (the API's camelCase field names)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    by_cid = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or ():
            cid = cs.get("containerID")
            if cid:
                by_cid[_strip_runtime(cid)] = ContainerInfo(cs.get("name", ""), cs.get("image") or None,
                                                            cs.get("imageID") or None)
    images = {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or ():
            if c.get("name") and c.get("image"):
                images[c["name"]] = c["image"]
    return PodInfo(uid=meta.get("uid", ""), namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                   resource_version=meta.get("resourceVersion", ""), labels=dict(meta.get("labels") or {}),
                   annotations=select_annotations(meta.get("annotations"), annotations),
                   qos_class=status.get("qosClass"), workload_kind=workload[0], workload=workload[1],
                   by_cid=by_cid, images=images)


class PodStore:
    def __init__(self, deleted_ttl: float = 60.0) -> None:
        self.deleted_ttl = deleted_ttl
        self._by_uid: dict[str, PodInfo] = {}
        self._deleted: dict[str, float] = {}  # uid -> monotonic time it may be forgotten
        self.changed = threading.Condition()  # notified on every change (the event hold waits on it)
        self.synced = False  # a first list has been loaded

    def get(self, uid: str) -> PodInfo | None:
        return self._by_uid.get(uid)

    def __len__(self) -> int:
        return len(self._by_uid) - len(self._deleted)

    def put(self, info: PodInfo) -> None:
        self._by_uid[info.uid] = info
        self._deleted.pop(info.uid, None)
        self._notify()

    def delete(self, uid: str) -> None:
        if uid in self._by_uid:
            self._deleted[uid] = time.monotonic() + self.deleted_ttl
        self._notify()

    def replace(self, infos: list[PodInfo]) -> None:
        """A full list: pods not in it are deleted (kept `deleted_ttl` seconds), the others replaced."""
        now = time.monotonic()
        fresh = {i.uid for i in infos}
        for info in infos:
            self._by_uid[info.uid] = info
            self._deleted.pop(info.uid, None)
        for uid in list(self._by_uid):
            if uid not in fresh and uid not in self._deleted:
                self._deleted[uid] = now + self.deleted_ttl
        self.synced = True
        self._notify()

    def expire(self) -> None:
        now = time.monotonic()
        for uid, until in list(self._deleted.items()):
            if until <= now:
                self._by_uid.pop(uid, None)
                del self._deleted[uid]

    def is_deleted(self, uid: str) -> bool:
        return uid in self._deleted

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()
