"""Container ids and Kubernetes pods from cgroup paths, and pod names from the kubelet's directories
(collector/container.py), through the process sensor's decode() and the /proc fallback."""

from __future__ import annotations


import pytest

from siemhub.collector import container
from siemhub.collector.container import PodResolver
from siemhub.collector.core.event import Node, Pod, PodContainer

from .kmsg import TICK, Harness, add_bundle, add_pod, exec_msg, fake_kubelet, make_proc

CID = "0123456789abcdef" * 4
CID2 = "fedcba9876543210" * 4
UID = "1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"
UID_ = UID.replace("-", "_")


# --- cgroup names -------------------------------------------------------------------------------

@pytest.mark.parametrize("path, want", [
    # plain containers, no pod
    (f"/system.slice/docker-{CID}.scope", (CID, "docker", None, None)),
    (f"/docker/{CID}", (CID, "docker", None, None)),
    (f"/machine.slice/libpod-{CID}.scope", (CID, "podman", None, None)),
    (f"/user.slice/{CID}", (CID, "unknown", None, None)),
    # Kubernetes, systemd driver: the uid is escaped with '_', the QoS class is in the slice name
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
     (CID, "containerd", UID, "BestEffort")),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope",
     (CID, "cri-o", UID, "Burstable")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CID}.scope", (CID, "docker", UID, "Guaranteed")),
    # Kubernetes, cgroupfs driver: /kubepods/<qos>/pod<uid>/<container>
    (f"/kubepods/besteffort/pod{UID}/{CID}", (CID, "cri", UID, "BestEffort")),
    (f"/kubepods/burstable/pod{UID}/{CID}", (CID, "cri", UID, "Burstable")),
    (f"/kubepods/pod{UID}/{CID}", (CID, "cri", UID, "Guaranteed")),
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", (CID, "cri-o", UID, "Burstable")),
])
def test_parse_path_layouts(path, want):
    assert container.parse_path(path) == want


@pytest.mark.parametrize("path", [
    "/", "/system.slice/ssh.service", "/user.slice/user-0.slice/session-3.scope",
    f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice",  # the pod, not a container
    f"/system.slice/crio-conmon-{CID}.scope",  # conmon, CRI-O's monitor, is not the container
    f"/system.slice/docker-{CID[:-1]}.scope",  # 63 hex digits
])
def test_parse_path_not_a_container(path):
    assert container.parse_path(path) is None


def test_kernel_names_stop_at_the_pod_for_cgroupfs():
    # The kernel sends the leaf and its parent only: the cgroupfs QoS class (grandparent) is unknown there.
    assert container.parse(CID, f"pod{UID}") == (CID, "cri", UID, None)
    assert container.parse(f"cri-containerd-{CID}.scope", f"kubepods-burstable-pod{UID_}.slice") == (
        CID, "containerd", UID, "Burstable")


# --- kubelet directories ------------------------------------------------------------------------

def test_pod_from_log_dirs_and_container_symlink(tmp_path):
    add_pod(tmp_path, "shop", "web-7d9f-x2k", UID, {"nginx": CID, "sidecar": CID2})
    r = fake_kubelet(tmp_path)
    assert r.lookup(CID, UID, "Burstable") == Pod(namespace="shop", name="web-7d9f-x2k", uid=UID,
                                                  qos_class="Burstable", container=PodContainer(name="nginx"))
    assert r.lookup(CID2, UID, "Burstable").container == PodContainer(name="sidecar")


def test_single_container_pod_named_without_symlink(tmp_path):
    add_pod(tmp_path, "kube-system", "coredns-5d78c9869d-abcde", UID, {"coredns": None})
    pod = fake_kubelet(tmp_path).lookup(CID, UID)
    assert (pod.namespace, pod.name, pod.container.name) == ("kube-system", "coredns-5d78c9869d-abcde", "coredns")


def test_several_containers_and_no_symlink_leave_the_container_unnamed(tmp_path):
    add_pod(tmp_path, "shop", "web", UID, {"a": None, "b": None})
    pod = fake_kubelet(tmp_path).lookup(CID, UID)
    assert pod.name == "web" and pod.container is None


def test_kubelet_pods_dir_names_the_only_container(tmp_path):
    (tmp_path / "var/log/pods" / f"ns1_p1_{UID}").mkdir(parents=True)  # log dir without container dirs yet
    (tmp_path / "var/lib/kubelet/pods" / UID / "containers" / "app").mkdir(parents=True)
    pod = fake_kubelet(tmp_path).lookup(CID, UID)
    assert (pod.namespace, pod.name, pod.container.name) == ("ns1", "p1", "app")


def test_qos_class_from_cgroup_dirs_when_the_path_lacks_it(tmp_path):
    add_pod(tmp_path, "ns1", "p1", UID, {"app": CID})
    (tmp_path / "sys/fs/cgroup/kubepods/besteffort" / f"pod{UID}").mkdir(parents=True)
    assert fake_kubelet(tmp_path).lookup(CID, UID, None).qos_class == "BestEffort"


def test_other_pods_do_not_match(tmp_path):
    other = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    add_pod(tmp_path, "ns1", "p1", other, {"app": CID})
    assert fake_kubelet(tmp_path).lookup(CID, UID) is None


def test_misses_are_cached_until_the_negative_ttl(tmp_path):
    r = fake_kubelet(tmp_path)  # negative_ttl 30 s
    assert r.lookup(CID, UID) is None
    add_pod(tmp_path, "ns1", "p1", UID, {"app": CID})
    assert r.lookup(CID, UID) is None  # still within the TTL: no directory reads per exec
    assert (r.resolved, r.unresolved) == (0, 1)
    r.negative_ttl = 0.0
    r._by_cid.clear()
    assert r.lookup(CID, UID).name == "p1"
    assert r.lookup(CID, UID).name == "p1" and r.resolved == 1  # found: cached for good


def test_missing_container_name_is_looked_up_again(tmp_path):
    add_pod(tmp_path, "shop", "web", UID, {"a": None, "b": None})
    r = fake_kubelet(tmp_path)
    r.negative_ttl = 0.0  # retry at once (the kubelet writes the symlink after the container started)
    assert r.lookup(CID, UID).container is None
    pod_dir = tmp_path / "var/log/pods" / f"shop_web_{UID}"
    (tmp_path / "var/log/containers" / f"web_shop_b-{CID}.log").symlink_to(pod_dir / "b" / "0.log")
    assert r.lookup(CID, UID).container.name == "b"


# --- container runtimes' OCI bundles -------------------------------------------------------------

CONTAINERD_ANN = {"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.container-name": "nginx",
                  "io.kubernetes.cri.image-name": "registry:5000/nginx:1.25", "io.kubernetes.cri.sandbox-id": CID2,
                  "io.kubernetes.cri.sandbox-name": "web-7d9f-x2k", "io.kubernetes.cri.sandbox-namespace": "shop",
                  "io.kubernetes.cri.sandbox-uid": UID}
CRIO_ANN = {"io.kubernetes.container.name": "api", "io.kubernetes.cri-o.ImageName": "quay.io/acme/api:2.0",
            "io.kubernetes.pod.name": "api-0", "io.kubernetes.pod.namespace": "payments", "io.kubernetes.pod.uid": UID}


def test_containerd_bundle_adds_the_image(tmp_path):
    add_pod(tmp_path, "shop", "web-7d9f-x2k", UID, {"nginx": CID, "sidecar": None})
    add_bundle(tmp_path, CID, CONTAINERD_ANN)
    pod = fake_kubelet(tmp_path).lookup(CID, UID, "Burstable")
    assert pod == Pod(namespace="shop", name="web-7d9f-x2k", uid=UID, qos_class="Burstable",
                      container=PodContainer(name="nginx", image="registry:5000/nginx:1.25"))


def test_crio_bundle_stands_in_for_missing_log_dirs(tmp_path):
    add_bundle(tmp_path, CID, CRIO_ANN, crio=True)  # no /var/log/pods at all (not mounted)
    pod = fake_kubelet(tmp_path).lookup(CID, UID)
    assert (pod.namespace, pod.name, pod.container.name, pod.container.image) == (
        "payments", "api-0", "api", "quay.io/acme/api:2.0")


def test_bundle_of_another_pod_is_ignored(tmp_path):
    add_bundle(tmp_path, CID, {**CONTAINERD_ANN, "io.kubernetes.cri.sandbox-uid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"})
    assert fake_kubelet(tmp_path).lookup(CID, UID) is None


def test_unreadable_bundle_is_skipped(tmp_path):
    add_pod(tmp_path, "shop", "web", UID, {"app": CID})
    d = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CID
    d.mkdir(parents=True)
    (d / "config.json").write_text("{not json")
    pod = fake_kubelet(tmp_path).lookup(CID, UID)
    assert pod.container == PodContainer(name="app")  # from the log directory, no image


def test_no_uid_or_disabled_means_no_lookup(tmp_path):
    add_pod(tmp_path, "ns1", "p1", UID, {"app": CID})
    assert fake_kubelet(tmp_path).lookup(CID, None) is None
    r = fake_kubelet(tmp_path)
    r.enabled = False
    assert r.lookup(CID, UID) is None


def test_missing_roots_are_not_an_error(tmp_path):
    r = PodResolver(str(tmp_path / "none1"), str(tmp_path / "none2"), str(tmp_path / "none3"), (str(tmp_path),))
    assert r.lookup(CID, UID, "Burstable") is None


# --- on events ----------------------------------------------------------------------------------

def test_exec_event_carries_the_pod(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 1000, ppid=1, start_ticks=100)
    add_pod(tmp_path / "k8s", "shop", "web-7d9f-x2k", UID, {"nginx": CID})
    h = Harness(proc)
    e = h.one(exec_msg(4242, ppid=1000, pstart=100 * TICK, cgroup=(
        f"cri-containerd-{CID}.scope".encode(), f"kubepods-besteffort-pod{UID_}.slice".encode())))
    assert e.process.container.id == CID and e.process.container.runtime == "containerd"
    assert e.process.pod == Pod(namespace="shop", name="web-7d9f-x2k", uid=UID, qos_class="BestEffort",
                                container=PodContainer(name="nginx"))


def test_exec_outside_kubernetes_has_no_pod(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 1000, ppid=1, start_ticks=100)
    h = Harness(proc)
    e = h.one(exec_msg(4243, ppid=1000, pstart=100 * TICK, cgroup=(f"docker-{CID}.scope".encode(), b"system.slice")))
    assert e.process.container.id == CID and e.process.pod is None


def test_process_found_in_proc_carries_the_pod(tmp_path):
    proc = tmp_path / "proc"
    d = make_proc(proc, 77, ppid=1, start_ticks=50)
    (d / "cgroup").write_text(f"0::/kubepods/burstable/pod{UID}/{CID}\n")
    add_pod(tmp_path / "k8s", "shop", "web", UID, {"app": CID})
    h = Harness(proc)
    p = h.cache.resolve(77).proc
    assert p.container.id == CID and "procfs" in p.flags
    assert p.pod == Pod(namespace="shop", name="web", uid=UID, qos_class="Burstable",
                        container=PodContainer(name="app"))


def test_policy_namespace_selector_reads_the_pod(tmp_path):
    """collector/policy.py's `namespaces` selector matches on process.pod.namespace, which this fills."""
    from .test_policy import actions, engine_from

    proc = tmp_path / "proc"
    make_proc(proc, 1000, ppid=1, start_ticks=100)
    add_pod(tmp_path / "k8s", "shop", "web", UID, {"app": CID})
    e = Harness(proc).one(exec_msg(4244, ppid=1000, pstart=100 * TICK, cgroup=(
        f"cri-containerd-{CID}.scope".encode(), f"kubepods-pod{UID_}.slice".encode())))
    eng = engine_from(tmp_path, """\
        name: s
        description: d
        rules:
          - {name: shop, match: {types: [process_exec], namespaces: ["sho*"], container: true}, action: notify}
          - {name: other, match: {types: [process_exec], namespaces: ["kube-*"]}, action: notify}
        """)
    assert actions(eng, e) == [("s", "shop")]


def test_config_points_the_resolver_at_its_directories(tmp_path):
    from siemhub.collector import config
    from siemhub.collector.agent import _pod_resolver

    add_pod(tmp_path, "ns1", "p1", UID, {"app": CID})
    cfg = config.parse(f"""
sensors:
  process:
    kubernetes: {{log_pods_dir: "{tmp_path}/var/log/pods", log_containers_dir: "{tmp_path}/var/log/containers",
                 negative_ttl: 2}}
exporters: {{out: {{type: stdout}}}}
routes: [{{name: all, to: [out]}}]
""", "<test>")
    r = _pod_resolver(cfg.agent.sensors.process.kubernetes)
    assert r.negative_ttl == 2 and r.lookup(CID, UID).name == "p1"
    with pytest.raises(config.ConfigError, match="log_pod_dir"):
        config.parse("sensors: {process: {kubernetes: {log_pod_dir: /x}}}\n", "<test>")


def test_agent_status_counts_pod_lookups(tmp_path):
    from types import SimpleNamespace

    from siemhub.collector.agent import Agent

    from .kmsg import make_clock, make_ids

    add_pod(tmp_path, "ns1", "p1", UID, {"app": CID})
    r = fake_kubelet(tmp_path)
    r.lookup(CID, UID)
    r.lookup(CID2, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")

    class _Cache:
        evicted = 0
        pods = r

        def __len__(self) -> int:
            return 0

    stub = SimpleNamespace(cache=_Cache(), sensors=[], pipeline=SimpleNamespace(runners={}), ids=make_ids(),
                           clock=make_clock(), node=Node(name="n"))
    counters = Agent.status_event(stub).status.counters
    assert counters["kubernetes_pods_found"] == 1 and counters["kubernetes_pods_not_found"] == 1
