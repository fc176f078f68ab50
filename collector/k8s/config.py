"""`sensors.process.kubernetes.api`: pod metadata from the Kubernetes API server (docs/kubernetes.md)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from siemhub.collector.core.settings import Strict


class KubernetesApiConfig(Strict):
    enabled: bool = Field(True, description="watch this node's pods on the API server; false: the kubelet's "
                                            "directories only")
    host: str | None = Field(None, description="API server URL; unset: in-cluster (KUBERNETES_SERVICE_HOST and the "
                                               "pod's service-account token and CA), and no API when not in a cluster")
    token: SecretStr | None = Field(None, description="bearer token with `host` (use ${file:PATH}); never logged")
    ca_file: str | None = Field(None, description="CA bundle of the API server with `host` (TLS is always verified)")
    node_name: str | None = Field(None, description="this node's name as Kubernetes knows it (spec.nodeName); "
                                                    "unset: node.name")
    annotations: list[str] = Field([], description="pod annotations copied to events: exact keys, or prefixes "
                                                   "ending in `*`")
    node_labels: list[str] = Field([], description="labels of this node's Node object copied to every event's "
                                                   "node.labels (exact keys, or prefixes ending in `*`); needs `get` "
                                                   "on nodes in the ClusterRole; [] reads no Node")
    wait: float = Field(1.0, ge=0, le=30, description="seconds an event of a pod the API has not shown yet waits "
                                                      "for it; then it is sent tagged kubernetes_pod_unknown")
    max_held: int = Field(10_000, ge=1, description="events waiting for their pod, at most (more are sent tagged)")
    resync: float = Field(600.0, ge=10, description="seconds between full relists of this node's pods")
    watch_timeout: int = Field(300, ge=1, le=3600, description="seconds the API server keeps one watch open")
    backoff_initial: float = Field(0.5, gt=0, le=60, description="first reconnect delay after an error (doubles)")
    backoff_max: float = Field(30.0, gt=0, le=600, description="longest reconnect delay")
    owner_ttl: float = Field(600.0, ge=0, description="seconds a ReplicaSet's or Job's owner is cached")
    deleted_ttl: float = Field(60.0, ge=0, description="seconds a deleted pod stays known (its last processes "
                                                       "still exit)")
