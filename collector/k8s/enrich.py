"""Builds the agent's pod resolution from `sensors.process.kubernetes`: the API watch when there is an
API server to reach, the kubelet's directories always; and says which mode is in force."""

from __future__ import annotations

import logging
import os

from siemhub.collector.container import PodResolver
from siemhub.collector.k8s.config import KubernetesApiConfig
from siemhub.collector.k8s.pods import PodStore
from siemhub.collector.k8s.resolver import ApiPodResolver, Mode, PodHold
from siemhub.collector.k8s.watcher import ApiUnavailable, PodWatcher

log = logging.getLogger("siemhub.kubernetes")


class KubernetesEnrichment:
    def __init__(self, k, node_name: str, registry=None, node: PodResolver | None = None) -> None:
        """k: KubernetesConfig (or None: defaults); node_name: the agent's node name; node: the on-node
        resolver (collector/container.py) built from `k`."""
        if k is None:
            self.node = node or PodResolver()
            api_cfg = KubernetesApiConfig()
            self._log_pods_dir = "/var/log/pods"
            enabled = True
        else:
            self.node = node or PodResolver(k.log_pods_dir, k.log_containers_dir, k.kubelet_pods_dir,
                                            tuple(k.cgroup_roots), k.negative_ttl, enabled=k.enabled,
                                            runtime_dirs=tuple(k.runtime_dirs))
            api_cfg = getattr(k, "api", None) or KubernetesApiConfig()
            self._log_pods_dir = k.log_pods_dir
            enabled = k.enabled
        self.api_cfg = api_cfg
        self.registry = registry
        self.mode = Mode(registry)
        self.watcher: PodWatcher | None = None
        self.hold: PodHold | None = None
        self.resolver: PodResolver | ApiPodResolver = self.node
        self._why_no_api = ""
        if not enabled:
            self._why_no_api = "pod enrichment disabled (sensors.process.kubernetes.enabled: false)"
        elif not api_cfg.enabled:
            self._why_no_api = "the API server is not used (kubernetes.api.enabled: false)"
        elif api_cfg.host is None and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            self._why_no_api = "not running in a Kubernetes pod (no KUBERNETES_SERVICE_HOST) and no kubernetes.api.host"
        else:
            self.store = PodStore(api_cfg.deleted_ttl)
            self.watcher = PodWatcher(api_cfg, api_cfg.node_name or node_name, self.store, registry)
            self.resolver = ApiPodResolver(self.node, self.store)

    def start(self, release, node=None) -> None:
        """Start the watch (if any) and the hold; `release(events)` takes held events back into the
        pipeline; `node` (the events' shared event.Node) gets the Node's selected labels. Waits up to a
        few seconds for the first list, so that the first events find their pods."""
        if self.watcher is None:
            self._fallback(self._why_no_api)
            return
        self.watcher.on_list = self._on_list  # callbacks first: the watcher's thread lists at once
        if node is not None:
            configured = dict(node.labels)

            def node_labels(labels: dict[str, str]) -> None:
                # the Node object's labels under the configured ones (node.labels in the config wins);
                # one assignment: every event shares this Node and sees the old dict or the new one
                node.labels = {**labels, **configured}
            self.watcher.on_node_labels = node_labels
        try:
            self.watcher.start()
        except ApiUnavailable as exc:
            self.watcher = None
            self.resolver = self.node  # (an ApiPodResolver already handed out never syncs: node lookups)
            self._fallback(str(exc))
            return
        self.hold = PodHold(self.resolver, release, self.api_cfg.wait, self.api_cfg.max_held, self.registry)
        self.watcher.first_list.wait(10)
        self._on_list()

    def _on_list(self) -> None:
        w = self.watcher
        if w is None:
            return
        if w.list_ok:
            self.mode.set("api", f"watching the pods of node {w.node_name} on the API server")
        elif w.first_list.is_set():
            self.mode.set("node", f"no API access ({w.error}): pods from the kubelet's directories only; "
                                  "retrying with backoff")

    def _fallback(self, why: str) -> None:
        if self.node.enabled and os.path.isdir(self._log_pods_dir):
            self.mode.set("node", f"{why}: pods from the kubelet's directories ({self._log_pods_dir})")
        else:
            self.mode.set("host", f"{why}; no kubelet directories ({self._log_pods_dir}): no pods on this host")

    def filter(self, events):
        return self.hold.filter(events) if self.hold is not None else events

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.hold is not None:
            self.hold.close()

