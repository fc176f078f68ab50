"""Kubernetes label selectors and workload selectors for policies (`pod_labels`, `workloads`).

`pod_labels` takes either a plain map (every label must be present with that value, as before) or a
Kubernetes LabelSelector, with the API's own semantics
(https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#resources-that-support-set-based-requirements):

    pod_labels:
      matchLabels: {app: web}
      matchExpressions:
        - {key: tier, operator: In, values: [front, edge]}
        - {key: canary, operator: DoesNotExist}

All requirements are ANDed. `In` / `NotIn` need at least one value, `Exists` / `DoesNotExist` none;
`NotIn` and `DoesNotExist` also match a pod without the label. An empty selector ({}) matches every pod
(as in Kubernetes); a process not in a pod never matches.

`workloads` selects by the owning workload that the API enrichment resolved (`process.pod.workload_kind`
and `process.pod.workload`): `{kind: Deployment, name: checkout}`; `name` may be a glob, and either key
may be left out (any kind, any name).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LabelRequirement(_Strict):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []

    @model_validator(mode="after")
    def _values(self):
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value (key {self.key!r})")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values (key {self.key!r})")
        return self


class LabelSelector(_Strict):
    match_labels: dict[str, str] = Field({}, alias="matchLabels")
    match_expressions: list[LabelRequirement] = Field([], alias="matchExpressions")


class WorkloadSelector(_Strict):
    kind: str | None = Field(None, description="Deployment, StatefulSet, DaemonSet, Job, CronJob, ...")
    name: str | None = Field(None, description="the workload's name (a glob)")

    @model_validator(mode="after")
    def _something(self):
        if self.kind is None and self.name is None:
            raise ValueError("give kind, name or both")
        return self


def label_predicate(sel: dict[str, str] | LabelSelector) -> Callable[[dict[str, str]], bool]:
    """A predicate over a pod's labels."""
    if isinstance(sel, dict):
        sel = LabelSelector(matchLabels=sel)
    want = tuple(sel.match_labels.items())
    reqs = []
    for r in sel.match_expressions:
        vals = frozenset(r.values)
        k = r.key
        if r.operator == "In":
            reqs.append(lambda labels, k=k, vals=vals: labels.get(k) in vals)
        elif r.operator == "NotIn":
            reqs.append(lambda labels, k=k, vals=vals: labels.get(k) not in vals)
        elif r.operator == "Exists":
            reqs.append(lambda labels, k=k: k in labels)
        else:
            reqs.append(lambda labels, k=k: k not in labels)

    def match(labels: dict[str, str]) -> bool:
        for k, v in want:
            if labels.get(k) != v:
                return False
        for r in reqs:
            if not r(labels):
                return False
        return True
    return match


def workload_predicate(sels: list[WorkloadSelector]) -> Callable[[str | None, str | None], bool]:
    """A predicate over (workload kind, workload name): true when any selector matches."""
    compiled = []
    for s in sels:
        rx = re.compile(fnmatch.translate(s.name)).match if s.name is not None else None
        compiled.append((s.kind.lower() if s.kind else None, rx))

    def match(kind: str | None, name: str | None) -> bool:
        if kind is None and name is None:
            return False
        for k, rx in compiled:
            if k is not None and (kind or "").lower() != k:
                continue
            if rx is not None and (name is None or rx(name) is None):
                continue
            return True
        return False
    return match
