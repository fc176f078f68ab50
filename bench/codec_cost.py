#!/usr/bin/env python3
"""Decode and encode cost per format (µs of CPU per event) and event size per type and format.

Events: what the agent writes for root processes (process_exec / process_exit pairs built by the real
process sensor from kernel-shaped messages, as bench/replay_cost.py), plus one event of each other type
from the golden files (tests/golden/native_*.json: a container process with capabilities, a DNS query, an
agent_status) and a file_access / network_connect of the same root process.

Encode: every registered format (exporters/formats: native, ECS, OCSF, Tetragon, and any added later)
over batches of 1,000 exec/exit events, whose Process objects are shared as the agent shares them (an
exec and its exit, the children of one parent; memos emptied before each round); decode: native JSON (the only format read back: replay, the Kafka
aggregator) with decode_json one line at a time and with the sources' batch decoder. Least CPU
(thread time) of --rounds rounds.

    .venv/bin/python bench/codec_cost.py [--events 20000] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector.core.decode import EventDecoder  # noqa: E402
from siemhub.collector.core.event import Event, File, Network, decode_json, encode_json  # noqa: E402
from siemhub.exporters.formats import FORMATS, otel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def root_events(n: int) -> list[Event]:
    from replay_cost import agent_events

    tmp = Path(tempfile.mkdtemp(prefix="siemhub-codec-")) / "in.jsonl"
    agent_events(n, tmp)
    lines = tmp.read_bytes().splitlines()
    os.unlink(tmp)
    os.rmdir(tmp.parent)
    # as the agent's process cache and the sources' decoder hand them out: an exec and its exit share
    # their Process object, and siblings their parent's
    return EventDecoder().decode_many(lines)


def one_of_each(root: list[Event]) -> dict[str, Event]:
    import msgspec

    out = {"process_exec (root)": root[0], "process_exit (root)": root[1]}
    for p in sorted((ROOT / "tests" / "golden").glob("native_*.json")):
        e = decode_json(p.read_bytes())
        label = e.type + (" (container, caps)" if e.type.startswith("process_") else "")
        out[label] = e
    out["file_access (root)"] = msgspec.structs.replace(
        root[0], type="file_access", file=File(operation="open", path="/etc/shadow", flags=["O_RDONLY"], inode=1234))
    out["network_connect (root)"] = msgspec.structs.replace(
        root[0], type="network_connect", network=Network(protocol="tcp", family="ipv4", direction="outbound",
                                                         source_ip="10.0.0.5", source_port=41000,
                                                         destination_ip="93.184.216.34", destination_port=443))
    return out


# The ECS encoder as it was when the hot-path issue measured it (5.9 µs per event then): loaded from git
# and measured beside today's in the same run, so the page can give the ratio on the same machine.
ECS_BASELINE_REV = "048bf1b"


def ecs_baseline(rev: str = ECS_BASELINE_REV):
    """That revision's exporters/formats/ecs.py as a module (its imports moved to today's paths), or
    None without git or the revision (a shallow clone)."""
    import subprocess
    import types

    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:exporters/formats/ecs.py"],
                             capture_output=True, check=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    src = src.replace("from siemhub.collector.event import", "from siemhub.collector.core.event import")
    mod = types.ModuleType(f"ecs_{rev}")
    mod.__dict__["__name__"] = mod.__name__
    exec(compile(src, f"{rev}:exporters/formats/ecs.py", "exec"), mod.__dict__)  # noqa: S102 - our own history
    return mod


def _forget() -> None:
    """Empty the formats' per-process memos (ECS), so that every round pays for the first sight of each
    process as the agent does."""
    from siemhub.exporters.formats import ecs

    ecs.clear_memos()


def least_cpu(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        _forget()
        c = time.thread_time()
        fn()
        best = min(best, time.thread_time() - c)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the figures to this file (make bench)")
    args = ap.parse_args()

    print(f"building {args.events} agent-written events ...", flush=True)
    events = root_events(args.events)
    n = len(events)
    batches = [events[i:i + 1000] for i in range(0, n, 1000)]
    lines = [encode_json(e) for e in events]
    fig: dict = {"events": n, "encode_us": {}, "decode_us": {}, "size": {}}

    for name, fmt in FORMATS.items():
        enc = fmt.encode_lines
        fig["encode_us"][name] = round(least_cpu(lambda: [enc(b) for b in batches], args.rounds) / n * 1e6, 2)
    old = ecs_baseline()
    if old is not None:
        fig["encode_us"][f"ecs at {ECS_BASELINE_REV} (before)"] = round(
            least_cpu(lambda: [old.encode_lines(b) for b in batches], args.rounds) / n * 1e6, 2)
    # OTLP (exporters/otlp.py): the ExportLogsServiceRequest protobuf, written per batch by LogsEncoder;
    # a new encoder each round, so its attribute cache pays for the first sight of every value
    observed = time.time_ns()

    def otlp_encode():
        enc = otel.LogsEncoder()
        for b in batches:
            enc.encode(b, observed)
    fig["encode_us"]["otlp (protobuf request)"] = round(least_cpu(otlp_encode, args.rounds) / n * 1e6, 2)
    fig["decode_us"]["native, decode_json per line"] = round(
        least_cpu(lambda: [decode_json(x) for x in lines], args.rounds) / n * 1e6, 2)

    def batch_decode():
        dec = EventDecoder()
        for i in range(0, n, 1000):
            dec.decode_many(lines[i:i + 1000])
    fig["decode_us"]["native, EventDecoder batches of 1,000 (replay, Kafka)"] = round(
        least_cpu(batch_decode, args.rounds) / n * 1e6, 2)

    # sizes: one event of each type, every format (bytes of its JSON line without the newline)
    for label, e in one_of_each(events).items():
        fig["size"][label] = {name: len(fmt.encode_lines([e]).rstrip(b"\n")) for name, fmt in FORMATS.items()}
        # a one-event OTLP request, Resource and scope included (a batch shares those: less per event)
        fig["size"][label]["otlp"] = len(otel.LogsEncoder().encode([e], observed))
    execs = sorted(len(x) for x, e in zip(lines, events) if e.type == "process_exec")
    fig["native_exec_root_median_bytes"] = execs[len(execs) // 2]

    print(f"encode, µs of CPU per event (least of {args.rounds} rounds, {n} exec/exit events of root processes):")
    for k, v in fig["encode_us"].items():
        print(f"  {k:10s} {v:6.2f}")
    print("decode (native JSON):")
    for k, v in fig["decode_us"].items():
        print(f"  {v:6.2f}  {k}")
    names = [*FORMATS, "otlp"]
    print("size per event, bytes: " + " | ".join(names))
    for label, sizes in fig["size"].items():
        print(f"  {label:34s} " + " | ".join(f"{sizes[k]:6d}" for k in names))
    print(f"native process_exec of a root process: median {fig['native_exec_root_median_bytes']} bytes")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))


if __name__ == "__main__":
    main()
