"""Fuzzing the event encoders and the policy loader (hypothesis).

- every output format turns random events (random text with control characters, JSON and Splunk /
  Kibana markup, huge strings, random bodies) into exactly one valid JSON line per event, the text
  surviving unchanged;
- the policy loader, fed random YAML documents and mutations of a library policy, raises PolicyError
  (file:line: field: reason) and nothing else.
Example counts stay small for the suite; SIEMHUB_FUZZ_EXAMPLES raises them (pytest -s prints the count).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siemhub.collector.core.event import (
    SCHEMA_VERSION, EVENT_TYPES, Exit, Event, File, Network, Node, PolicyAction, Privilege, Process,
)
from siemhub.collector.policy import PolicyError, library_dir, parse_policy
from siemhub.exporters.formats import FORMATS

N = int(os.environ.get("SIEMHUB_FUZZ_EXAMPLES", "0")) or None
FAST = settings(max_examples=N or 200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
tried: dict[str, int] = {}

# Lone surrogates never occur: kernel bytes are decoded as UTF-8 or escaped to \xHH (event.escape_bytes).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from([
    '{"a": 1}', '"; DROP TABLE x; --', "| eval x=1 | table *", '<script>alert(1)</script>', "\x1b[31mred",
    "${jndi:ldap://x}", "{{7*7}}", "\\x41\\", "a" * 5000])
INT = st.integers(0, 2**32)


@st.composite
def processes(draw):
    return Process(exec_id=draw(TEXT) or "e", pid=draw(INT), ppid=draw(st.none() | INT), uid=draw(st.none() | INT),
                   binary=draw(TEXT), args=draw(st.lists(TEXT, max_size=6)), cwd=draw(st.none() | TEXT),
                   flags=draw(st.lists(TEXT, max_size=3)))


@st.composite
def events(draw):
    etype = draw(st.sampled_from(EVENT_TYPES))
    body = {}
    if etype.startswith("file"):
        body["file"] = File(operation=draw(st.sampled_from(["open", "write", "rename", "unlink", "x"])),
                            path=draw(TEXT), flags=draw(st.lists(TEXT, max_size=3)), target=draw(st.none() | TEXT),
                            result=draw(st.none() | st.integers(-200, 200)))
    elif etype.startswith("network"):
        body["network"] = Network(protocol="tcp", family=draw(st.sampled_from(["ipv4", "ipv6"])),
                                  direction=draw(st.sampled_from(["inbound", "outbound", None])),
                                  source_ip=draw(st.sampled_from(["10.0.0.1", "::1", None])),
                                  destination_port=draw(st.none() | st.integers(0, 65535)),
                                  bytes_sent=draw(st.none() | INT))
    elif etype == "privilege_change":
        body["privilege"] = Privilege(operation=draw(TEXT) or "setuid", new_uid=draw(st.none() | INT),
                                      new_caps=draw(st.lists(TEXT, max_size=3)))
    elif etype == "policy_action":
        body["policy"] = PolicyAction(policy=draw(TEXT) or "p", action=draw(st.sampled_from(["post", "sigkill"])),
                                      reason=draw(st.none() | TEXT))
    elif etype == "process_exit":
        body["exit"] = Exit(code=draw(st.none() | st.integers(0, 255)), signal=draw(st.none() | TEXT))
    return Event(id=draw(TEXT) or "i", time="2024-01-02T03:04:05.000000001Z", type=etype,
                 schema_version=SCHEMA_VERSION, severity=draw(st.sampled_from(["info", "high"])),
                 node=Node(name=draw(TEXT) or "n"), process=draw(st.none() | processes()),
                 parent=draw(st.none() | processes()), tags=draw(st.lists(TEXT, max_size=3)), **body)


@FAST
@given(st.lists(events(), min_size=1, max_size=5))
def test_every_format_writes_one_valid_json_line_per_event(batch):
    tried["encoders"] = tried.get("encoders", 0) + 1
    for name, fmt in FORMATS.items():
        out = fmt.encode_lines(batch)
        lines = out.split(b"\n")
        assert lines[-1] == b"" and len(lines) == len(batch) + 1, name
        for line in lines[:-1]:
            json.loads(line)  # valid JSON, or the test fails
    native = [json.loads(x) for x in FORMATS["native"].encode_lines(batch).splitlines()]
    for e, obj in zip(batch, native):
        if e.process is not None:
            assert obj["process"].get("binary", "") == e.process.binary  # text survives unchanged


LIBRARY = sorted(Path(library_dir()).glob("*.yaml"))


@FAST
@given(st.sampled_from(LIBRARY), st.lists(st.tuples(st.integers(0, 50), TEXT | INT | st.none() | st.lists(TEXT)),
                                          min_size=1, max_size=4))
def test_policy_loader_raises_only_policy_errors(path, mutations):
    tried["policy_mutations"] = tried.get("policy_mutations", 0) + 1
    doc = yaml.safe_load(path.read_text())
    flat = [doc]
    for node in flat:
        if isinstance(node, dict):
            flat.extend(node.values())
        elif isinstance(node, list):
            flat.extend(node)
    for index, value in mutations:
        target = flat[index % len(flat)]
        if isinstance(target, dict) and target:
            target[sorted(target, key=str)[index % len(target)]] = value
        elif isinstance(target, list) and target:
            target[index % len(target)] = value
    text = yaml.safe_dump(doc)
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError:
        pass


@FAST
@given(TEXT)
def test_policy_loader_random_text(text):
    tried["policy_text"] = tried.get("policy_text", 0) + 1
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError:
        pass


def teardown_module(_module) -> None:
    print("\nfuzz inputs tried:", ", ".join(f"{k}={v}" for k, v in sorted(tried.items())))
