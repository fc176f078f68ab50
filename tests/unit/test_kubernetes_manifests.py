"""deploy/kubernetes: every overlay renders with `kubectl kustomize` (Debian's kubernetes-client, or any
kubectl on PATH), every object validates offline against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), and the objects are the ones expected, with
the expected mounts, capabilities, probes and RBAC. The agent and aggregator configs shipped in the
ConfigMaps load with siemhub's own config loader, with their secrets where the manifests mount them."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, server_unavailable

KUSTOMIZE = REPO / "deploy" / "kubernetes"
OVERLAYS = {
    "base": KUSTOMIZE / "base",
    "agent-elasticsearch": KUSTOMIZE / "overlays" / "agent-elasticsearch",
    "kafka-aggregator": KUSTOMIZE / "overlays" / "kafka-aggregator",
}
# the oldest Kubernetes the manifests claim (autoscaling/v2, policy/v1 PDB: 1.23+) and the newest schemas
K8S_VERSIONS = ("1.27.0", None)
AGENT_CAPS = ["BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"]


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        server_unavailable("kubectl (Debian package kubernetes-client) is not installed: deploy/local/setup-host.sh")
    return path


@pytest.fixture(scope="module", params=list(OVERLAYS))
def rendered(request) -> tuple[str, list[dict]]:
    out = subprocess.run([_kubectl(), "kustomize", str(OVERLAYS[request.param])], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {request.param} failed:\n{out.stderr}"
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]


def _by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in _by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _check_service_monitor(sm: dict, objs: list[dict]) -> None:
    """ServiceMonitor is a Prometheus Operator CRD (no schema in kubernetes-validate): checked against
    the operator's documented shape, and against the Service it must select."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    want = sm["spec"]["selector"]["matchLabels"]
    services = [s for s in _by_kind(objs, "Service") if want.items() <= s["metadata"].get("labels", {}).items()]
    assert len(services) == 1, f"ServiceMonitor {sm['metadata']['name']} selects {len(services)} Services"
    ports = {p["name"] for p in services[0]["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scheme", "scrapeTimeout"}
        assert ep["port"] in ports and ep["path"] == "/metrics"


def test_every_object_validates_against_the_kubernetes_schemas(rendered):
    import kubernetes_validate

    name, objs = rendered
    assert objs, f"{name} rendered nothing"
    for version in K8S_VERSIONS:
        v = version or kubernetes_validate.latest_version()
        for o in objs:
            if o["kind"] == "ServiceMonitor":
                _check_service_monitor(o, objs)
                continue
            try:
                kubernetes_validate.validate(o, v, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {o['kind']} {o['metadata']['name']} is invalid for Kubernetes {v}: {exc.message}")


def test_the_validator_rejects_a_mistake():
    """Not vacuous: a misspelt field and a wrong type in the DaemonSet are caught."""
    import kubernetes_validate

    out = subprocess.run([_kubectl(), "kustomize", str(OVERLAYS["base"])], capture_output=True, text=True, check=True)
    ds = _one(list(yaml.safe_load_all(out.stdout)), "DaemonSet")
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilitys"] = {"add": ["BPF"]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.27.0", strict=True)
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.27.0", strict=True)


def test_expected_objects(rendered):
    name, objs = rendered
    # generated ConfigMaps carry a content hash: <name>-<10 characters>
    kinds = sorted((o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"]) if o["kind"] == "ConfigMap"
                    else o["metadata"]["name"]) for o in objs)
    base = [("ClusterRole", "siemhub-agent"), ("ClusterRoleBinding", "siemhub-agent"),
            ("ConfigMap", "siemhub-agent"), ("ConfigMap", "siemhub-cluster"), ("ConfigMap", "siemhub-policies"),
            ("DaemonSet", "siemhub-agent"), ("Namespace", "siemhub"), ("Service", "siemhub-agent-metrics"),
            ("ServiceAccount", "siemhub-agent"), ("ServiceMonitor", "siemhub-agent")]
    extra = {"base": [], "agent-elasticsearch": [],
             "kafka-aggregator": [("ConfigMap", "siemhub-aggregator"), ("Deployment", "siemhub-aggregator"),
                                  ("HorizontalPodAutoscaler", "siemhub-aggregator"),
                                  ("PodDisruptionBudget", "siemhub-aggregator"),
                                  ("Service", "siemhub-aggregator-metrics"), ("ServiceMonitor", "siemhub-aggregator")]}
    assert kinds == sorted(base + extra[name])
    for o in objs:
        if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == "siemhub", o["metadata"]["name"]


def test_agent_daemonset_mounts_capabilities_probes(rendered):
    _name, objs = rendered
    ds = _one(objs, "DaemonSet", "siemhub-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["serviceAccountName"] == "siemhub-agent"
    assert {"operator": "Exists"} in pod["tolerations"]  # every node, whatever its taints
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc.get("privileged") is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": AGENT_CAPS}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    host = {m: volumes[mounts[m]["name"]].get("hostPath", {}).get("path") for m in mounts}
    for path, host_path in {"/sys/kernel/btf": "/sys/kernel/btf", "/sys/kernel/tracing": "/sys/kernel/tracing",
                            "/sys/kernel/debug": "/sys/kernel/debug", "/sys/fs/bpf": "/sys/fs/bpf",
                            "/host/lib/modules": "/lib/modules", "/host/usr/src": "/usr/src",
                            "/sys/fs/cgroup": "/sys/fs/cgroup", "/var/log/pods": "/var/log/pods",
                            "/var/lib/kubelet/pods": "/var/lib/kubelet/pods"}.items():
        assert host.get(path) == host_path, f"{path}: {host.get(path)}"
    for ro in ("/sys/kernel/btf", "/sys/kernel/tracing", "/host/lib/modules", "/sys/fs/cgroup", "/var/log/pods"):
        assert mounts[ro].get("readOnly") is True, ro
    assert volumes[mounts["/etc/siemhub/agent.yaml"]["name"]]["configMap"]["name"].startswith("siemhub-agent-")
    # probes on the health endpoint, on the metrics port
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"]
    assert port == 9464
    assert c["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_rbac_is_read_only_pods_replicasets_jobs(rendered):
    _name, objs = rendered
    role = _one(objs, "ClusterRole", "siemhub-agent")
    got = sorted((g, r, tuple(sorted(rule["verbs"]))) for rule in role["rules"]
                 for g in rule["apiGroups"] for r in rule["resources"])
    assert got == [("", "pods", ("get", "list", "watch")), ("apps", "replicasets", ("get", "list", "watch")),
                   ("batch", "jobs", ("get", "list", "watch"))]
    binding = _one(objs, "ClusterRoleBinding", "siemhub-agent")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "siemhub-agent", "namespace": "siemhub"}]


def _secret_mounts(pod: dict) -> dict[str, str]:
    """mountPath -> Secret name, for the pod's first container."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]]["secret"]["secretName"] for m in pod["containers"][0]["volumeMounts"]
            if "secret" in volumes[m["name"]]}


def _load_config(text: str, pod: dict, objs: list[dict], tmp_path: Path, monkeypatch, source: str):
    """siemhub's loader on a shipped config: its ${file:...} must lie in a mounted Secret (the test puts
    stand-in files there), policies come from the policies ConfigMap."""
    from siemhub.collector import config

    mounts = _secret_mounts(pod)
    for ref in re.findall(r"\$\{file:([^}]+)\}", text) + re.findall(r"(?:ca_certs|ca_file): (/etc/siemhub/secrets/\S+?)[}\s]", text):
        assert any(ref.startswith(m + "/") for m in mounts), f"{source}: {ref} is in no mounted Secret ({mounts})"
        local = tmp_path / ref.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("stand-in-secret\n")
        text = text.replace(ref, str(local))
    policies = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("siemhub-policies")]
    pdir = tmp_path / "policies"
    pdir.mkdir(exist_ok=True)
    for cm in policies:
        for fname, body in cm["data"].items():
            (pdir / fname).write_text(body)
    text = text.replace("/etc/siemhub/policies", str(pdir))
    for var, value in {"NODE_NAME": "node-1", "POD_IP": "10.0.0.7", "CLUSTER_NAME": "prod"}.items():
        monkeypatch.setenv(var, value)
    return config.parse(text, source)


def test_shipped_configs_load_with_their_secrets(rendered, tmp_path, monkeypatch):
    name, objs = rendered
    ds = _one(objs, "DaemonSet", "siemhub-agent")
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("siemhub-agent-"))
    cfg = _load_config(cm["data"]["agent.yaml"], ds["spec"]["template"]["spec"], objs, tmp_path, monkeypatch,
                       f"{name}: agent.yaml")
    a = cfg.agent
    assert a.node.name == "node-1" and a.node.cluster == "prod"
    assert a.metrics.listen == "10.0.0.7:9464"
    assert a.sensors.process.kubernetes.api.node_name == "node-1"
    assert a.sensors.process.kubernetes.cgroup_roots[0] == "/sys/fs/cgroup"  # the host's, mounted in place
    names = {lp.policy.name for lp in cfg.policies.policies}
    assert "shell-in-production-pod" in names and "kubectl-exec" in names  # the ConfigMap's and the library's
    expect = {"base": "stdout", "agent-elasticsearch": "elasticsearch", "kafka-aggregator": "kafka"}[name]
    assert [c.type for _cls, c in cfg.exporters.values()] == [expect]
    if name == "kafka-aggregator":
        dep = _one(objs, "Deployment", "siemhub-aggregator")
        acm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("siemhub-aggregator-"))
        agg = _load_config(acm["data"]["aggregator.yaml"], dep["spec"]["template"]["spec"], objs, tmp_path, monkeypatch,
                           "aggregator.yaml")
        assert agg.agent.sources.kafka is not None and agg.agent.sources.kafka.topics == ["siemhub.events"]
        assert [c.type for _cls, c in agg.exporters.values()] == ["elasticsearch"]


def test_aggregator_runs_unprivileged_and_scales(rendered):
    name, objs = rendered
    if name != "kafka-aggregator":
        assert not _by_kind(objs, "Deployment")
        return
    dep = _one(objs, "Deployment", "siemhub-aggregator")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod.get("hostPID") is not True and pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["args"][0] == "aggregate"
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    hpa = _one(objs, "HorizontalPodAutoscaler", "siemhub-aggregator")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "siemhub-aggregator"}
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
