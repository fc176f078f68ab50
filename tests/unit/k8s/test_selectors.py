"""Policies scoped by Kubernetes label selectors (matchLabels / matchExpressions) and by workloads."""

from __future__ import annotations

import pytest

from siemhub.collector import policy
from siemhub.collector.core.event import Container, Pod, PodContainer
from siemhub.collector.k8s.selectors import LabelSelector, label_predicate
from tests.unit.test_policy import actions, engine_from, ev, proc


def _in_pod(labels=None, kind=None, workload=None, ns="shop"):
    p = proc(container=Container(id="ab" * 32, runtime="containerd"),
             pod=Pod(namespace=ns, name="p", labels=labels or {}, workload=workload, workload_kind=kind,
                     container=PodContainer(name="c")))
    return ev(process=p)


@pytest.mark.parametrize("selector,labels,want", [
    ({"matchLabels": {"app": "web"}}, {"app": "web", "tier": "x"}, True),
    ({"matchLabels": {"app": "web"}}, {"app": "db"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]}, {"tier": "edge"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}, {}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, {"tier": "back"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, {}, True),  # as in Kubernetes
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, {"tier": "front"}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {"canary": ""}, True),
    ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, {}, True),
    ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, {"canary": "1"}, False),
    ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]},
     {"app": "web", "tier": "b"}, False),  # ANDed
    ({}, {"anything": "x"}, True),  # the empty selector matches every pod
])
def test_label_selector_semantics(selector, labels, want):
    assert label_predicate(LabelSelector.model_validate(selector))(labels) is want


def test_policy_with_a_label_selector_acts_on_that_pods_processes_only(tmp_path):
    eng = engine_from(tmp_path, """\
        name: web-only
        description: d
        rules:
          - name: r
            match:
              types: [process_exec]
              pod_labels:
                matchLabels: {app: web}
                matchExpressions:
                  - {key: tier, operator: In, values: [front, edge]}
                  - {key: canary, operator: DoesNotExist}
            action: notify
        """)
    assert actions(eng, _in_pod({"app": "web", "tier": "front"})) == [("web-only", "r")]
    assert actions(eng, _in_pod({"app": "web", "tier": "back"})) == []
    assert actions(eng, _in_pod({"app": "web", "tier": "edge", "canary": "true"})) == []
    assert actions(eng, _in_pod({"app": "db", "tier": "front"})) == []
    assert actions(eng, ev(process=proc())) == []  # on the host: no pod, never matches


def test_plain_map_still_means_all_these_labels(tmp_path):
    eng = engine_from(tmp_path, """\
        name: m
        description: d
        rules:
          - {name: r, match: {types: [process_exec], pod_labels: {app: web, tier: front}}, action: notify}
        """)
    assert actions(eng, _in_pod({"app": "web", "tier": "front", "x": "y"})) == [("m", "r")]
    assert actions(eng, _in_pod({"app": "web"})) == []


def test_workloads_select_by_kind_and_name(tmp_path):
    eng = engine_from(tmp_path, """\
        name: w
        description: d
        rules:
          - name: r
            match:
              types: [process_exec]
              workloads: [{kind: Deployment, name: "checkout*"}, {kind: CronJob}]
            action: notify
        """)
    assert actions(eng, _in_pod(kind="Deployment", workload="checkout-v2")) == [("w", "r")]
    assert actions(eng, _in_pod(kind="CronJob", workload="backup")) == [("w", "r")]
    assert actions(eng, _in_pod(kind="StatefulSet", workload="checkout")) == []
    assert actions(eng, _in_pod(kind="Deployment", workload="cart")) == []
    assert actions(eng, _in_pod()) == []  # a pod whose workload is unknown (no API access)


@pytest.mark.parametrize("match,problem", [
    ("pod_labels: {matchExpressions: [{key: a, operator: In}]}", "needs at least one value"),
    ("pod_labels: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}", "takes no values"),
    ("pod_labels: {matchExpressions: [{key: a, operator: Equals, values: [x]}]}", "operator"),
    ("workloads: [{}]", "give kind, name or both"),
])
def test_bad_selectors_are_clear_errors(tmp_path, match, problem):
    (tmp_path / "bad.yaml").write_text(f"name: b\ndescription: d\nrules:\n  - name: r\n    match: {{{match}}}\n"
                                       "    action: notify\n")
    with pytest.raises(policy.PolicyError) as err:
        policy.load_files([str(tmp_path)])
    assert problem in str(err.value) and "bad.yaml" in str(err.value)
