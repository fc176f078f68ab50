"""Tests for siemhub.collector.redact: planted secrets never reach an exporter, ordinary command lines
are left alone, the flag `redacted` is set, config rules work, and the pipeline applies it."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from siemhub.collector import config
from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node, Process
from siemhub.collector.redact import MASK, RedactRule, Redactor

R = Redactor()


def red(*args: str, tool: str = "") -> list[str]:
    out = R.args(list(args), tool)
    return list(args) if out is None else out


@pytest.mark.parametrize("args, want", [
    (["app", "--password=hunter2"], ["app", "--password=***"]),
    (["app", "--db-password=hunter2", "-v"], ["app", "--db-password=***", "-v"]),
    (["app", "--password", "hunter2", "next"], ["app", "--password", "***", "next"]),
    (["app", "--token", "abc123def"], ["app", "--token", "***"]),
    (["app", "--api-key=k-123"], ["app", "--api-key=***"]),
    (["env", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "cmd"], ["env", "AWS_SECRET_ACCESS_KEY=***", "cmd"]),
    (["env", "GITHUB_TOKEN=abc", "DB_PASSWORD=x"], ["env", "GITHUB_TOKEN=***", "DB_PASSWORD=***"]),
    (["curl", "-H", "Authorization: Bearer eyJhbGciOi.payload.sig"], ["curl", "-H", "Authorization: Bearer ***"]),
    (["curl", "-H", "authorization: Basic dXNlcjpwYXNz"], ["curl", "-H", "authorization: Basic ***"]),
    (["x", "Bearer abcdefghijkl"], ["x", "Bearer ***"]),
    (["git", "push", "https://bob:s3cret@github.com/o/r.git"], ["git", "push", "https://bob:***@github.com/o/r.git"]),
    (["x", "ghp_" + "a" * 36], ["x", "***"]),
    (["x", "--header=xoxb-1234567890-abcdef"], ["x", "--header=***"]),
    (["x", "AKIAIOSFODNN7EXAMPLE"], ["x", "***"]),
    (["sh", "-c", "mysql --password=pw1 -e 'select 1' && TOKEN=t2 run"],
     ["sh", "-c", "mysql --password=*** -e 'select 1' && TOKEN=*** run"]),
    (["curl", "-d", '{"user": "a", "password": "hunter2"}'], ["curl", "-d", '{"user": "a", "password": "***"}']),
])
def test_builtin_rules(args, want):
    assert red(*args) == want


@pytest.mark.parametrize("args, tool, want", [
    (["mysql", "-u", "root", "-phunter2", "db"], "mysql", ["mysql", "-u", "root", "-p***", "db"]),
    (["mysql", "-u", "root", "-p", "db"], "mysql", ["mysql", "-u", "root", "-p", "db"]),  # prompts: db is not a password
    (["sshpass", "-p", "hunter2", "ssh", "h"], "sshpass", ["sshpass", "-p", "***", "ssh", "h"]),
    (["redis-cli", "-a", "hunter2", "ping"], "redis-cli", ["redis-cli", "-a", "***", "ping"]),
    (["curl", "-u", "bob:hunter2", "http://x"], "curl", ["curl", "-u", "bob:***", "http://x"]),
    (["curl", "-s", "--user", "bob:hunter2", "http://x"], "curl", ["curl", "-s", "--user", "bob:***", "http://x"]),
    (["http", "-a", "bob:hunter2", "GET", "x"], "http", ["http", "-a", "bob:***", "GET", "x"]),
    (["redis-cli", "-ahunter2", "ping"], "redis-cli", ["redis-cli", "-a***", "ping"]),
    (["tar", "-p", "-xf", "a.tar"], "tar", ["tar", "-p", "-xf", "a.tar"]),  # -p means something else here
])
def test_tool_specific_options(args, tool, want):
    assert red(*args, tool=tool) == want


@pytest.mark.parametrize("args", [
    ["ls", "-la", "/tmp"],
    ["compass", "compass=3", "--passthrough=1", "--token-file=/etc/tok"],
    ["python3", "-m", "pytest", "-k", "keyboard"],
    ["ssh", "-i", "/root/.ssh/id_ed25519", "host"],
])
def test_ordinary_args_are_untouched(args):
    assert R.args(list(args), args[0]) is None


def test_custom_rules_with_and_without_a_group():
    r = Redactor([RedactRule(name="acme", pattern=r"acme_[0-9a-f]{8}"),
                  RedactRule(name="pin", pattern=r"--pin\s*(?P<secret>\d+)")])
    assert r.args(["x", "acme_deadbeef", "--pin 1234"]) == ["x", "***", "--pin ***"]


def proc(args, flags=()):
    return Process(exec_id="x", pid=1, binary="/usr/bin/" + args[0], args=list(args), flags=list(flags))


def event(args, parent_args=("bash",)):
    return Event(id="e1", time="2024-05-01T12:00:00.000000000Z", type="process_exec", schema_version=SCHEMA_VERSION,
                 severity="info", node=Node(name="n"), process=proc(args), parent=proc(parent_args, ["procfs"]))


def test_events_get_a_copy_and_the_flag():
    e = event(["app", "--password=x"], ["sh", "-c", "app --password=x"])
    original_parent = e.parent
    assert R.apply([e]) == 1
    assert e.process.args == ["app", "--password=***"] and e.process.flags == ["redacted"]
    assert e.parent.args == ["sh", "-c", "app --password=***"] and e.parent.flags == ["procfs", "redacted"]
    assert original_parent.args == ["sh", "-c", "app --password=x"]  # the cached object is not mutated
    assert R.apply([e]) == 0  # idempotent
    plain = event(["ls"])
    assert R.apply([plain]) == 0 and plain.process.flags == []


def test_pipeline_redacts_before_every_exporter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from siemhub.collector.agent import Pipeline

    cfg = config.parse(f"""
exporters:
  native: {{type: file, path: "{tmp_path}/n.jsonl", fsync: never}}
  other: {{type: file, path: "{tmp_path}/o.jsonl", fsync: never}}
routes: [{{name: all, to: [native, other]}}]
redact:
  rules: [{{name: acme, pattern: "acme_[0-9]+"}}]
metrics: {{enabled: false}}
""")
    pipe = Pipeline(cfg)
    pipe.start()
    secrets = ["hunter2", "s3cret", "acme_42", "ghp_" + "z" * 36]
    pipe.emit([event(["app", "--password", "hunter2", "https://u:s3cret@h/", "acme_42", "ghp_" + "z" * 36])])
    pipe.stop(2)
    for name in ("n.jsonl", "o.jsonl"):
        text = (tmp_path / name).read_text()
        for s in secrets:
            assert s not in text
        assert json.loads(text)["process"]["flags"] == ["redacted"]
    assert pipe.metrics.value("siemhub_redacted_events_total") == 1


def test_redaction_can_be_turned_off(tmp_path):
    cfg = config.parse(f"""
exporters: {{n: {{type: file, path: "{tmp_path}/n.jsonl"}}}}
routes: [{{name: all, to: [n]}}]
redact: {{enabled: false}}
""")
    from siemhub.collector.agent import Pipeline

    assert Pipeline(cfg).redactor is None


def test_bad_rule_is_a_config_error():
    with pytest.raises(config.ConfigError) as err:
        config.parse("exporters: {n: {type: stdout}}\nroutes: [{name: a, to: [n]}]\n"
                     "redact:\n  rules: [{name: x, pattern: '(unclosed'}]\n", "a.yaml")
    assert err.value.problems[0].startswith("a.yaml:4: redact.rules[0].pattern: Value error, not a valid regex")


def test_clean_command_lines_are_checked_once_per_image_and_never_copied(monkeypatch):
    """The fast path (its cost is measured in bench/user_path.py, stage `redact`): an image without
    secrets is checked once, then served from the per-image cache; its events keep the very objects."""
    plain = [event(["/usr/bin/gcc", "-O2", "-c", "main.c", "-o", "main.o"], ["make", "-j4"]) for _ in range(50)]
    shared = plain[0].process
    for e in plain:
        e.process = shared  # one image, many events (exec, exit, children)
    r = Redactor()
    calls = []
    real = r.args
    monkeypatch.setattr(r, "args", lambda args, tool="": calls.append(tool) or real(args, tool))
    assert r.apply(plain) == 0
    assert all(e.process is shared for e in plain)
    assert calls.count("gcc") == 1  # the shared image: once, not per event


def test_planted_secrets_are_gone_from_every_output_format(tmp_path, monkeypatch):
    """Redaction happens once, before routing: whatever format an exporter writes, the secrets of the
    command line (process and parent) never reach it."""
    monkeypatch.chdir(tmp_path)
    from siemhub.collector.agent import Pipeline
    from siemhub.exporters.formats import FORMATS

    exporters = "\n".join(f'  {name}: {{type: file, path: "{tmp_path}/{name}.jsonl", format: {name}, fsync: never}}'
                          for name in FORMATS)
    cfg = config.parse(f"""
exporters:
{exporters}
routes: [{{name: all, to: [{", ".join(FORMATS)}]}}]
metrics: {{enabled: false}}
""")
    pipe = Pipeline(cfg)
    pipe.start()
    secrets = ["hunter2", "s3cret", "AKIAIOSFODNN7EXAMPLE/wJalrXUtnFEMI", "ghp_" + "q" * 36]
    e = event(["app", "--password=hunter2", "https://u:s3cret@h/", "AWS_SECRET_ACCESS_KEY=" + secrets[2],
               "Authorization: Bearer " + secrets[3]])
    e.parent = e.process  # the parent's command line is redacted too
    pipe.emit([e])
    pipe.stop(2)
    assert set(FORMATS) >= {"native", "ecs", "ocsf", "tetragon"}
    for name in FORMATS:
        text = (tmp_path / f"{name}.jsonl").read_text()
        assert text.strip(), name
        for s in secrets:
            assert s not in text, f"{s!r} reached the {name} format"


def test_same_command_line_in_new_images_is_checked_once_with_the_right_tool(monkeypatch):
    """Every exec is a new image, but hosts repeat command lines: the verdict is kept per (tool, args).
    The tool is part of the key: the same arguments mean a password for mysql and not for ls."""
    r = Redactor()
    calls = []
    real = r.args
    monkeypatch.setattr(r, "args", lambda args, tool="": calls.append(tool) or real(args, tool))
    secret = [Process(exec_id=f"m{i}", pid=i, binary="/usr/bin/mysql", args=["mysql", "-uroot", "-phunter2"])
              for i in range(20)]
    events = [Event(id=p.exec_id, time="t", type="process_exec", schema_version=SCHEMA_VERSION, severity="info",
                    node=Node(name="n"), process=p) for p in secret]
    assert r.apply(events) == 20
    assert all(e.process.args == ["mysql", "-uroot", f"-p{MASK}"] and "redacted" in e.process.flags for e in events)
    assert all(p.args == ["mysql", "-uroot", "-phunter2"] for p in secret)  # cached images untouched
    assert calls == ["mysql"]
    other = Event(id="x", time="t", type="process_exec", schema_version=SCHEMA_VERSION, severity="info",
                  node=Node(name="n"), process=Process(exec_id="l", pid=1, binary="/bin/ls",
                                                       args=["mysql", "-uroot", "-phunter2"]))
    assert r.apply([other]) == 0 and other.process.args == ["mysql", "-uroot", "-phunter2"]
    assert calls == ["mysql", "ls"]


def test_long_command_lines_are_checked_but_not_kept():
    """The verdict memo holds short command lines only: a host running many distinct 10,000-argument
    execs must not grow it by megabytes each."""
    r = Redactor()
    args = ["tool", *[f"file{i}.c" for i in range(100)], "--password=hunter2"]
    e = Event(id="x", time="t", type="process_exec", schema_version=SCHEMA_VERSION, severity="info",
              node=Node(name="n"), process=Process(exec_id="l", pid=1, binary="/usr/bin/tool", args=args))
    assert r.apply([e]) == 1 and e.process.args[-1] == f"--password={MASK}"
    assert r._verdicts == {}
    short = Event(id="y", time="t", type="process_exec", schema_version=SCHEMA_VERSION, severity="info",
                  node=Node(name="n"), process=Process(exec_id="s", pid=2, binary="/bin/ls", args=["ls", "-l"]))
    r.apply([short])
    assert list(r._verdicts) == [("ls", "ls", "-l")]


# --- the cheap guards in Redactor.args change nothing ----------------------------------------------

_FRAGMENTS = ["password", "PASSWORD", "token", "Token", "secret", "api_key", "auth", "Authorization", "bearer",
              "Bearer ", "=", ":", ": ", "'", '"', "://", "@", "u:pw@", "https://", "ghp_", "x" * 20, "AKIA",
              "ABCDEFGHIJKLMNOP", "sk-", "eyJ", "eyJabcdefgh.", "abcdefghij", ".", "-", "--", "-p", "-u", "--user",
              "-a", "bob:hunter2", "hunter2", "db", "xoxb-", "glpat-", " ", "\n", "&", ";", "***", "pwd", "pass"]


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@example("curl", ["-u", "bob:hunter2"])  # tool options, with no secret word anywhere
@example("curl", ["-s", "--user", "a:b", "https://h"])
@example("http", ["-a", "u:p", "GET"])
@example("mysql", ["-uroot", "-phunter2", "db"])
@example("redis-cli", ["-ahunter2"])
@example("sshpass", ["-p", "hunter2", "ssh"])
@example("app", ["https://u:pw@h/x"])  # one rule each
@example("app", ["Authorization: Basic abc"])
@example("app", ["x", "Bearer abcdefghij"])
@example("app", ["ghp_" + "x" * 20, "AKIAABCDEFGHIJKLMNOP", "sk-" + "x" * 20, "eyJabcdefgh.abcdefghij.abcdefghij"])
@example("app", ["--api_key", "v", "token=t", "--password:p"])
@given(st.sampled_from(["app", "curl", "mysql", "sshpass", "redis-cli", "http", "wget"]),
       st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.lists(st.sampled_from(_FRAGMENTS), max_size=6).map("".join)),
                min_size=1, max_size=6))
def test_guards_give_what_running_every_rule_gives(tool, args):
    r = Redactor()
    assert r.args([tool, *args], tool) == r.args([tool, *args], tool, guards=False)
