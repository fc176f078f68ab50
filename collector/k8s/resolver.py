"""Pods for events: the API server's view first, the node's directories (collector/container.py) as
the fast path's fallback, and a short hold for events whose pod the API server has not shown yet.

`ApiPodResolver` has PodResolver's interface (`lookup(cid, uid, qos)`), so the process cache and the
sensors use it unchanged. A lookup is two dict reads when the pod is known. When it is not (the watch
has not delivered the pod yet: the kubelet starts containers moments after the API server recorded
the pod), the container is marked waiting and the on-node result is returned; `PodHold`, which every
event passes before the policies see it, then keeps that container's events for at most `wait`
seconds: when the pod arrives they are completed and sent, otherwise they are sent tagged
`kubernetes_pod_unknown`. Nothing is dropped: a full hold sends at once, tagged.

Mode, in the log and in the gauge siemhub_kubernetes_mode{mode}: `api` (the watch works), `node` (no
API access: the kubelet's directories only, today's behaviour), `host` (no Kubernetes on this node).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from siemhub.collector.container import PodResolver
from siemhub.collector.core.event import Event, Pod
from siemhub.collector.k8s.pods import PodStore

log = logging.getLogger("siemhub.kubernetes")

UNKNOWN_TAG = "kubernetes_pod_unknown"
MODES = ("api", "node", "host")


class ApiPodResolver:
    def __init__(self, node: PodResolver, store: PodStore) -> None:
        self.node = node
        self.store = store
        self.enabled = node.enabled
        # container id -> (pod uid, QoS class from the cgroup, monotonic time first seen) for containers
        # whose pod the API server has not shown yet; PodHold holds their events
        self.waiting: dict[str, tuple[str, str | None, float]] = {}
        self.given_up: set[str] = set()  # waited the full time: their events go out tagged, not held
        self._built: dict[str, tuple[object, Pod]] = {}  # container id -> (PodInfo it was built from, Pod)

    # PodResolver's counters, for the agent_status event
    @property
    def resolved(self) -> int:
        return self.node.resolved

    @property
    def unresolved(self) -> int:
        return self.node.unresolved

    def lookup(self, cid: str, uid: str | None, qos: str | None = None) -> Pod | None:
        if uid is None or not self.enabled:
            return None
        info = self.store.get(uid)
        if info is None:
            if self.store.synced and cid not in self.given_up and cid not in self.waiting:
                self.waiting[cid] = (uid, qos, time.monotonic())
            return self.node.lookup(cid, uid, qos)
        hit = self._built.get(cid)
        if hit is not None and hit[0] is info:
            return hit[1]
        self.given_up.discard(cid)
        self.waiting.pop(cid, None)
        node_name = None
        if cid not in info.by_cid:  # not reported by the kubelet yet: the node's directories name it
            local = self.node.lookup(cid, uid, qos)
            if local is not None and local.container is not None:
                node_name = local.container.name
        pod = info.to_pod(cid, node_name, qos)
        if cid in info.by_cid:
            if len(self._built) > 16384:
                self._built.clear()
            self._built[cid] = (info, pod)  # complete until the pod's next version
        return pod


class PodHold:
    """Holds the events of containers whose pod is not known yet; `release(events)` sends them on."""

    def __init__(self, resolver: ApiPodResolver, release: Callable[[list[Event]], object], wait: float = 1.0,
                 max_events: int = 10_000, registry=None) -> None:
        self.resolver = resolver
        self.release = release
        self.wait = wait
        self.max_events = max_events
        self._q: deque[tuple[float, str, Event]] = deque()
        self._held_cids: dict[str, int] = {}  # container id -> events of it in the queue (keeps their order)
        self._keys: dict[str, tuple[str, str | None]] = {}  # container id -> (pod uid, QoS class) of held ones
        self._lock = threading.Lock()
        self._stop = threading.Event()
        kw = {"registry": registry} if registry is not None else {}
        self.outcomes = Counter("siemhub_kubernetes_held_events", "Events held for their pod's metadata, by "
                                "outcome (resolved, expired, overflow)", ["outcome"], **kw)
        self.counts = {"resolved": 0, "expired": 0, "overflow": 0}  # the same, for the agent_status event
        self._thread = threading.Thread(target=self._run, name="kubernetes-hold", daemon=True)
        self._thread.start()

    def filter(self, events: list[Event]) -> list[Event]:
        """The events that may go on now; the others are held (and released later by `release`)."""
        waiting, given_up = self.resolver.waiting, self.resolver.given_up
        if not waiting and not given_up and not self._held_cids:
            return events
        out: list[Event] = []
        with self._lock:
            for e in events:
                p = e.process
                c = p.container if p is not None else None
                if c is None:
                    out.append(e)
                    continue
                cid = c.id
                key = waiting.get(cid)
                if key is not None or cid in self._held_cids:  # held: behind its container's earlier events
                    if len(self._q) >= self.max_events:
                        self._count("overflow")
                        out.append(_tag(e))
                        continue
                    if key is not None:
                        self._keys[cid] = key[:2]
                    self._q.append((time.monotonic() + self.wait, cid, e))
                    self._held_cids[cid] = self._held_cids.get(cid, 0) + 1
                elif cid in given_up:
                    out.append(_tag(e))
                else:
                    out.append(e)
        return out

    def _count(self, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()
        self.counts[outcome] += 1

    def _run(self) -> None:
        store = self.resolver.store
        while not self._stop.is_set():
            with store.changed:
                store.changed.wait(0.05)
            self._release_ready()

    def _release_ready(self, force: bool = False) -> None:
        now = time.monotonic()
        ready: list[Event] = []
        r = self.resolver
        with self._lock:
            keep: deque = deque()
            for deadline, cid, e in self._q:
                uid, qos = self._keys[cid]
                if r.store.get(uid) is not None:
                    pod = r.lookup(cid, uid, qos)
                    if pod is not None:
                        _set_pod(e, cid, pod)
                    self._count("resolved")
                    ready.append(e)
                elif cid in r.given_up:
                    ready.append(_tag(e))  # an earlier event of the container already waited the full time
                elif deadline <= now or force:
                    r.waiting.pop(cid, None)
                    r.given_up.add(cid)
                    self._count("expired")
                    ready.append(_tag(e))
                else:
                    keep.append((deadline, cid, e))
                    continue
                n = self._held_cids[cid] - 1
                if n:
                    self._held_cids[cid] = n
                else:
                    del self._held_cids[cid]
                    del self._keys[cid]
            self._q = keep
        if ready:
            self.release(ready)
        # containers that waited the full time without sending more: their pod never showed up
        for cid, (_uid, _qos, since) in list(r.waiting.items()):
            if now - since > self.wait and cid not in self._held_cids:
                r.waiting.pop(cid, None)
                r.given_up.add(cid)
        if len(r.given_up) > 16384:
            r.given_up.clear()

    def close(self) -> None:
        """Send whatever is held (tagged) and stop."""
        self._stop.set()
        self._thread.join(2)
        self._release_ready(force=True)


def _tag(e: Event) -> Event:
    if UNKNOWN_TAG not in e.tags:
        e.tags = [*e.tags, UNKNOWN_TAG]
    return e


def _set_pod(e: Event, cid: str, pod: Pod) -> None:
    # The process struct is the process cache's own: its later events carry the pod too.
    for p in (e.process, e.parent):
        if p is not None and p.container is not None and p.container.id == cid:
            p.pod = pod


class Mode:
    """siemhub_kubernetes_mode{mode}: 1 for the mode in force; logged when it changes."""

    def __init__(self, registry=None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.gauge = Gauge("siemhub_kubernetes_mode", "Where pod metadata comes from: api, node (the kubelet's "
                           "directories only) or host (no Kubernetes)", ["mode"], **kw)
        self.current: str | None = None

    def set(self, mode: str, why: str) -> None:
        if mode == self.current:
            return
        for m in MODES:
            self.gauge.labels(m).set(1 if m == mode else 0)
        self.current = mode
        log.info("kubernetes: %s mode: %s", mode, why)
