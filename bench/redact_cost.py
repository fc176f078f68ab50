"""Redaction cost per event, by kind of command line (collector/redact.py, Redactor.apply).

Each case is a batch of events whose process and parent carry that kind of command line, every
command line distinct (a URL or a value with the event's number), so the per-command-line memo never
answers: this is the cost of a line seen for the first time. A last case repeats one command line, the
memo's answer. The garbage collector runs with the agent's settings (frozen heap, threshold
50,000). Prints the best of --repeat runs, in µs per event (process + parent), and how many
events were changed.

    .venv/bin/python bench/redact_cost.py [--events 20000] [--repeat 5]

Measured (2 vCPU VM, quiet), before -> after issue 6's third round (guards: a tool's own password
option is looked for before the full check; each substitution runs only where its text is present):
no candidate word 3.1 -> 2.8-3.1 µs; `curl` without `-u` 4.6 -> 3.2-3.5; a candidate word but no
secret 14.8 -> 7.6-8.3; secrets in both 19.9 -> 13.2-15.8; a repeated line 1.3 -> 1.0-1.2 (per event:
process and parent, two command lines). A differential test (tests/unit/test_redact.py) checks that
the guards give exactly what running every rule gives (Redactor.args(..., guards=False)).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siemhub.collector.core.event import EVENT_BASE, Event, Node, Process  # noqa: E402
from siemhub.collector.redact import Redactor  # noqa: E402

CASES = {
    "no candidate word": lambda i: (["ls", "-la", f"/var/log/app-{i}"], ["bash", "-c", f"cd /srv/{i} && make"]),
    "curl without -u": lambda i: (["curl", "-s", "-o", "/dev/null", f"https://example.com/{i}"],
                                  ["sh", "-c", f"./fetch.sh {i}"]),
    "candidate, no secret": lambda i: (["app", "--token-file", f"/etc/app/{i}.conf", "--auth-mode", "oidc"],
                                       ["passwd", "--status", f"user{i}"]),
    "secrets in both": lambda i: (["app", f"--password=hunter{i}", f"https://u:s3cret{i}@db/x"],
                                  ["sh", "-c", f"AWS_SECRET_ACCESS_KEY=k{i} run && mysql -uroot -pp{i}"]),
    "repeated line": lambda i: (["curl", "-s", "-o", "/dev/null", "https://example.com/health"],
                                ["sh", "-c", "./probe.sh"]),
}


def events(case, n: int) -> list[Event]:
    out = []
    for i in range(n):
        args, pargs = case(i)
        p = Process(exec_id=f"e{i}", pid=i, binary="/usr/bin/" + args[0], args=args)
        parent = Process(exec_id=f"p{i}", pid=100_000 + i, binary="/bin/" + pargs[0], args=pargs)
        out.append(Event(id=f"id-{i}", time="2026-11-26T00:00:00.000000001Z", type="process_exec",
                         node=Node(name="n"), process=p, parent=parent, **EVENT_BASE))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    gc.set_threshold(50_000, 20, 50)
    for name, case in CASES.items():
        best, changed = float("inf"), 0
        for _ in range(args.repeat):
            evs = events(case, args.events)  # fresh objects: nothing seen before
            r = Redactor()
            gc.collect()
            gc.freeze()  # the agent's garbage-collector settings (collector/agent.py)
            t0 = time.process_time()
            changed = r.apply(evs)
            best = min(best, time.process_time() - t0)
        print(f"{name:22s} {best / args.events * 1e6:6.2f} µs/event (process + parent), {changed} events changed")


if __name__ == "__main__":
    main()
