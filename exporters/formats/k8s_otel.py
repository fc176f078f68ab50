"""OpenTelemetry's Kubernetes and container attributes for an event's process and node
(https://opentelemetry.io/docs/specs/semconv/resource/k8s/ and .../resource/container/), for the OTLP
exporter: `k8s.cluster.name`, `k8s.node.name`, `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`,
`k8s.pod.label.<key>`, `k8s.pod.annotation.<key>`, `k8s.container.name`, `k8s.<workload>.name` for the
owning workload (deployment, statefulset, daemonset, job, cronjob, replicaset), and `container.id`,
`container.runtime`, `container.image.name`, `container.image.tags`, `container.image.repo_digests`.
"""

from __future__ import annotations

from typing import Any

from siemhub.collector.core.event import Event

# owning workload kind -> its attribute (other kinds, e.g. custom controllers, have none in the conventions)
_WORKLOAD_ATTRIBUTE = {
    "Deployment": "k8s.deployment.name",
    "StatefulSet": "k8s.statefulset.name",
    "DaemonSet": "k8s.daemonset.name",
    "Job": "k8s.job.name",
    "CronJob": "k8s.cronjob.name",
    "ReplicaSet": "k8s.replicaset.name",
}


def k8s_attributes(event: Event) -> dict[str, Any]:
    """Flat attribute map (string values, and a list for image tags and digests)."""
    out: dict[str, Any] = {}
    node = event.node
    if node.cluster:
        out["k8s.cluster.name"] = node.cluster
    p = event.process
    pod = p.pod if p is not None else None
    if pod is not None:
        out["k8s.node.name"] = node.name
        out["k8s.namespace.name"] = pod.namespace
        out["k8s.pod.name"] = pod.name
        if pod.uid:
            out["k8s.pod.uid"] = pod.uid
        for k, v in pod.labels.items():
            out[f"k8s.pod.label.{k}"] = v
        for k, v in pod.annotations.items():
            out[f"k8s.pod.annotation.{k}"] = v
        attr = _WORKLOAD_ATTRIBUTE.get(pod.workload_kind or "")
        if attr and pod.workload:
            out[attr] = pod.workload
        c = pod.container
        if c is not None:
            if c.name:
                out["k8s.container.name"] = c.name
            if c.image:
                slash, colon = c.image.rfind("/"), c.image.rfind(":")
                if colon > slash and "@" not in c.image:
                    out["container.image.name"], out["container.image.tags"] = c.image[:colon], [c.image[colon + 1 :]]
                else:
                    out["container.image.name"] = c.image
            if c.image_id and "@" in c.image_id:
                out["container.image.repo_digests"] = [c.image_id]  # <repository>@sha256:<digest>
    if p is not None and p.container is not None:
        out["container.id"] = p.container.id
        if p.container.runtime:
            out["container.runtime"] = p.container.runtime
    return out
