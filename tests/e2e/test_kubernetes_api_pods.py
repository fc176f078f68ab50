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
# a policy scoped by a label selector: execs of /bin/true in pods labelled team=payments, not canaries
POLICY = """\
name: payments-true
description: execs of /bin/true in the payments team's pods (not canaries)
rules:
  - name: true-in-payments
    match:
      types: [process_exec]
      binaries: ["true"]
      pod_labels:
        matchLabels: {team: payments}
        matchExpressions:
          - {key: track, operator: NotIn, values: [canary]}
    action: notify
    tags: [payments-scope]
"""


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
    pol = tmp_path_factory.mktemp("policies") / "scoped.yaml"
    pol.write_text(POLICY)
    extra = (f"node: {{name: {NODE}, cluster: prod-eu, labels: {{topology.kubernetes.io/zone: eu-1a}}}}\n"
             f'policies: {{library: false, paths: ["{pol}"]}}')
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
    counters = api_agent.agent.status_event().status.counters
    assert counters["kubernetes_held_expired"] >= 1 and counters["kubernetes_api_pods"] >= 1


def test_a_label_selector_policy_acts_on_that_pods_processes_only(api, api_agent):
    pods = {}
    for name, labels in (("pay-1", {"team": "payments", "track": "stable"}),
                         ("pay-canary", {"team": "payments", "track": "canary"}),
                         ("cart-1", {"team": "cart"})):
        uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
        api.put(pod("shop", name, NODE, uid=uid, labels=labels, owner=("StatefulSet", name.split("-")[0]),
                    containers=[("c", "img:1", None, cid)]))
        pods[name] = _make_groups(_systemd_groups(uid, cid))
    execs = {}
    try:
        for name, (leaf, _created) in pods.items():
            execs[name] = _exec_in(api_agent, leaf, f"scope-{name}-{os.getpid()}")
        import subprocess

        host_mark = f"scope-host-{os.getpid()}"
        subprocess.run(["/bin/true", host_mark], check=True)
        execs["host"] = api_agent.wait_for(lambda e: e["type"] == "process_exec"
                                           and host_mark in e["process"].get("args", []), what="host exec")[0]["process"]
    finally:
        for _leaf, created in pods.values():
            _remove(created)
    acted = api_agent.wait_for(lambda e: e["type"] == "policy_action" and e["policy"]["policy"] == "payments-true"
                               and e["process"]["exec_id"] == execs["pay-1"]["exec_id"], what="the policy action")
    assert acted[0]["process"]["pod"]["name"] == "pay-1"
    import time

    time.sleep(0.5)  # the others had the same time to be acted on
    by_exec = {e["process"]["exec_id"] for e in api_agent.events()
               if e["type"] == "policy_action" and e["policy"]["policy"] == "payments-true"}
    assert by_exec == {execs["pay-1"]["exec_id"]}
    tagged = [e for e in api_agent.events() if e["type"] == "process_exec" and "payments-scope" in e.get("tags", [])]
    assert [e["process"]["exec_id"] for e in tagged] == [execs["pay-1"]["exec_id"]]
