"""End-to-end, real kernel: Kubernetes pod enrichment without Kubernetes.

A process is moved into a cgroup v2 group laid out as the kubelet lays out a pod's container (systemd
and cgroupfs drivers), with a fake kubelet tree (/var/log/pods, /var/log/containers) in a temp dir that
the agent's `sensors.process.kubernetes` settings point at. Its exec event must carry the container id
from the kernel's cgroup names and the pod name, namespace, uid, QoS class and container name from the
directories (and, for one, the image from a containerd OCI bundle). A process entering such a
"container" with nsenter (what `kubectl exec` does through the runtime) is flagged and audited by the
shipped kubectl-exec policy, with its pod. The cgroups are removed afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, running_agent

pytestmark = pytest.mark.bpf

CGROUP2 = Path("/sys/fs/cgroup/unified") if Path("/sys/fs/cgroup/unified/cgroup.procs").exists() else Path("/sys/fs/cgroup")


@pytest.fixture(scope="module")
def k8s_agent(tmp_path_factory):
    root = tmp_path_factory.mktemp("kubelet")
    sensors = f"""  process:
    poll_interval: 0.05
    kubernetes:
      log_pods_dir: "{root}/var/log/pods"
      log_containers_dir: "{root}/var/log/containers"
      kubelet_pods_dir: "{root}/var/lib/kubelet/pods"
      cgroup_roots: ["{CGROUP2}"]
      runtime_dirs: ["{root}/run/containerd/io.containerd.runtime.v2.task/k8s.io"]
"""
    # the shipped kubectl-exec audit policy only (docs/policies.md)
    policies = f'policies: {{library: false, paths: ["{REPO / "policies" / "kubectl-exec.yaml"}"]}}'
    for running in running_agent(tmp_path_factory.mktemp("agent"), sensors, policies):
        running.kubelet = root
        yield running


def _fake_pod(root: Path, namespace: str, name: str, uid: str, cname: str, cid: str) -> None:
    pod_dir = root / "var/log/pods" / f"{namespace}_{name}_{uid}" / cname
    pod_dir.mkdir(parents=True)
    (pod_dir / "0.log").touch()
    links = root / "var/log/containers"
    links.mkdir(parents=True, exist_ok=True)
    (links / f"{name}_{namespace}_{cname}-{cid}.log").symlink_to(pod_dir / "0.log")


def _make_groups(parts: list[str]) -> tuple[Path, list[Path]]:
    """mkdir each level under the cgroup v2 root; returns the leaf and the levels this test created."""
    created: list[Path] = []
    path = CGROUP2
    for part in parts:
        path = path / part
        if not path.exists():
            try:
                path.mkdir()
            except OSError as exc:
                _remove(created)
                pytest.fail(f"cannot create cgroup v2 group {path}: {exc}")
            created.append(path)
    return path, created


def _remove(created: list[Path]) -> None:
    for path in reversed(created):
        for _ in range(50):  # the moved process may take a moment to leave after it exited
            try:
                path.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def _exec_in(agent, leaf: Path, mark: str) -> dict:
    subprocess.run(["/bin/sh", "-c", f"echo $$ > {leaf}/cgroup.procs && exec /bin/true {mark}"], check=True)
    return agent.wait_for(lambda e: e["type"] == "process_exec" and mark in e["process"].get("args", []),
                          what=f"exec {mark}")[0]["process"]


def test_exec_in_a_systemd_layout_pod_carries_the_pod(k8s_agent):
    uid = str(uuid.uuid4())
    cid = os.urandom(32).hex()
    _fake_pod(k8s_agent.kubelet, "shop", "web-7d9f-x2k", uid, "nginx", cid)
    # containerd's OCI bundle for the container, as the CRI plugin annotates it: gives the image
    bundle = k8s_agent.kubelet / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.1.0", "annotations": {
        "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "nginx",
        "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.25", "io.kubernetes.cri.sandbox-name": "web-7d9f-x2k",
        "io.kubernetes.cri.sandbox-namespace": "shop", "io.kubernetes.cri.sandbox-uid": uid}}))
    leaf, created = _make_groups([
        "kubepods.slice", "kubepods-besteffort.slice",
        f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice", f"cri-containerd-{cid}.scope"])
    try:
        p = _exec_in(k8s_agent, leaf, f"pod-systemd-{os.getpid()}")
    finally:
        _remove(created)
    assert p["container"] == {"id": cid, "runtime": "containerd"}
    assert p["pod"] == {"namespace": "shop", "name": "web-7d9f-x2k",
                        "container": {"name": "nginx", "image": "docker.io/library/nginx:1.25"},
                        "uid": uid, "qos_class": "BestEffort"}


def test_exec_in_a_cgroupfs_layout_pod_carries_the_pod(k8s_agent):
    uid = str(uuid.uuid4())
    cid = os.urandom(32).hex()
    _fake_pod(k8s_agent.kubelet, "payments", "api-0", uid, "api", cid)
    # The kernel sends only `pod<uid>` and the container id: the QoS class comes from the cgroup tree.
    leaf, created = _make_groups(["kubepods", "burstable", f"pod{uid}", cid])
    try:
        p = _exec_in(k8s_agent, leaf, f"pod-cgroupfs-{os.getpid()}")
    finally:
        _remove(created)
    assert p["container"] == {"id": cid, "runtime": "cri"}
    assert p["pod"] == {"namespace": "payments", "name": "api-0", "container": {"name": "api"},
                        "uid": uid, "qos_class": "Burstable"}


def test_container_of_an_unknown_pod_has_no_pod(k8s_agent):
    uid = str(uuid.uuid4())  # no /var/log/pods directory for it
    cid = os.urandom(32).hex()
    leaf, created = _make_groups([
        "kubepods.slice", f"kubepods-pod{uid.replace('-', '_')}.slice", f"cri-containerd-{cid}.scope"])
    try:
        p = _exec_in(k8s_agent, leaf, f"pod-unknown-{os.getpid()}")
    finally:
        _remove(created)
    assert p["container"] == {"id": cid, "runtime": "containerd"}
    assert "pod" not in p


def test_kubectl_exec_into_a_pod_is_flagged_and_audited_with_its_pod(k8s_agent):
    uid = str(uuid.uuid4())
    cid = os.urandom(32).hex()
    _fake_pod(k8s_agent.kubelet, "shop", "cart-0", uid, "cart", cid)
    leaf, created = _make_groups([
        "kubepods.slice", "kubepods-burstable.slice",
        f"kubepods-burstable-pod{uid.replace('-', '_')}.slice", f"cri-containerd-{cid}.scope"])
    mark = f"kexec-{os.getpid()}-{time.monotonic_ns()}"
    script = f"sleep 30; : holder-{mark}"
    # the container: its own namespaces, in the pod's cgroup
    holder = subprocess.Popen(["/bin/sh", "-c", f"echo $$ > {leaf}/cgroup.procs && exec unshare --mount --uts "
                               f"--ipc --net --pid --fork /bin/sh -c '{script}'"])
    target = None
    try:
        target = k8s_agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["binary"] == "/bin/sh"
                                    and script in e["process"].get("args", []), what="container start")[0]["process"]
        assert target["pod"]["name"] == "cart-0" and "namespace_entry" not in target.get("flags", [])
        # kubectl exec: the runtime joins the container's cgroup and namespaces, then execs the command
        subprocess.run(["/bin/sh", "-c", f"echo $$ > {leaf}/cgroup.procs && exec nsenter -t {target['pid']} "
                        f"-m -u -i -n -p /bin/true {mark}"], check=True)
        e = k8s_agent.wait_for(lambda e: e["type"] == "process_exec" and e["process"]["binary"] == "/bin/true"
                               and mark in e["process"].get("args", []), what="kubectl exec")[0]["process"]
        assert "namespace_entry" in e["flags"] and {"mnt", "uts", "ipc", "net"} <= set(e["entered_namespaces"])
        assert e["container"]["id"] == cid
        assert (e["pod"]["namespace"], e["pod"]["name"], e["pod"]["container"]["name"]) == ("shop", "cart-0", "cart")
        pa = k8s_agent.wait_for(lambda x: x["type"] == "policy_action" and x["process"]["exec_id"] == e["exec_id"],
                                what="kubectl-exec policy action")[0]
        assert pa["policy"]["policy"] == "kubectl-exec" and pa["process"]["pod"]["namespace"] == "shop"
        # the container's own start is not an entry: no audit for it
        assert not [x for x in k8s_agent.events()
                    if x["type"] == "policy_action" and x["process"]["exec_id"] == target["exec_id"]]
    finally:
        if target is not None:
            os.kill(target["pid"], signal.SIGKILL)  # the container's pid 1: its pid namespace goes with it
        holder.kill()
        holder.wait()
        _remove(created)
