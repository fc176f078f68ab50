#!/usr/bin/env python3
"""Policy engine cost on the hot path: process_exec events that match no policy, with the shipped
library loaded (the common case on a busy host). Prints CPU per event, best of a few rounds.

    .venv/bin/python bench/policy_cost.py [--events 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector import config  # noqa: E402
from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    cfg = config.parse("exporters: {n: {type: stdout}}\nroutes: [{name: a, to: [n]}]\npolicies: {}\n", "<bench>")
    engine = cfg.policies
    parent = Process(exec_id="p", pid=1, binary="/usr/bin/bash", args=["bash"])
    events = [Event(id=str(i), time="t", type="process_exec", node=Node(name="n"), parent=parent,
                    process=Process(exec_id=str(i), pid=1000 + i, ppid=1, uid=1000, binary=f"/usr/bin/tool{i % 50}",
                                    args=[f"tool{i % 50}", "--flag", "value", f"/some/path/{i}"]), **EVENT_BASE)
              for i in range(args.events)]
    engine.apply(events[:1000])
    best = float("inf")
    for _ in range(args.rounds):
        t = time.process_time()
        out = engine.apply(events)
        best = min(best, time.process_time() - t)
        assert out is events
    print(f"policy engine, {len(engine.policies)} policies: {best / len(events) * 1e6:.2f} us CPU per "
          f"process_exec event that matches nothing (best of {args.rounds})")


if __name__ == "__main__":
    main()
