"""Tests for siemhub.collector.router: matching, `final`, at-most-once per exporter, unrouted count."""
from __future__ import annotations

import itertools

import pytest

from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node, Pod, Process
from siemhub.collector.metrics import Metrics
from siemhub.collector.router import Match, Route, Router

_ids = itertools.count(1)


def ev(type_="process_exec", severity="info", binary=None, namespace=None, tags=(), process=True) -> Event:
    proc = None
    if process:
        pod = Pod(namespace=namespace, name="web-0") if namespace is not None else None
        proc = Process(exec_id=f"x{next(_ids)}", pid=100, binary=binary or "/usr/bin/true", pod=pod)
    return Event(id=f"e{next(_ids)}", time="2024-05-01T12:00:00.000000000Z", type=type_, node=Node(name="n1"),
                 process=proc, severity=severity, schema_version=SCHEMA_VERSION, tags=list(tags))


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Event], bool]] = []

    def put_many(self, events, wait=False) -> None:
        self.calls.append((list(events), wait))

    @property
    def ids(self) -> list[str]:
        return [e.id for batch, _ in self.calls for e in batch]


def make_router(*routes: Route, names=("a", "b", "c")):
    outputs = {n: FakeRunner() for n in names}
    metrics = Metrics()
    return Router(routes, outputs, metrics), outputs, metrics


def unrouted(metrics: Metrics) -> float:
    return metrics.value("siemhub_events_unrouted_total")


# --- Match ---------------------------------------------------------------------------------------


def test_empty_match_takes_everything():
    m = Match.build()
    assert m == Match()
    assert m(ev()) and m(ev("agent_status", process=False)) and m(ev(severity="critical", tags=["x"]))


def test_match_types():
    m = Match.build(types=["process_exec", "process_exit"])
    assert m(ev("process_exec")) and m(ev("process_exit"))
    assert not m(ev("network_connect")) and not m(ev("agent_status", process=False))


@pytest.mark.parametrize(("min_severity", "passing"), [
    ("info", {"info", "low", "medium", "high", "critical"}),
    ("medium", {"medium", "high", "critical"}),
    ("high", {"high", "critical"}),
    ("critical", {"critical"}),
])
def test_match_min_severity(min_severity, passing):
    m = Match.build(min_severity=min_severity)
    got = {s for s in ("info", "low", "medium", "high", "critical") if m(ev(severity=s))}
    assert got == passing


def test_match_binaries_globs():
    m = Match.build(binaries=["/usr/bin/*", "*/curl", "/bin/s?"])
    assert m(ev(binary="/usr/bin/ls"))
    assert m(ev(binary="/opt/tools/curl"))
    assert m(ev(binary="/bin/sh"))
    assert not m(ev(binary="/bin/bash"))  # ? is one character, and the whole path must match
    assert not m(ev(binary="/usr/local/bin/ls"))
    assert not m(ev(binary="/opt/tools/curl-old"))
    assert not m(ev("agent_status", process=False))  # no process: no binary to match


def test_match_namespaces_globs():
    m = Match.build(namespaces=["kube-*", "payments"])
    assert m(ev(namespace="kube-system")) and m(ev(namespace="payments"))
    assert not m(ev(namespace="payments-dev")) and not m(ev(namespace="default"))
    assert not m(ev())  # process outside any pod
    assert not m(ev("agent_status", process=False))


def test_match_tags_any_of():
    m = Match.build(tags=["suspicious", "shell"])
    assert m(ev(tags=["shell"])) and m(ev(tags=["x", "suspicious"]))
    assert not m(ev(tags=["x"])) and not m(ev())


def test_match_conditions_all_apply():
    m = Match.build(types=["process_exec"], min_severity="high", binaries=["*/nc"], namespaces=["prod-*"])
    hit = dict(type_="process_exec", severity="high", binary="/usr/bin/nc", namespace="prod-eu")
    assert m(ev(**hit))
    for key, bad in [("type_", "process_exit"), ("severity", "medium"), ("binary", "/usr/bin/ls"),
                     ("namespace", "dev")]:
        assert not m(ev(**{**hit, key: bad})), key


# --- Router --------------------------------------------------------------------------------------


def test_routes_send_each_event_to_the_matching_exporters():
    router, out, metrics = make_router(
        Route("execs", Match.build(types=["process_exec"]), ("a",)),
        Route("high", Match.build(min_severity="high"), ("b",)),
    )
    e1, e2, e3 = ev("process_exec"), ev("process_exit", severity="high"), ev("process_exec", severity="critical")
    router.route([e1, e2, e3])
    assert out["a"].ids == [e1.id, e3.id]
    assert out["b"].ids == [e2.id, e3.id]
    assert out["c"].calls == []
    assert len(out["a"].calls) == 1  # one put_many per exporter per route() call
    assert unrouted(metrics) == 0


def test_final_stops_the_search():
    router, out, _ = make_router(
        Route("execs", Match.build(types=["process_exec"]), ("a",), final=True),
        Route("all", Match.build(), ("b",)),
    )
    e_exec, e_exit = ev("process_exec"), ev("process_exit")
    router.route([e_exec, e_exit])
    assert out["a"].ids == [e_exec.id]
    assert out["b"].ids == [e_exit.id]


def test_final_on_match_all_routes():
    router, out, _ = make_router(Route("first", Match(), ("a",), final=True), Route("second", Match(), ("b",)))
    router.route([ev(), ev()])
    assert len(out["a"].ids) == 2 and out["b"].calls == []


def test_non_final_routes_keep_searching():
    router, out, _ = make_router(Route("first", Match(), ("a",)), Route("second", Match(), ("b",)))
    events = [ev(), ev()]
    router.route(events)
    assert out["a"].ids == out["b"].ids == [e.id for e in events]


@pytest.mark.parametrize("filtered", [False, True], ids=["match_all_routes", "filtering_routes"])
def test_at_most_once_per_exporter(filtered):
    m = Match.build(min_severity="info", tags=["t"]) if filtered else Match()
    router, out, _ = make_router(
        Route("one", m, ("a", "b")),
        Route("two", m, ("b", "a", "b")),
    )
    events = [ev(tags=["t"]) for _ in range(3)]
    router.route(events)
    ids = [e.id for e in events]
    assert out["a"].ids == ids and out["b"].ids == ids
    assert len(out["a"].calls) == len(out["b"].calls) == 1


def test_exporters_get_separate_lists():
    router, out, _ = make_router(Route("all", Match(), ("a", "b")))
    router.route([ev()])
    assert out["a"].calls[0][0] is not out["b"].calls[0][0]


def test_unrouted_events_are_counted():
    router, out, metrics = make_router(Route("execs", Match.build(types=["process_exec"]), ("a",)))
    router.route([ev("process_exec"), ev("process_exit"), ev("network_connect"), ev("process_exec")])
    assert len(out["a"].ids) == 2
    assert unrouted(metrics) == 2
    router.route([ev("process_exit")])
    assert unrouted(metrics) == 3


def test_unrouted_with_no_routes_at_all():
    router, out, metrics = make_router()
    router.route([ev(), ev(), ev()])
    assert unrouted(metrics) == 3
    assert all(r.calls == [] for r in out.values())


def test_wait_flag_is_passed_on_and_empty_input_is_a_no_op():
    router, out, metrics = make_router(Route("all", Match(), ("a",)),
                                       Route("some", Match.build(types=["process_exit"]), ("b",)))
    router.route([], wait=True)
    assert out["a"].calls == [] and unrouted(metrics) == 0
    router.route([ev("process_exit")], wait=True)
    assert out["a"].calls[0][1] is True and out["b"].calls[0][1] is True


def test_route_naming_unknown_exporter_raises():
    with pytest.raises(ValueError, match=r"route 'r2' names unknown exporter 'nope'"):
        make_router(Route("r1", Match(), ("a",)), Route("r2", Match(), ("a", "nope")))
