"""A pod as the Kubernetes API enrichment fills it, and the cluster name, in every format."""

from __future__ import annotations

import jsonschema
import ocsf_json_schema
import pytest

from siemhub.collector.core.event import EVENT_BASE, Container, Event, Node, Pod, PodContainer, Process, encode_json
from siemhub.exporters.formats import ecs, ocsf, otel, tetragon

IMAGE_ID = "registry.example.com/shop/checkout@sha256:" + "c" * 64


def _event() -> Event:
    pod = Pod(namespace="shop", name="checkout-6b7c9d8f4d-h2x9z", uid="0b6a1f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
              labels={"app": "checkout", "tier": "backend"}, annotations={"team": "payments"},
              workload="checkout", workload_kind="Deployment", qos_class="Burstable",
              container=PodContainer(name="app", image="registry.example.com/shop/checkout:2.4.1", image_id=IMAGE_ID))
    proc = Process(exec_id="eA==", pid=42, tid=42, ppid=1, uid=0, binary="/usr/bin/curl", args=["curl"],
                   start_time="2026-12-06T03:00:00.000000000Z", container=Container(id="ab" * 32, runtime="containerd"),
                   pod=pod)
    return Event(id="x-1", time="2026-12-06T03:00:01.000000000Z", type="process_exec", **EVENT_BASE,
                 node=Node(name="node-a", labels={"zone": "eu-1a"}, cluster="prod-eu"), process=proc)


def test_ecs_orchestrator_and_container_fields():
    doc = ecs.to_ecs(_event())
    assert doc["orchestrator"] == {
        "type": "kubernetes", "cluster": {"name": "prod-eu"}, "namespace": "shop",
        "resource": {"type": "pod", "name": "checkout-6b7c9d8f4d-h2x9z", "id": "0b6a1f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
                     "label": ["app:checkout", "tier:backend"], "annotation": ["team:payments"],
                     "parent": {"type": "Deployment"}}}
    assert doc["container"]["image"] == {"name": "registry.example.com/shop/checkout", "tag": ["2.4.1"],
                                         "hash": {"all": ["sha256:" + "c" * 64]}}
    assert doc["container"]["name"] == "app"
    assert doc["siemhub"]["process"]["pod"] == {"workload": "checkout", "workload_kind": "Deployment",
                                                "qos_class": "Burstable"}
    # every field emitted is in the index template's mapping
    mapped = set(ecs.FIELDS)
    for path in ("orchestrator.cluster.name", "orchestrator.resource.annotation", "orchestrator.resource.parent.type",
                 "container.image.hash.all", "siemhub.process.pod.workload_kind"):
        assert path in mapped


def test_ecs_cluster_name_without_a_pod():
    e = _event()
    e.process.pod = None
    e.process.container = None
    assert ecs.to_ecs(e)["orchestrator"] == {"type": "kubernetes", "cluster": {"name": "prod-eu"}}


def test_tetragon_pod_workload_kind_annotations_image_id_and_cluster_name():
    obj = tetragon.to_obj(_event())
    pod = obj["process_exec"]["process"]["pod"]
    assert pod["pod_labels"] == {"app": "checkout", "tier": "backend"}
    assert (pod["workload"], pod["workload_kind"]) == ("checkout", "Deployment")
    assert pod["pod_annotations"] == {"team": "payments"}
    assert pod["container"]["image"] == {"name": "registry.example.com/shop/checkout:2.4.1", "id": IMAGE_ID}
    assert obj["cluster_name"] == "prod-eu"


@pytest.mark.parametrize("version", ["1.1.0", "1.3.0", "1.5.0"])
def test_ocsf_container_image_and_cluster_valid(version):
    obj = ocsf.to_obj(_event())
    c = obj["process"]["container"]
    assert c["image"] == {"name": "registry.example.com/shop/checkout", "tag": "2.4.1", "uid": IMAGE_ID}
    assert c["orchestrator"] == "kubernetes" and c["pod_uuid"] == "0b6a1f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
    assert obj["unmapped"]["cluster"] == "prod-eu"
    assert obj["unmapped"]["pod"]["labels"] == {"app": "checkout", "tier": "backend"}
    schema = ocsf_json_schema.OcsfJsonSchemaEmbedded(ocsf_json_schema.get_ocsf_schema(version=version))
    v = jsonschema.Draft202012Validator(schema.get_class_schema("process_activity", profiles=["container"]))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(obj)]
    assert not errors, errors


def test_native_carries_everything():
    import json

    d = json.loads(encode_json(_event()))
    assert d["node"]["cluster"] == "prod-eu"
    assert d["process"]["pod"]["workload_kind"] == "Deployment"
    assert d["process"]["pod"]["container"]["image_id"] == IMAGE_ID
    assert d["process"]["pod"]["annotations"] == {"team": "payments"}


def test_opentelemetry_k8s_attributes():
    """The OTLP exporter's mapping (exporters/formats/otel.py) carries what the API server added: the
    workload under its semantic-convention name attribute (by workload_kind), annotations, the image
    digest, and the cluster on the node's Resource."""
    a = otel.attributes(_event())
    want = {"k8s.namespace.name": "shop", "k8s.pod.name": "checkout-6b7c9d8f4d-h2x9z",
            "k8s.pod.uid": "0b6a1f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "k8s.pod.label.app": "checkout",
            "k8s.pod.label.tier": "backend", "k8s.pod.annotation.team": "payments",
            "k8s.deployment.name": "checkout", "k8s.container.name": "app",
            "container.image.name": "registry.example.com/shop/checkout", "container.image.tags": ["2.4.1"],
            "container.image.repo_digests": [IMAGE_ID], "container.id": "ab" * 32,
            "container.runtime.name": "containerd", "siemhub.k8s.workload": "checkout",
            "siemhub.k8s.workload_kind": "Deployment"}
    assert {k: a[k] for k in want if k in a} == want
    assert otel.resource_attributes(_event().node)["k8s.cluster.name"] == "prod-eu"
    e = _event()
    e.process.pod.workload_kind, e.process.pod.workload = "CronJob", "backup"
    b = otel.attributes(e)
    assert b["k8s.cronjob.name"] == "backup" and "k8s.deployment.name" not in b
    e.process.pod.workload_kind = "MyController"  # no semantic-convention attribute: siemhub.* only
    c = otel.attributes(e)
    assert c["siemhub.k8s.workload_kind"] == "MyController" and not any(k.endswith(".name") and k.startswith("k8s.")
                                                                         and k.split(".")[1] in ("deployment", "cronjob")
                                                                         for k in c)
