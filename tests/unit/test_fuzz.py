"""Fuzzing with hypothesis: hostile input never crashes siemhub.

- the config loader: random YAML documents and random mutations of a valid config raise ConfigError
  and nothing else;
- replay: random bytes and random JSON lines are skipped and counted, never fatal;
- the disk queue: random corruption of segment and ack files is detected, counted and skipped.

Example counts are kept small so the suite stays fast; SIEMHUB_FUZZ_EXAMPLES raises them (docs/delivery.md
reports a run with 10x). Each test prints how many inputs it tried (pytest -s).
"""
from __future__ import annotations

import copy
import io
import os
import shutil
import tempfile

import msgspec
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siemhub.collector import config
from siemhub.collector.delivery.diskqueue import DiskQueue
from siemhub.collector.sources.replay import ReplayStats, parse_line, read_lines

N = int(os.environ.get("SIEMHUB_FUZZ_EXAMPLES", "0")) or None
FAST = settings(max_examples=N or 300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
tried: dict[str, int] = {}


def count(name: str) -> None:
    tried[name] = tried.get(name, 0) + 1


def teardown_module(_module) -> None:
    print("\nfuzz inputs tried:", ", ".join(f"{k}={v}" for k, v in sorted(tried.items())))


# --- config --------------------------------------------------------------------------------------

VALID = {
    "node": {"name": "n1", "labels": {"a": "b"}},
    "sensors": {"process": {"args_max_bytes": 4096, "cache": {"max_entries": 4096}}},
    "exporters": {
        "out": {"type": "file", "path": "/tmp/siemhub-fuzz/out.jsonl", "format": "native",
                "buffer": {"type": "disk", "path": "/tmp/siemhub-fuzz/buf", "max_bytes": 1048576,
                           "segment_bytes": 65536, "when_full": "block"},
                "dead_letter": {"exporter": "live"}, "retry": {"initial_interval": 1},
                "circuit_breaker": {"failure_threshold": 3}},
        "live": {"type": "stdout", "format": "compact", "batch": {"max_events": 10}},
    },
    "routes": [{"name": "all", "match": {"types": ["process_exec"], "min_severity": "low"}, "to": ["out", "live"]}],
    "redact": {"rules": [{"name": "x", "pattern": "acme_[0-9]+"}]},
    "metrics": {"enabled": False},
    "status_interval": 5,
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["${HOME}", "${NOPE_NOT_SET}", "${X:-d}", "[", "*a", "&a"]))
trees = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), kids, max_size=4)),
                     max_leaves=20)


def only_config_error(text: str) -> None:
    try:
        config.parse(text, "fuzz.yaml")
    except config.ConfigError as err:
        assert err.problems and all(p.startswith("fuzz.yaml:") for p in err.problems), err.problems


@FAST
@given(st.text(max_size=300))
def test_config_random_text(text):
    count("config_text")
    only_config_error(text)


@FAST
@given(trees)
def test_config_random_documents(doc):
    count("config_documents")
    only_config_error(yaml.safe_dump(doc))


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


@FAST
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS), st.sampled_from(["delete", "replace", "rename"]), trees),
                min_size=1, max_size=4))
def test_config_mutations_of_a_valid_config(mutations):
    count("config_mutations")
    doc = copy.deepcopy(VALID)
    for path, op, value in mutations:
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            last = path[-1]
            if op == "delete":
                del parent[last]
            elif op == "replace":
                parent[last] = value
            elif isinstance(parent, dict):
                parent[f"{last}_x"] = parent.pop(last)
        except (KeyError, IndexError, TypeError):
            continue
    only_config_error(yaml.safe_dump(doc))


def test_the_valid_config_is_valid():
    config.parse(yaml.safe_dump(VALID), "fuzz.yaml")


# --- replay --------------------------------------------------------------------------------------

GOOD = (b'{"id":"a","time":"2024-05-01T12:00:00.000000000Z","type":"process_exec","schema_version":"1.0",'
        b'"severity":"info","node":{"name":"n"},"process":{"exec_id":"x","pid":1,"args":["a"]}}')
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=10)),
                           lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                  st.dictionaries(st.sampled_from(
                                                      ["id", "time", "type", "event", "exporter", "reason", "attempts",
                                                       "node", "process", "args", "x"]), kids, max_size=5)),
                           max_leaves=15)


@FAST
@given(st.lists(st.one_of(st.binary(max_size=200), json_values.map(msgspec.json.encode),
                          st.binary(max_size=40).map(lambda b: GOOD[: len(GOOD) // 2] + b)), max_size=20))
def test_replay_survives_garbage_lines(lines):
    count("replay_files")
    data = b"\n".join(l.replace(b"\n", b" ") for l in lines) + b"\n" + GOOD + b"\n"
    stats = ReplayStats()
    got = list(read_lines(io.BytesIO(data), "fuzz.jsonl", stats))
    assert got[-1][0].id == "a"
    assert stats.good == len(got) and stats.good + stats.bad <= len(lines) + 1


@FAST
@given(st.binary(max_size=300))
def test_parse_line_raises_only_msgspec_errors(raw):
    count("replay_lines")
    try:
        parse_line(raw)
    except msgspec.MsgspecError:
        pass


# --- disk queue ----------------------------------------------------------------------------------


def _records(n):
    return [f"record-{i:05d}".encode() * (1 + i % 5) for i in range(n)]


@settings(max_examples=N or 200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(n=st.integers(1, 80), reads=st.integers(0, 80),
       damage=st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=8),
                                 st.sampled_from(["overwrite", "truncate", "append", "ack"])), min_size=1, max_size=4))
def test_disk_queue_survives_random_corruption(n, reads, damage):
    count("diskqueue_corruptions")
    d = tempfile.mkdtemp(prefix="siemhub-fuzz-")
    try:
        q = DiskQueue(d, 1 << 20, 512, "never")
        data = _records(n)
        q.put(data)
        q.read(min(reads, n))
        q.ack()
        q.close()
        segs = sorted(f for f in os.listdir(d) if f.endswith(".seg"))
        for pos, blob, op in damage:
            target = os.path.join(d, "ack" if op == "ack" or not segs else segs[pos % len(segs)])
            size = os.path.getsize(target)
            with open(target, "r+b") as f:
                if op == "truncate":
                    f.truncate(pos % (size + 1))
                elif op == "append":
                    f.seek(0, 2)
                    f.write(blob)
                else:
                    f.seek(pos % (size + 1))
                    f.write(blob)
        q2 = DiskQueue(d, 1 << 20, 512, "never")
        got = []
        while True:
            batch = q2.read(7)
            if not batch:
                break
            got += batch
            q2.ack()
        # What comes back is genuine (CRC-checked), in order, and never invents records.
        assert all(r in data for r in got)
        idx = [data.index(r) for r in got]
        assert idx == sorted(idx) or q2.corrupt  # a corrupt ack restarts at the oldest record
        assert len(q2) == 0
        q2.put([b"after"])
        assert q2.read(5) == [b"after"]
        q2.close()
    finally:
        shutil.rmtree(d)
