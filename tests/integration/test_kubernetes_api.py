"""Pod metadata from the Kubernetes API with the real `kubernetes` client, against a stand-in for the
API server (tests/servers/kube_api.py: no real API server can run here; the stand-in replays the
documented list/watch protocol, ReplicaSet and Job reads, 410 Gone and dropped connections)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from siemhub.collector.container import PodResolver
from siemhub.collector.core.event import Clock, Container, Event, EventIds, Node, Process
from siemhub.collector.k8s.config import KubernetesApiConfig
from siemhub.collector.k8s.pods import PodStore
from siemhub.collector.k8s.resolver import UNKNOWN_TAG, ApiPodResolver, PodHold
from siemhub.collector.k8s.watcher import PodWatcher
from tests.servers.kube_api import KubeApiStandIn, pod, workload

NODE = "node-a"


def _until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _cid() -> str:
    return os.urandom(32).hex()


@pytest.fixture
def api():
    with KubeApiStandIn(token="t0ken") as server:
        yield server


def _watch(api, **over):
    registry = CollectorRegistry()
    cfg = KubernetesApiConfig(host=api.url, token="t0ken", backoff_initial=0.05, backoff_max=0.2,
                              watch_timeout=over.pop("watch_timeout", 30), annotations=["team", "siemhub.io/*"],
                              deleted_ttl=over.pop("deleted_ttl", 60.0), **over)
    store = PodStore(cfg.deleted_ttl)
    w = PodWatcher(cfg, NODE, store, registry)
    w.start()
    assert w.first_list.wait(10)
    return w, store, registry


def _node_resolver(tmp_path) -> PodResolver:
    # no kubelet directories: everything comes from the API
    return PodResolver(str(tmp_path / "none"), str(tmp_path / "none"), str(tmp_path / "none"), (), runtime_dirs=())


def test_pods_of_this_node_with_labels_images_and_owning_deployment(api, tmp_path):
    cid, sidecar = _cid(), _cid()
    api.add_object(workload("ReplicaSet", "shop", "web-7d9f8b6c5d", owner=("Deployment", "web")))
    web = api.put(pod("shop", "web-7d9f8b6c5d-x2k4p", NODE, labels={"app": "web", "tier": "front"},
                      annotations={"team": "payments", "kubectl.kubernetes.io/restartedAt": "x",
                                   "siemhub.io/owner": "alice"},
                      owner=("ReplicaSet", "web-7d9f8b6c5d"), qos="Burstable",
                      containers=[("nginx", "docker.io/library/nginx:1.25", "docker.io/library/nginx@sha256:" + "a" * 64, cid),
                                  ("envoy", "envoyproxy/envoy:v1.30", None, sidecar)]))
    api.put(pod("shop", "elsewhere", "node-b", labels={"app": "web"}, containers=[("c", "busybox", None, _cid())]))
    w, store, registry = _watch(api)
    try:
        assert api.lists()[0]["fieldSelector"] == f"spec.nodeName={NODE}"  # this node's pods only
        assert len(store) == 1
        r = ApiPodResolver(_node_resolver(tmp_path), store)
        p = r.lookup(cid, web["metadata"]["uid"], "Burstable")
        assert (p.namespace, p.name, p.uid, p.qos_class) == ("shop", "web-7d9f8b6c5d-x2k4p", web["metadata"]["uid"], "Burstable")
        assert p.labels == {"app": "web", "tier": "front"}
        assert p.annotations == {"team": "payments", "siemhub.io/owner": "alice"}  # only the selected ones
        assert (p.workload_kind, p.workload) == ("Deployment", "web")
        assert (p.container.name, p.container.image, p.container.image_id) == (
            "nginx", "docker.io/library/nginx:1.25", "docker.io/library/nginx@sha256:" + "a" * 64)
        assert r.lookup(sidecar, web["metadata"]["uid"]).container.name == "envoy"
        assert r.lookup(cid, web["metadata"]["uid"], "Burstable") is p  # cached until the pod changes
        # MODIFIED: a label changes
        web["metadata"]["labels"]["tier"] = "edge"
        api.put(web)
        _until(lambda: r.lookup(cid, web["metadata"]["uid"]).labels.get("tier") == "edge", what="MODIFIED")
        assert registry.get_sample_value("siemhub_kubernetes_api_pods") == 1
    finally:
        w.stop()


def test_job_and_cronjob_owners_and_fallbacks(api, tmp_path):
    api.add_object(workload("Job", "ops", "backup-28912345", owner=("CronJob", "backup")))
    api.add_object(workload("Job", "ops", "migrate"))
    c1, c2, c3, c4, c5 = (_cid() for _ in range(5))
    p1 = api.put(pod("ops", "backup-28912345-abcde", NODE, owner=("Job", "backup-28912345"), containers=[("b", "restic", None, c1)]))
    p2 = api.put(pod("ops", "migrate-xyz12", NODE, owner=("Job", "migrate"), containers=[("m", "flyway", None, c2)]))
    p3 = api.put(pod("db", "pg-0", NODE, owner=("StatefulSet", "pg"), containers=[("pg", "postgres:16", None, c3)]))
    # a ReplicaSet the agent cannot read (gone, or no RBAC): the Deployment from its name
    p4 = api.put(pod("shop", "api-5c8f7d9b4-q7w8e", NODE, owner=("ReplicaSet", "api-5c8f7d9b4"), containers=[("a", "api:2", None, c4)]))
    p5 = api.put(pod("default", "debug", NODE, containers=[("sh", "busybox", None, c5)]))  # a bare pod
    w, store, _ = _watch(api)
    try:
        r = ApiPodResolver(_node_resolver(tmp_path), store)
        got = {n: (r.lookup(c, p["metadata"]["uid"]).workload_kind, r.lookup(c, p["metadata"]["uid"]).workload)
               for n, c, p in (("cron", c1, p1), ("job", c2, p2), ("sts", c3, p3), ("rs", c4, p4), ("bare", c5, p5))}
        assert got == {"cron": ("CronJob", "backup"), "job": ("Job", "migrate"), "sts": ("StatefulSet", "pg"),
                       "rs": ("Deployment", "api"), "bare": (None, None)}
    finally:
        w.stop()


def test_deleted_and_recreated_pod_with_the_same_name_is_not_confused(api, tmp_path):
    old_cid, new_cid = _cid(), _cid()
    old = api.put(pod("db", "pg-0", NODE, labels={"rev": "1"}, owner=("StatefulSet", "pg"),
                      containers=[("pg", "postgres:15", None, old_cid)]))
    w, store, _ = _watch(api, deleted_ttl=0.5)
    try:
        r = ApiPodResolver(_node_resolver(tmp_path), store)
        assert r.lookup(old_cid, old["metadata"]["uid"]).labels == {"rev": "1"}
        api.delete("db", "pg-0")
        new = api.put(pod("db", "pg-0", NODE, labels={"rev": "2"}, owner=("StatefulSet", "pg"),
                          containers=[("pg", "postgres:16", None, new_cid)]))
        assert new["metadata"]["uid"] != old["metadata"]["uid"]
        _until(lambda: store.get(new["metadata"]["uid"]) is not None, what="the new pod")
        n = r.lookup(new_cid, new["metadata"]["uid"])
        assert (n.uid, n.labels, n.container.image) == (new["metadata"]["uid"], {"rev": "2"}, "postgres:16")
        # the old pod's last processes (exiting) still resolve to the old pod, not the new one
        o = r.lookup(old_cid, old["metadata"]["uid"])
        assert (o.uid, o.labels, o.container.image) == (old["metadata"]["uid"], {"rev": "1"}, "postgres:15")
        assert store.is_deleted(old["metadata"]["uid"])
        time.sleep(0.6)
        store.expire()
        assert store.get(old["metadata"]["uid"]) is None and store.get(new["metadata"]["uid"]) is not None
    finally:
        w.stop()


def test_410_gone_forces_a_relist_and_nothing_is_missed(api, tmp_path):
    a = api.put(pod("x", "a", NODE, containers=[("c", "img:a", None, _cid())]))
    w, store, registry = _watch(api)
    try:
        _until(lambda: api.watches(), what="a watch")
        api.compact()  # etcd compaction: the watch's resourceVersion is now too old
        api.drop_watches()
        b = api.put(pod("x", "b", NODE, containers=[("c", "img:b", None, _cid())]))  # made while not watching
        api.delete("x", "a")
        _until(lambda: registry.get_sample_value("siemhub_kubernetes_api_lists_total", {"reason": "gone"}) == 1,
               what="a relist after 410")
        _until(lambda: store.get(b["metadata"]["uid"]) is not None and store.is_deleted(a["metadata"]["uid"]),
               what="the relisted state")
        assert registry.get_sample_value("siemhub_kubernetes_api_lists_total", {"reason": "initial"}) == 1
    finally:
        w.stop()


def test_dropped_connection_resumes_from_the_last_version(api, tmp_path):
    w, store, registry = _watch(api)
    try:
        _until(lambda: api.watches(), what="a watch")
        api.drop_watches()
        c = api.put(pod("x", "c", NODE, labels={"v": "1"}, containers=[("c", "img:c", None, _cid())]))
        _until(lambda: store.get(c["metadata"]["uid"]) is not None, what="the pod added during the drop")
        assert registry.get_sample_value("siemhub_kubernetes_api_watch_restarts_total", {"reason": "dropped"}) >= 1
        # it watched again from the version it had, without a relist
        assert registry.get_sample_value("siemhub_kubernetes_api_lists_total", {"reason": "gone"}) is None
        resumed = api.watches()[-1]
        assert int(resumed["resourceVersion"]) >= 100
    finally:
        w.stop()


def test_server_side_watch_timeout_rewatches(api):
    w, store, registry = _watch(api, watch_timeout=1)
    try:
        _until(lambda: len(api.watches()) >= 2, timeout=5, what="a second watch after the server's timeout")
        assert api.watches()[0]["timeoutSeconds"] == "1"
        assert registry.get_sample_value("siemhub_kubernetes_api_watch_restarts_total", {"reason": "timeout"}) >= 1
    finally:
        w.stop()


def test_wrong_token_is_node_mode_then_retries(api, tmp_path):
    from siemhub.collector.sensors.process import KubernetesConfig
    from siemhub.collector.k8s.enrich import KubernetesEnrichment

    registry = CollectorRegistry()
    k = KubernetesConfig(log_pods_dir=str(tmp_path), api={"host": api.url, "token": "wrong", "backoff_initial": 0.05})
    kube = KubernetesEnrichment(k, NODE, registry)
    kube.start(lambda events: None)
    try:
        assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "node"}) == 1
        assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "api"}) == 0
        assert "401" in kube.watcher.error
        _until(lambda: registry.get_sample_value("siemhub_kubernetes_api_lists_total", {"reason": "initial"}) is None
               and len(api.lists()) >= 3, what="retries")
    finally:
        kube.stop()


def test_no_api_outside_a_cluster_is_host_or_node_mode(tmp_path, monkeypatch, caplog):
    from siemhub.collector.sensors.process import KubernetesConfig
    from siemhub.collector.k8s.enrich import KubernetesEnrichment

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    registry = CollectorRegistry()
    caplog.set_level("INFO", "siemhub.kubernetes")
    kube = KubernetesEnrichment(KubernetesConfig(log_pods_dir=str(tmp_path / "missing")), NODE, registry)
    kube.start(lambda events: None)
    assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "host"}) == 1
    assert "host mode" in caplog.text and "KUBERNETES_SERVICE_HOST" in caplog.text
    registry = CollectorRegistry()
    kube = KubernetesEnrichment(KubernetesConfig(log_pods_dir=str(tmp_path)), NODE, registry)
    kube.start(lambda events: None)
    assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "node"}) == 1


def _exec_event(ids, clock, cid: str, pod_uid: str | None = None) -> Event:
    proc = Process(exec_id="x", pid=1, tid=1, ppid=0, binary="/bin/true", container=Container(id=cid, runtime="containerd"))
    return Event(id=ids.new(), time=clock.now(), type="process_exec", schema_version="1.3", severity="info",
                 node=Node(name=NODE), process=proc)


def test_an_event_of_a_pod_not_known_yet_waits_then_is_completed_or_sent_tagged(api, tmp_path):
    w, store, registry = _watch(api)
    released: list[Event] = []
    r = ApiPodResolver(_node_resolver(tmp_path), store)
    hold = PodHold(r, released.extend, wait=1.0, registry=registry)
    ids, clock = EventIds(), Clock()
    try:
        uid_late, cid_late = str(uuid.uuid4()), _cid()
        uid_never, cid_never = str(uuid.uuid4()), _cid()
        # the sensor resolves the exec's pod: unknown to the API yet
        assert r.lookup(cid_late, uid_late, "BestEffort") is None and r.lookup(cid_never, uid_never) is None
        e_late, e_never = _exec_event(ids, clock, cid_late), _exec_event(ids, clock, cid_never)
        other = Event(id=ids.new(), time=clock.now(), type="process_exec", schema_version="1.3", severity="info",
                      node=Node(name=NODE), process=Process(exec_id="y", pid=2, tid=2, ppid=0))
        assert hold.filter([e_late, other, e_never]) == [other]  # not in a pod: goes on at once
        assert hold.filter([e2 := _exec_event(ids, clock, cid_late)]) == []  # behind the first, in order
        # the pod shows up on the API server a moment later
        time.sleep(0.2)
        late = api.put(pod("shop", "new-pod", NODE, uid=uid_late, labels={"app": "new"}, owner=("StatefulSet", "s"),
                           containers=[("c", "img:1", None, cid_late)]))
        _until(lambda: len(released) == 2, what="the held events of the late pod")
        assert released == [e_late, e2]
        assert e_late.process.pod.labels == {"app": "new"} and e_late.process.pod.uid == late["metadata"]["uid"]
        assert UNKNOWN_TAG not in e_late.tags
        # the other never shows up: sent tagged after `wait`, not dropped
        _until(lambda: len(released) == 3, what="the expired event")
        assert released[2] is e_never and e_never.tags == [UNKNOWN_TAG] and e_never.process.pod is None
        # later events of that container are not held again, but still tagged
        later = _exec_event(ids, clock, cid_never)
        assert hold.filter([later]) == [later] and later.tags == [UNKNOWN_TAG]
        assert registry.get_sample_value("siemhub_kubernetes_held_events_total", {"outcome": "resolved"}) == 2
        assert registry.get_sample_value("siemhub_kubernetes_held_events_total", {"outcome": "expired"}) == 1
        assert hold.counts == {"resolved": 2, "expired": 1, "overflow": 0}
    finally:
        hold.close()
        w.stop()


def test_api_config_errors_name_the_line_and_hide_the_token(tmp_path):
    from siemhub.collector import config

    with pytest.raises(config.ConfigError) as err:
        config.parse("sensors:\n  process:\n    kubernetes:\n      api:\n        host: https://k8s:6443\n"
                     "        wait: 99\nexporters: {out: {type: stdout}}\nroutes: [{name: all, to: [out]}]\n", "<k8s>")
    assert "<k8s>:6" in str(err.value) and "wait" in str(err.value)
    cfg = config.parse("sensors:\n  process:\n    kubernetes:\n      api: {host: 'https://k8s:6443', token: s3cr3t}\n"
                       "exporters: {out: {type: stdout}}\nroutes: [{name: all, to: [out]}]\n", "<k8s>")
    api_cfg = cfg.agent.sensors.process.kubernetes.api
    assert "s3cr3t" not in repr(api_cfg) and api_cfg.token.get_secret_value() == "s3cr3t"


def test_node_labels_from_the_node_object_under_the_configured_ones(api, tmp_path):
    from siemhub.collector.sensors.process import KubernetesConfig
    from siemhub.collector.k8s.enrich import KubernetesEnrichment
    from tests.servers.kube_api import node

    api.nodes[NODE] = node(NODE, {"topology.kubernetes.io/zone": "eu-1b", "topology.kubernetes.io/region": "eu-1",
                                  "node.kubernetes.io/instance-type": "m6i.large", "kubernetes.io/hostname": NODE,
                                  "team": "from-the-node"})
    n = Node(name=NODE, labels={"team": "from-config"})
    k = KubernetesConfig(log_pods_dir=str(tmp_path), api={"host": api.url, "token": "t0ken",
                                                          "node_labels": ["topology.kubernetes.io/*", "team",
                                                                          "node.kubernetes.io/instance-type"]})
    kube = KubernetesEnrichment(k, NODE, CollectorRegistry())
    kube.start(lambda events: None, n)
    try:
        assert n.labels == {"topology.kubernetes.io/zone": "eu-1b", "topology.kubernetes.io/region": "eu-1",
                            "node.kubernetes.io/instance-type": "m6i.large", "team": "from-config"}
    finally:
        kube.stop()


def test_node_labels_unreadable_keeps_the_configured_ones(api, tmp_path, caplog):
    from siemhub.collector.sensors.process import KubernetesConfig
    from siemhub.collector.k8s.enrich import KubernetesEnrichment

    n = Node(name=NODE, labels={"zone": "a"})
    k = KubernetesConfig(log_pods_dir=str(tmp_path), api={"host": api.url, "token": "t0ken", "node_labels": ["*"]})
    kube = KubernetesEnrichment(k, NODE, CollectorRegistry())
    kube.start(lambda events: None, n)  # no Node object: 404, as without RBAC for nodes
    try:
        assert n.labels == {"zone": "a"} and "get on nodes" in caplog.text
    finally:
        kube.stop()


def test_https_api_server_is_verified(tmp_path):
    """The real API server speaks only HTTPS: with its CA the watch works; without it (an unknown
    certificate) the agent refuses it and stays in node mode."""
    from siemhub.collector.sensors.process import KubernetesConfig
    from siemhub.collector.k8s.enrich import KubernetesEnrichment
    from tests.servers.kube_api import self_signed

    cert, key, ca = self_signed(tmp_path)
    with KubeApiStandIn(token="t0ken", tls=(cert, key)) as tls_api:
        cid = _cid()
        p = tls_api.put(pod("shop", "tls-pod", NODE, labels={"app": "tls"}, containers=[("c", "img:1", None, cid)]))
        registry = CollectorRegistry()
        kube = KubernetesEnrichment(KubernetesConfig(log_pods_dir=str(tmp_path), api={
            "host": tls_api.url, "token": "t0ken", "ca_file": ca}), NODE, registry)
        kube.start(lambda events: None)
        try:
            assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "api"}) == 1
            assert kube.resolver.lookup(cid, p["metadata"]["uid"]).labels == {"app": "tls"}
        finally:
            kube.stop()
        served = len(tls_api.requests)
        registry = CollectorRegistry()
        kube = KubernetesEnrichment(KubernetesConfig(log_pods_dir=str(tmp_path), api={
            "host": tls_api.url, "token": "t0ken", "backoff_initial": 5}), NODE, registry)
        kube.start(lambda events: None)
        try:
            assert registry.get_sample_value("siemhub_kubernetes_mode", {"mode": "node"}) == 1
            assert "SSL" in kube.watcher.error or "certificate" in kube.watcher.error
            assert len(tls_api.requests) == served  # no request (no token) went over the unverified connection
        finally:
            kube.stop()


def test_resync_relists_and_corrects_a_missed_event(api, tmp_path):
    gone = api.put(pod("x", "gone", NODE, containers=[("c", "img", None, _cid())]))
    registry = CollectorRegistry()
    cfg = KubernetesApiConfig(host=api.url, token="t0ken", watch_timeout=1).model_copy(update={"resync": 0.5})
    store = PodStore(cfg.deleted_ttl)
    w = PodWatcher(cfg, NODE, store, registry)
    w.start()
    try:
        assert w.first_list.wait(10) and store.get(gone["metadata"]["uid"]) is not None
        api.delete("x", "gone", missed=True)  # the watch never hears of it
        _until(lambda: store.is_deleted(gone["metadata"]["uid"]), what="the resync to drop the pod")
        assert registry.get_sample_value("siemhub_kubernetes_api_lists_total", {"reason": "resync"}) >= 1
    finally:
        w.stop()
