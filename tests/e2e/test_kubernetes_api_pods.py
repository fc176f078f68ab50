"""End-to-end, real kernel: pod metadata from the Kubernetes API server on exec events.

The API server is the stand-in of tests/servers/kube_api.py (no real one can run here: it replays the
documented list/watch protocol and ReplicaSet/Job reads); the agent talks to it with the official
`kubernetes` client. A process is moved into a cgroup v2 group laid out as the kubelet and containerd
lay out a pod's container (systemd driver); there are no kubelet directories at all, so everything the
event says about the pod beyond its uid comes from the replayed API: labels, selected annotations,
container name, image and image id, and the owning Deployment resolved through its ReplicaSet.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import running_agent
from tests.e2e.test_kubernetes_pods import _exec_in, _make_groups, _remove
from tests.servers.kube_api import KubeApiStandIn, pod, workload

pytestmark = pytest.mark.bpf

NODE = "node-e2e"


@pytest.fixture(scope="module")
def api():
    with KubeApiStandIn(token="e2e-token") as server:
        yield server


@pytest.fixture(scope="module")
def api_agent(api, tmp_path_factory):
    root = tmp_path_factory.mktemp("no-kubelet")
    sensors = f"""  process:
    poll_interval: 0.05
    kubernetes:
      log_pods_dir: "{root}/var/log/pods"
      log_containers_dir: "{root}/var/log/containers"
      kubelet_pods_dir: "{root}/var/lib/kubelet/pods"
      runtime_dirs: []
      api:
        host: "{api.url}"
        token: e2e-token
        node_name: {NODE}
        annotations: ["team"]
        wait: 2.0
"""
    extra = f"node: {{name: {NODE}, cluster: prod-eu, labels: {{topology.kubernetes.io/zone: eu-1a}}}}"
    for running in running_agent(tmp_path_factory.mktemp("agent"), sensors, extra):
        yield running


def _systemd_groups(uid: str, cid: str) -> list[str]:
    return ["kubepods.slice", "kubepods-burstable.slice", f"kubepods-burstable-pod{uid.replace('-', '_')}.slice",
            f"cri-containerd-{cid}.scope"]


def test_exec_in_a_pod_carries_labels_image_and_owning_deployment_from_the_api(api, api_agent):
    uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
    api.add_object(workload("ReplicaSet", "shop", "checkout-6b7c9d8f4d", owner=("Deployment", "checkout")))
    api.put(pod("shop", "checkout-6b7c9d8f4d-h2x9z", NODE, uid=uid, labels={"app": "checkout", "tier": "backend"},
                annotations={"team": "payments", "other": "not copied"}, owner=("ReplicaSet", "checkout-6b7c9d8f4d"),
                qos="Burstable", containers=[("app", "registry.example.com/shop/checkout:2.4.1",
                                             "registry.example.com/shop/checkout@sha256:" + "c" * 64, cid)]))
    leaf, created = _make_groups(_systemd_groups(uid, cid))
    try:
        p = _exec_in(api_agent, leaf, f"api-pod-{os.getpid()}")
        e = [x for x in api_agent.events() if x["type"] == "process_exec" and x["process"] == p][0]
    finally:
        _remove(created)
    assert p["container"] == {"id": cid, "runtime": "containerd"}
    assert p["pod"] == {
        "namespace": "shop", "name": "checkout-6b7c9d8f4d-h2x9z", "uid": uid, "qos_class": "Burstable",
        "labels": {"app": "checkout", "tier": "backend"}, "annotations": {"team": "payments"},
        "workload": "checkout", "workload_kind": "Deployment",
        "container": {"name": "app", "image": "registry.example.com/shop/checkout:2.4.1",
                      "image_id": "registry.example.com/shop/checkout@sha256:" + "c" * 64},
    }
    assert e["node"] == {"name": NODE, "cluster": "prod-eu", "labels": {"topology.kubernetes.io/zone": "eu-1a"}}
    assert "kubernetes_pod_unknown" not in e.get("tags", [])


def test_recreated_pod_with_the_same_name_is_not_confused(api, api_agent):
    """A StatefulSet's pod deleted and re-created: same name, new uid, new cgroup; each process gets its own."""
    old_uid, old_cid = str(uuid.uuid4()), os.urandom(32).hex()
    api.put(pod("db", "pg-0", NODE, uid=old_uid, labels={"rev": "1"}, owner=("StatefulSet", "pg"),
                containers=[("pg", "postgres:15", None, old_cid)]))
    old_leaf, old_created = _make_groups(_systemd_groups(old_uid, old_cid))
    try:
        before = _exec_in(api_agent, old_leaf, f"pg-old-{os.getpid()}")
        api.delete("db", "pg-0")
        new_uid, new_cid = str(uuid.uuid4()), os.urandom(32).hex()
        api.put(pod("db", "pg-0", NODE, uid=new_uid, labels={"rev": "2"}, owner=("StatefulSet", "pg"),
                    containers=[("pg", "postgres:16", None, new_cid)]))
        new_leaf, new_created = _make_groups(_systemd_groups(new_uid, new_cid))
        try:
            after = _exec_in(api_agent, new_leaf, f"pg-new-{os.getpid()}")
            # the old pod's last process, still running after the delete, keeps the old pod
            straggler = _exec_in(api_agent, old_leaf, f"pg-straggler-{os.getpid()}")
        finally:
            _remove(new_created)
    finally:
        _remove(old_created)
    assert (before["pod"]["uid"], before["pod"]["labels"], before["pod"]["container"]["image"]) == (old_uid, {"rev": "1"}, "postgres:15")
    assert (after["pod"]["uid"], after["pod"]["labels"], after["pod"]["container"]["image"]) == (new_uid, {"rev": "2"}, "postgres:16")
    assert (straggler["pod"]["uid"], straggler["pod"]["labels"]) == (old_uid, {"rev": "1"})
    assert after["pod"]["name"] == before["pod"]["name"] == "pg-0"
    assert (after["pod"]["workload_kind"], after["pod"]["workload"]) == ("StatefulSet", "pg")


def test_exec_in_a_pod_the_api_shows_late_waits_for_it(api, api_agent):
    """The kubelet starts a container moments after the API server recorded the pod; here the pod
    reaches the watch only after the exec: the event waits (kubernetes.api.wait) and is completed."""
    import threading
    import time

    uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
    leaf, created = _make_groups(_systemd_groups(uid, cid))
    late = threading.Timer(0.6, lambda: api.put(pod("jobs", "report-x1", NODE, uid=uid, labels={"app": "report"},
                                                    containers=[("r", "report:1", None, cid)])))
    try:
        late.start()
        t0 = time.monotonic()
        p = _exec_in(api_agent, leaf, f"late-pod-{os.getpid()}")
    finally:
        late.join()
        _remove(created)
    assert p["pod"]["labels"] == {"app": "report"} and p["pod"]["container"]["image"] == "report:1"
    assert time.monotonic() - t0 >= 0.5  # it did wait


def test_exec_in_a_pod_the_api_never_shows_is_sent_tagged(api, api_agent):
    uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
    leaf, created = _make_groups(_systemd_groups(uid, cid))
    try:
        mark = f"ghost-pod-{os.getpid()}"
        p = _exec_in(api_agent, leaf, mark)
    finally:
        _remove(created)
    e = [x for x in api_agent.events() if x["type"] == "process_exec" and mark in x["process"].get("args", [])][0]
    assert "kubernetes_pod_unknown" in e["tags"]
    assert p["container"] == {"id": cid, "runtime": "containerd"} and "pod" not in p
