"""`siemhub policies import-tetragon`: TracingPolicies (tests/fixtures/tetragon/, in Tetragon's format) to
siemhub policies that load and match the events Tetragon's policy would have reported, and a note for
everything that could not carry over."""

from __future__ import annotations

import itertools
from pathlib import Path

import yaml
from click.testing import CliRunner

from siemhub.collector import policy, tetragon_import
from siemhub.collector.cli import main
from siemhub.collector.core.event import EVENT_BASE, Event, File, Network, Node, Pod, Container, Privilege, Process

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tetragon"
NODE = Node(name="n")
_n = itertools.count()


def convert(name):
    return {c.name: c for c in tetragon_import.convert_text((FIX / name).read_text(), name)}


def engine(tmp_path, c):
    (tmp_path / f"{c.name}.yaml").write_text(c.yaml())
    return policy.PolicyEngine(policy.load_files([str(tmp_path / f"{c.name}.yaml")]),
                               block_support=lambda: (False, "test"))


def proc(binary="/usr/bin/cat", ppid=1, **kw):
    return Process(exec_id=f"x{next(_n)}", pid=100, ppid=ppid, uid=0, binary=binary, args=[binary], **kw)


def fired(eng, e):
    return [(x.policy.policy, x.policy.rule, x.policy.action) for x in eng.apply([e]) if x.type == "policy_action"]


def fev(path, op="open", flags=("O_RDONLY",), binary="/usr/bin/cat"):
    return Event(id=f"e{next(_n)}", time="2026-01-01T00:00:00Z", type="file_access", node=NODE, process=proc(binary),
                 file=File(operation=op, path=path, flags=list(flags)), **EVENT_BASE)


def test_fim_policy_converts_and_matches_what_tetragon_would_report(tmp_path):
    c = convert("fim.yaml")["watch-app-secrets"]
    rules = c.policy["rules"]
    assert c.policy["description"] == "reads and writes of the app's secrets"
    assert rules[0]["match"] == {"types": ["file_access"], "paths": ["/srv/app/secrets/", "/srv/app/token",
                                                                     "/srv/app/token/"], "operations": ["open_read"]}
    assert rules[0]["except"] == {"binaries": ["/usr/sbin/app-server"]}
    assert rules[1]["match"]["paths"] == ["*.pem"] and rules[1]["rate_limit"] == {"events": 1, "per_seconds": 120}
    assert rules[2]["match"]["operations"] == ["truncate"]
    eng = engine(tmp_path, c)
    assert fired(eng, fev("/srv/app/secrets/db")) == [("watch-app-secrets", "security_file_permission-0", "post")]
    assert fired(eng, fev("/srv/app/secrets/db", binary="/usr/sbin/app-server")) == []  # NotIn binary
    assert fired(eng, fev("/srv/app/secrets/db", flags=["O_WRONLY"])) == []  # MAY_READ only
    assert fired(eng, fev("/etc/tls/x.pem", flags=["O_WRONLY"])) == [
        ("watch-app-secrets", "security_file_permission-1", "post")]
    assert fired(eng, fev("/srv/app/token", op="truncate", flags=[])) == [
        ("watch-app-secrets", "security_path_truncate-0", "post")]
    notes = "\n".join(c.notes)
    assert "security_mmap_file: not carried over: siemhub's file sensor does not see mmap" in notes
    assert "matchPIDs: not carried over: process ids are per boot" in notes
    assert "Postfix carried as the globs ['*.pem']" in notes


def test_network_policies_sigkill_carried_where_the_kernel_can_enforce_it(tmp_path):
    got = convert("egress.yaml")
    c = got["no-metadata-service"]
    r0, r1 = c.policy["rules"]
    assert r0["match"] == {"types": ["network_connect"], "cidrs": ["169.254.169.254/32"], "ports": [80],
                           "binaries": ["/usr/bin/curl", "/usr/bin/wget"]}
    assert r0["action"] == "sigkill"  # the enforce sensor kills it, and refuses the connect
    assert r1["except"] == {"cidrs": ["10.0.0.0/8"]} and r1["action"] == "post"
    notes = "\n".join(c.notes)
    assert "rule tcp_connect-1: action sigkill carried over as post (detection only): sigkill is enforced in the " \
           "kernel without except" in notes
    assert "SPort not carried over" in notes and "selectors[2]: selector not carried over" in notes
    assert "tcp_sendmsg: not carried over" in notes
    c.policy["rules"][0]["action"] = "post"  # match it in user space below
    eng = engine(tmp_path, c)
    ev = Event(id="n1", time="2026-01-01T00:00:00Z", type="network_connect", node=NODE, process=proc("/usr/bin/curl"),
               network=Network(protocol="tcp", family="ipv4", direction="outbound", destination_ip="169.254.169.254",
                               destination_port=80), **EVENT_BASE)
    assert ("no-metadata-service", "tcp_connect-0", "post") in fired(eng, ev)
    ns = got["shop-outbound"].policy["rules"][0]
    assert ns["match"] == {"types": ["network_connect"], "container": True, "namespaces": ["shop"],
                           "pod_labels": {"app": "checkout"}}
    assert ns["except"] == {"cidrs": ["10.0.0.0/8"]}
    shop = proc("/usr/bin/curl", container=Container(id="c" * 64),
                pod=Pod(namespace="shop", name="checkout-1", labels={"app": "checkout"}))
    eng2 = engine(tmp_path, got["shop-outbound"])
    out = Event(id="n2", time="2026-01-01T00:00:00Z", type="network_connect", node=NODE, process=shop,
                network=Network(protocol="tcp", family="ipv4", direction="outbound", destination_ip="8.8.8.8",
                                destination_port=443), **EVENT_BASE)
    assert fired(eng2, out) == [("shop-outbound", "tcp_connect-0", "post")]
    out.network.destination_ip = "10.1.2.3"
    assert fired(eng2, out) == []


def test_privilege_policy(tmp_path):
    c = convert("privileges.yaml")["root-raise"]
    by_name = {r["name"]: r for r in c.policy["rules"]}
    assert by_name["setuid-0"]["match"] == {"types": ["privilege_change"], "operations": ["setuid"], "new_uids": [0]}
    assert by_name["setuid-0"]["rate_limit"] == {"events": 1, "per_seconds": 60}
    assert by_name["ptrace-0"]["match"] == {"types": ["privilege_change"], "operations": ["ptrace"]}
    assert by_name["security_file_open-0"]["match"] == {"types": ["file_access"], "operations": ["open"],
                                                        "paths": ["/srv/app/token"], "binaries": ["/usr/bin/cat"]}
    assert "setgid-0" not in by_name
    notes = "\n".join(c.notes)
    assert "Equal on argument 0 (int) of setgid not carried over" in notes
    assert "create_user_ns: not carried over: no siemhub sensor observes this kernel function" in notes
    eng = engine(tmp_path, c)
    su = Event(id="p1", time="2026-01-01T00:00:00Z", type="privilege_change", node=NODE, process=proc("/usr/bin/su"),
               privilege=Privilege(operation="setuid", old_uid=1000, new_uid=0), **EVENT_BASE)
    assert fired(eng, su) == [("root-raise", "setuid-0", "post")]
    su.privilege.new_uid = 1001
    assert fired(eng, su) == []


def test_cli_writes_policies_and_prints_what_did_not_carry_over(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["policies", "import-tetragon", str(FIX / "fim.yaml"), str(FIX / "egress.yaml"),
                                  "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["no-metadata-service.yaml", "shop-outbound.yaml",
                                                     "watch-app-secrets.yaml"]
    assert "security_mmap_file: not carried over" in r.output  # stderr is mixed in by CliRunner
    for p in out.iterdir():  # every written file loads as the agent would load it
        loaded = policy.load_files([str(p)])
        assert loaded[0].policy.name == yaml.safe_load(p.read_text())["name"]
    r = CliRunner().invoke(main, ["policies", "import-tetragon", str(FIX / "README.md")])
    assert r.exit_code == 1
