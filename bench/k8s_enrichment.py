"""CPU cost of the Kubernetes API enrichment on the event path, measured in one run against the
on-node resolution alone:

- a pod lookup per exec: PodResolver (the kubelet's directories, cached) vs ApiPodResolver (the API's
  pods, cached per container and pod version);
- the hold every event passes (PodHold.filter) when no pod is awaited, and when one is awaited (the
  other events are checked against it and go on).

    .venv/bin/python bench/k8s_enrichment.py [--events 200000]

No root needed; no API server (the store is filled directly, as the watcher fills it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector.container import PodResolver  # noqa: E402
from siemhub.collector.core.event import Clock, Container, Event, EventIds, Node, Process  # noqa: E402
from siemhub.collector.k8s.pods import PodStore, pod_info  # noqa: E402
from siemhub.collector.k8s.resolver import ApiPodResolver, PodHold  # noqa: E402


def _cpu(fn, n: int) -> float:
    """CPU microseconds per call of fn() (n calls)."""
    t = time.process_time()
    fn(n)
    return 1e6 * (time.process_time() - t) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--pods", type=int, default=110, help="pods on the node (the kubelet's default maximum)")
    args = ap.parse_args()
    n = args.events
    root = Path(tempfile.mkdtemp(prefix="siemhub-k8s-bench-"))
    store = PodStore()
    keys = []
    for i in range(args.pods):
        uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
        (root / "pods" / f"ns{i % 7}_pod-{i}_{uid}" / "c").mkdir(parents=True)  # the kubelet's directories
        (root / "containers").mkdir(exist_ok=True)
        (root / "containers" / f"pod-{i}_ns{i % 7}_c-{cid}.log").touch()
        store.put(pod_info({"metadata": {"name": f"pod-{i}", "namespace": f"ns{i % 7}", "uid": uid, "resourceVersion": "1",
                                         "labels": {"app": f"a{i}", "tier": "x"}},
                            "spec": {"containers": [{"name": "c", "image": "img:1"}]},
                            "status": {"containerStatuses": [{"name": "c", "image": "img:1", "imageID": "img@sha256:0",
                                                              "containerID": f"containerd://{cid}"}]}},
                           (), ("Deployment", f"d{i}")))
        keys.append((cid, uid, "BestEffort"))
    store.synced = True
    node = PodResolver(str(root / "pods"), str(root / "containers"), str(root / "none"), (), runtime_dirs=())
    api = ApiPodResolver(PodResolver(str(root / "pods"), str(root / "containers"), str(root / "none"), (),
                                     runtime_dirs=()), store)
    for k in keys:  # warm both caches, as on a running node
        assert node.lookup(*k) is not None and api.lookup(*k).labels

    def lookups(resolver):
        def run(count):
            lookup, m = resolver.lookup, len(keys)
            for i in range(count):
                lookup(*keys[i % m])
        return run

    ids, clock = EventIds(), Clock()
    nd = Node(name="n")
    batch = [Event(id=ids.new(), time=clock.now(), type="process_exec", schema_version="1.3", severity="info", node=nd,
                   process=Process(exec_id="x", pid=i, tid=i, ppid=1,
                                   container=Container(id=keys[i % len(keys)][0]) if i % 2 else None))
             for i in range(1000)]
    hold = PodHold(api, lambda events: None, wait=1.0)

    def filtering(count):
        f = hold.filter
        for _ in range(count // len(batch)):
            out = f(batch)
            assert len(out) == len(batch)

    base = _cpu(lookups(node), n)
    with_api = _cpu(lookups(api), n)
    hold_idle = _cpu(filtering, n)
    api.waiting[os.urandom(32).hex()] = (str(uuid.uuid4()), None, time.monotonic() + 3600)  # one pod awaited
    hold_busy = _cpu(filtering, n)
    hold.close()
    print(f"pod lookup per exec, node directories (cached): {base:.3f} us")
    print(f"pod lookup per exec, API pods (cached):         {with_api:.3f} us  ({with_api / base:.2f}x)")
    print(f"hold check per event, nothing awaited:          {hold_idle:.3f} us")
    print(f"hold check per event, one pod awaited:          {hold_busy:.3f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
