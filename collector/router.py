"""The router: routes match events and name the exporters that receive them.

A route matches on event type, minimum severity, binary and namespace glob patterns and tags; an
empty match takes everything. An event goes to every exporter of every matching route, at most once
per exporter; a route marked `final` stops the search. Events that match no route are counted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.core.event import SEVERITY_RANK, Event
from siemhub.collector.metrics import Metrics


def _globs(patterns: Sequence[str] | None) -> re.Pattern | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(slots=True)
class Match:
    types: frozenset[str] | None = None
    min_severity: int = 0
    binaries: re.Pattern | None = None
    namespaces: re.Pattern | None = None
    tags: frozenset[str] | None = None

    @classmethod
    def build(cls, types=None, min_severity="info", binaries=None, namespaces=None, tags=None) -> Match:
        return cls(frozenset(types) if types else None, SEVERITY_RANK[min_severity], _globs(binaries),
                   _globs(namespaces), frozenset(tags) if tags else None)

    def __call__(self, e: Event) -> bool:
        if self.types is not None and e.type not in self.types:
            return False
        if self.min_severity and SEVERITY_RANK.get(e.severity, 0) < self.min_severity:
            return False
        if self.binaries is not None:
            if e.process is None or not self.binaries.fullmatch(e.process.binary):
                return False
        if self.namespaces is not None:
            pod = e.process.pod if e.process is not None else None
            if pod is None or not self.namespaces.fullmatch(pod.namespace):
                return False
        if self.tags is not None and self.tags.isdisjoint(e.tags):
            return False
        return True


@dataclass(slots=True)
class Route:
    name: str
    match: Match
    to: tuple[str, ...]
    final: bool = False


class Router:
    def __init__(self, routes: Iterable[Route], outputs: dict[str, ExporterRunner], metrics: Metrics) -> None:
        self.routes = list(routes)
        self.outputs = outputs
        self._unrouted = metrics.events_unrouted
        for r in self.routes:
            for name in r.to:
                if name not in outputs:
                    raise ValueError(f"route {r.name!r} names unknown exporter {name!r}")
        # Routes that match everything need no per-event test: the common default configuration.
        self._match_all = all(r.match == Match() for r in self.routes)

    def targets(self, e: Event) -> list[str]:
        seen: list[str] = []
        for r in self.routes:
            if r.match(e):
                for name in r.to:
                    if name not in seen:
                        seen.append(name)
                if r.final:
                    break
        return seen

    def route(self, events: Sequence[Event], wait: bool = False) -> dict[str, int]:
        """Queue each event for its exporters. Returns, per exporter that got events, the sequence
        number of the last one (compare with ExporterRunner.finished to know they were delivered)."""
        marks: dict[str, int] = {}
        if not events:
            return marks
        if self._match_all:
            names = self.targets(events[0])
            for name in names:
                marks[name] = self.outputs[name].put_many(list(events), wait)
            if not names:
                self._unrouted.inc(len(events))
            return marks
        per: dict[str, list[Event]] = {}
        unrouted = 0
        for e in events:
            names = self.targets(e)
            if not names:
                unrouted += 1
            for name in names:
                per.setdefault(name, []).append(e)
        for name, batch in per.items():
            marks[name] = self.outputs[name].put_many(batch, wait)
        if unrouted:
            self._unrouted.inc(unrouted)
        return marks
