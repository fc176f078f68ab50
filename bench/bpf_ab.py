#!/usr/bin/env python3
"""A/B benchmark of the process sensor's BPF programs: two variants attached at once, same events.

The machine is shared and noisy, so two versions of bpf/process/process.bpf.c are not only measured one
after the other: both are compiled (collector/kernel/build.py compile_program, with the sensor's BTF offsets
and default defines) and attached at the same time to the same tracepoints, each with its own ring
buffer drained by its own reader thread (collector/kernel/ringbuf.py) so that neither runs full. Every exec,
fork and exit then runs both variants back to back, and the per-program in-kernel cost is compared from
run_time_ns / run_cnt (bpf_run_time_stats in bench/measure.py, bpftool) of each variant's own programs.

  A: bpf/process/ and bpf/include/ as committed at --base (default HEAD),
  B: the working tree (what the agent would load), optionally with --b-define.

Paired runs (--runs): load both, in an order that alternates between runs (the program that runs second
on a tracepoint finds the kernel's cache lines warm and looks 20-30% cheaper: compare the means over
both orders), hold the BPF run-time statistics on (bench/measure.py; the run counts are still checked),
run --execs fork+exec of /bin/true from a C loop (the issue's workload, bench/exec_storm.py) in a fresh
directory, print ns per run for each program and their sum per exec (exec + fork + exit programs). Run
counts include other processes' execs on the machine; both variants see the same ones.
Each paired run also checks that A and B produce byte-identical messages for the same events (the
header's ktime aside): every exec and exit (and fork) message of the workload's processes, matched by
pid and start time, in the benchmark directory and in a deeper one that crosses a mount (tmpfs under
/dev/shm when there is one), and for a few special cases (run_cases: setuid binary, other credentials,
new namespaces, another cgroup, truncated argv, non-UTF-8 name). --define applies -D to both (e.g. SH_CWD_DEPTH=2, truncated walks).
Solo rounds (--solo): each variant attached alone, alternating A B / B A: what the agent really pays.

Run as root: `.venv/bin/python bench/bpf_ab.py [--execs 20000] [--runs 4] [--solo 3] [--base REV]`.

Figures (kernel 6.18, 2 cores shared with other sessions, 20000 execs per run; A = b6cfdc9, the
program reading every field with bpf_probe_read_kernel, B = typed loads; docs/sensors/process.md):
  paired, mean of 4 runs: A exec 3194 + fork 653 + exit 665 = 4512 ns per exec,
                          B exec 1561 + fork 615 + exit 535 = 2711 ns per exec (0.60x);
  alone, mean of 3 runs:  A exec 3365 + fork 683 + exit 715 = 4763 ns per exec,
                          B exec 1707 + fork 639 + exit 618 = 2964 ns per exec (0.62x);
  all 40000 workload messages and 400 in the deep directory identical in every paired run; the special
  cases (setuid binary, setpriv, unshare, long argv, non-UTF-8 name, another cgroup) identical too.
"""


from __future__ import annotations

import argparse
import collections
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from exec_storm import FORK_LOOP_C  # bench/exec_storm.py
from measure import bpf_run_time_stats  # bench/measure.py

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = ("sched_process_exec", "sched_process_fork", "sched_process_exit")
MSG_EXEC, MSG_FORK, MSG_EXIT = 1, 2, 3


def variant_source(base: str, into: Path) -> str:
    """Write bpf/process/process.bpf.c and bpf/include/*.h as of git `base` side by side into `into`
    (quoted #includes resolve beside the source first), and return the program's path."""
    into.mkdir(parents=True, exist_ok=True)
    names = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", base, "bpf/include/"],
                           capture_output=True, text=True, check=True).stdout.split()
    for path in [*names, "bpf/process/process.bpf.c"]:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{base}:{path}"], capture_output=True,
                              check=True).stdout
        (into / Path(path).name).write_bytes(text)
    return str(into / "process.bpf.c")


def load(src: str, extra: dict[str, int] | None = None):
    """Compile and attach one variant as the sensor does (ProcessSensor.load), with its own maps."""
    from siemhub.collector.kernel.build import compile_program
    from siemhub.collector.sensors.process import ProcessSensorConfig
    from siemhub.collector.sensors.process import _MAPS, _offsets, _pow2_at_least

    c = ProcessSensorConfig()
    defines = {"SH_ARGS_MAX": c.args_max_bytes, "SH_FILENAME_MAX": c.filename_max_bytes,
               "SH_CWD_DEPTH": c.cwd_depth, "SH_RINGBUF_PAGES": c.ringbuf_pages,
               "SH_WAKEUP_EVERY": c.wakeup_every, "SH_NR_CPUS": _pow2_at_least(os.cpu_count() or 1)}
    defines.update(extra or {})
    return compile_program(src, _offsets(), defines, _MAPS), c.ringbuf_pages  # an absolute src is taken as is


class Reader(threading.Thread):
    """Drains one variant's ring buffer into a list, every few milliseconds."""

    def __init__(self, loaded, pages: int) -> None:
        super().__init__(daemon=True)
        from siemhub.collector.kernel import ringbuf

        self.rb = ringbuf.RingBuffer(loaded.maps["events"].fd, pages * 4096)
        self.msgs: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.rb.wait(0.005)
            self.msgs.extend(self.rb.drain())
        self.msgs.extend(self.rb.drain())


def prog_ids(fds: list[int]) -> dict[str, int]:
    """Tracepoint name -> program id for the attachments held in this process under `fds`."""
    attached = json.loads(subprocess.run(["bpftool", "-j", "perf", "show"], capture_output=True, text=True,
                                         check=True).stdout)
    me, wanted = os.getpid(), set(fds)
    return {a["tracepoint"]: a["prog_id"] for a in attached
            if a.get("pid") == me and a.get("fd") in wanted and "tracepoint" in a}


def prog_stats(ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    out = {}
    for name, pid in ids.items():
        p = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id", str(pid)], capture_output=True,
                                      text=True, check=True).stdout)
        out[name] = (p.get("run_time_ns", 0), p.get("run_cnt", 0))
    return out


def lost(loaded) -> str:
    """Messages the variant could not queue (its `lost` map), by kind: "0" or e.g. "1 (exit 1)"."""
    from siemhub.collector.kernel import maps as bpfmaps

    by_kind = {name: sum(loaded.maps["lost"].lookup_percpu_u64(bpfmaps.u32(k)))
               for name, k in (("exec", MSG_EXEC), ("fork", MSG_FORK), ("exit", MSG_EXIT))}
    total = sum(by_kind.values())
    return f"{total} ({', '.join(f'{k} {n}' for k, n in by_kind.items() if n)})" if total else "0"


def fork_loop(tmp: Path) -> str:
    (tmp / "fork_loop.c").write_text(FORK_LOOP_C)
    subprocess.run(["gcc", "-O2", "-o", str(tmp / "fork_loop"), str(tmp / "fork_loop.c")], check=True)
    return str(tmp / "fork_loop")


def run_workload(loop: str, n: int, marker: str, cwd: str) -> None:
    env = dict(os.environ, STORM_MARKER=marker)
    if subprocess.run([loop, str(n), "/bin/true"], env=env, cwd=cwd).returncode != 0:
        raise SystemExit("fork loop failed")


def workload_messages(msgs: list[bytes], marker: str) -> dict[tuple, bytes]:
    """Exec messages whose argv carries `marker`, and the exit (and fork) messages of the same processes,
    keyed by (type, pid, start_boottime, n-th such message of that process), the header's ktime zeroed."""
    needle = marker.encode() + b"\0"
    pids = set()
    out = {}
    seen: collections.Counter = collections.Counter()

    def put(kind: int, pid: int, start: int, raw: bytes) -> None:
        seen[(kind, pid, start)] += 1
        out[(kind, pid, start, seen[(kind, pid, start)])] = raw[:8] + bytes(8) + raw[16:]

    for raw in msgs:
        if raw[0] == MSG_EXEC and needle in raw[176:]:
            pid, start = struct.unpack_from("<I", raw, 16)[0], struct.unpack_from("<Q", raw, 64)[0]
            pids.add((pid, start))
            put(MSG_EXEC, pid, start, raw)
    for raw in msgs:
        if raw[0] == MSG_EXIT:
            pid, start = struct.unpack_from("<I", raw, 16)[0], struct.unpack_from("<Q", raw, 32)[0]
            if (pid, start) in pids:
                put(MSG_EXIT, pid, start, raw)
        elif raw[0] == MSG_FORK:
            pid, start = struct.unpack_from("<I", raw, 16)[0], struct.unpack_from("<Q", raw, 24)[0]
            if (pid, start) in pids:
                put(MSG_FORK, pid, start, raw)
    return out


def run_cases(tmp: Path, marker: str) -> int:
    """Execs whose messages differ from the storm's in every part the program reads: a setuid-setgid
    binary owned by another user, other credentials (setpriv), new namespaces (unshare), another cgroup
    v2 (when one is mounted), argv past the copy limit, a non-UTF-8 binary name. Returns how many
    processes carried the marker (some exec twice: the launcher, then /bin/true)."""
    import shutil

    suid = tmp / "suid-true"
    shutil.copy("/bin/true", suid)
    os.chown(suid, 65534, 65534)
    os.chmod(suid, 0o6755)
    odd = os.path.join(os.fsencode(tmp), b"tr\xffue")
    shutil.copy("/bin/true", odd)
    cases = [
        [str(suid), marker],
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "/bin/true", marker],
        ["unshare", "-m", "-u", "-i", "-n", "-p", "-f", "/bin/true", marker],
        ["/bin/true", marker, *(["y" * 15] * 1000)],
        [odd, marker.encode()],
    ]
    cg = None
    v2 = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines() if line.split()[2] == "cgroup2"]
    if v2:
        cg = Path(v2[0], f"siemhub-ab-{os.getpid()}", "leaf")
        cg.mkdir(parents=True, exist_ok=True)
        cases.append(["sh", "-c", f"echo $$ > {cg}/cgroup.procs && exec /bin/true {marker}"])
    for argv in cases:
        subprocess.run(argv, check=True)
    if cg is not None:
        cg.rmdir()
        cg.parent.rmdir()
    return len(cases)


def compare(a: dict, b: dict, expected_execs: int, at_least: bool = False) -> tuple[int, list[str]]:
    problems = []
    execs = sum(1 for k in a if k[0] == MSG_EXEC)
    if execs < expected_execs or (execs != expected_execs and not at_least):
        problems.append(f"A saw {execs} workload execs, expected {expected_execs}")
    if set(a) != set(b):
        problems.append(f"{len(set(a) - set(b))} messages only in A, {len(set(b) - set(a))} only in B")
    diff = [k for k in a.keys() & b.keys() if a[k] != b[k]]
    for k in diff[:3]:
        x, y = a[k], b[k]
        first = next(i for i in range(min(len(x), len(y))) if x[i] != y[i]) if len(x) == len(y) else "size"
        problems.append(f"type {k[0]} pid {k[1]}: differ at byte {first} (sizes {len(x)}/{len(y)})")
    if diff:
        problems.append(f"{len(diff)} of {len(a.keys() & b.keys())} messages differ")
    return len(a.keys() & b.keys()) - len(diff), problems


def attach_and_run(order: list[str], srcs: dict[str, str], extra: dict[str, dict[str, int]], loop: str,
                   workloads: list[tuple[int, str, str]], after=None) -> dict:
    """Attach the variants in `order` (one or both), run each (execs, marker, cwd) workload, detach.
    Returns the first workload's wall time and per-program (run_time_ns, run_cnt) deltas per variant,
    the messages each variant sent, and its lost counts."""
    loaded, readers, ids = {}, {}, {}
    try:
        for v in order:
            loaded[v], pages = load(srcs[v], extra[v])
            ids[v] = prog_ids(loaded[v].attachments)
            if set(ids[v]) != set(PROGRAMS):
                raise SystemExit(f"variant {v}: attached {sorted(ids[v])}, expected {PROGRAMS}")
            readers[v] = Reader(loaded[v], pages)
            readers[v].start()
        s0 = {v: prog_stats(ids[v]) for v in order}
        t0 = time.monotonic()
        n, marker, cwd = workloads[0]
        run_workload(loop, n, marker, cwd)
        wall = time.monotonic() - t0
        s1 = {v: prog_stats(ids[v]) for v in order}
        for n, marker, cwd in workloads[1:]:
            run_workload(loop, n, marker, cwd)
        if after is not None:
            after()
        time.sleep(0.3)
    finally:
        for r in readers.values():
            r.stop.set()
        for r in readers.values():
            r.join()
    result = {"order": order, "wall": wall, "lost": {}, "stats": {}, "msgs": {}}
    for v in order:
        result["stats"][v] = {p: (s1[v][p][0] - s0[v][p][0], s1[v][p][1] - s0[v][p][1]) for p in PROGRAMS}
        result["lost"][v] = lost(loaded[v])
        result["msgs"][v] = readers[v].msgs
        loaded[v].close()
        readers[v].rb.close()
    return result


def one_run(run: int, srcs: dict[str, str], loop: str, n: int, workdir: str, deepdir: str | None,
            extra: dict[str, dict[str, int]]) -> dict:
    """Both variants at once (the order alternates with `run`), and the identical-message check."""
    order = ["A", "B"] if run % 2 == 0 else ["B", "A"]
    marker, deep_marker = f"ab-{os.getpid()}-{run}", f"ab-deep-{os.getpid()}-{run}"
    case_marker = f"ab-case-{os.getpid()}-{run}"
    work = [(n, marker, workdir)] + ([(200, deep_marker, deepdir)] if deepdir else [])
    cases = []
    result = attach_and_run(order, srcs, extra, loop, work,
                            after=lambda: cases.append(run_cases(Path(workdir).parent, case_marker)))
    msgs = result.pop("msgs")
    same, problems = compare(workload_messages(msgs["A"], case_marker), workload_messages(msgs["B"], case_marker),
                             cases[0], at_least=True)
    result["identical_cases"], result["case_problems"] = same, problems
    same, problems = compare(workload_messages(msgs["A"], marker), workload_messages(msgs["B"], marker), n)
    result["identical"], result["problems"] = same, problems
    if deepdir:
        same, problems = compare(workload_messages(msgs["A"], deep_marker), workload_messages(msgs["B"], deep_marker), 200)
        result["identical_deep"], result["problems"] = same, result["problems"] + [f"deep: {p}" for p in problems]
    result["problems"] += [f"cases: {p}" for p in result.pop("case_problems")]
    return result


def print_stats(label: str, st: dict[str, tuple[int, int]], totals, v: str) -> float:
    cells = []
    for p in PROGRAMS:
        rt, rc = st[p]
        cells.append(f"{p.removeprefix('sched_process_')} {rt / max(rc, 1):6.0f} ns x {rc}")
        totals[(v, p)].append(rt / max(rc, 1))
    # per exec of the workload: each program's mean cost, once each (one fork, exec, exit per exec)
    per_exec = sum(st[p][0] / max(st[p][1], 1) for p in PROGRAMS)
    totals[(v, "sum")].append(per_exec)
    print(f"   {label}: " + ", ".join(cells) + f"; sum {per_exec:.0f} ns per exec")
    return per_exec


def print_means(title: str, totals) -> None:
    print(title)
    for v in ("A", "B"):
        k = len(totals[(v, "sum")])
        print(f"   {v}: " + ", ".join(f"{p.removeprefix('sched_process_')} {sum(totals[(v, p)]) / k:.0f}"
                                    for p in PROGRAMS) + f"; sum {sum(totals[(v, 'sum')]) / k:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=4, help="even: each variant runs first on the tracepoints as often")
    ap.add_argument("--solo", type=int, default=2,
                    help="then this many rounds of each variant attached alone (what the agent pays; no pairing)")
    ap.add_argument("--base", default="HEAD", help="git revision of variant A (B is the working tree)")
    ap.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                    help="extra -D for both variants, e.g. SH_CWD_DEPTH=2 (to compare truncated walks)")
    ap.add_argument("--b-define", action="append", default=[], metavar="NAME=VALUE",
                    help="extra -D for variant B, e.g. SH_PROBE_READ_ONLY=1 or SH_WIN_MAX=8 (fallback paths)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (eBPF)")
    from siemhub.collector.kernel.build import bpf_dir

    tmp = Path(tempfile.mkdtemp(prefix="siemhub-ab-"))
    srcs = {"A": variant_source(args.base, tmp / "a"), "B": str(bpf_dir() / "process" / "process.bpf.c")}
    loop = fork_loop(tmp)
    workdir = tmp / "work"
    workdir.mkdir()
    deepdir = None
    if os.path.isdir("/dev/shm"):
        deepdir = tempfile.mkdtemp(prefix="siemhub-ab-", dir="/dev/shm")
        Path(deepdir, "one", "two", "three").mkdir(parents=True)
        deepdir = str(Path(deepdir, "one", "two", "three"))
    print(f"A: bpf/process at {args.base}; B: working tree. {args.execs} fork+exec of /bin/true per run, "
          f"cwd {workdir}; machine shared with other sessions." + (f" B with -D {' -D '.join(args.b_define)}" if args.b_define else ""))
    totals = collections.defaultdict(list)
    first = collections.defaultdict(list)  # (variant, position on the tracepoints) -> sums
    both = {k: int(v) for k, v in (d.split("=", 1) for d in args.define)}
    extra = {"A": both, "B": {**both, **{k: int(v) for k, v in (d.split("=", 1) for d in args.b_define)}}}
    stats = bpf_run_time_stats()  # on for the whole benchmark, off again only if nobody else holds it
    stats.__enter__()
    try:
        for run in range(args.runs):
            r = one_run(run, srcs, loop, args.execs, str(workdir), deepdir, extra)
            print(f"-- run {run + 1}: attach order {'+'.join(r['order'])}, {r['wall']:.1f}s "
                  f"({args.execs / r['wall']:.0f} execs/s), lost A {r['lost']['A']} B {r['lost']['B']}")
            per_exec = {v: print_stats(v, r["stats"][v], totals, v) for v in ("A", "B")}
            for v in r["order"]:
                first[(v, r["order"].index(v))].append(per_exec[v])
            sane = all(r["stats"][v]["sched_process_exec"][1] >= args.execs for v in ("A", "B"))
            print(f"   B/A: {per_exec['B'] / per_exec['A']:.2f}; run counts "
                  f"{'sane' if sane else 'TOO LOW (bpf_stats toggled by someone else?)'}")
            print(f"   identical messages: {r['identical']} workload"
                  + (f", {r['identical_deep']} in {deepdir}" if deepdir else "")
                  + f", {r['identical_cases']} of the special cases"
                  + ("; PROBLEMS: " + "; ".join(r["problems"]) if r["problems"] else "; no difference"))
        if args.runs:
            print_means("== attached together, mean over runs (ns per program run)", totals)
            for v in ("A", "B"):
                print(f"   {v} attached first: " + ", ".join(f"{x:.0f}" for x in first[(v, 0)])
                      + "; second: " + ", ".join(f"{x:.0f}" for x in first[(v, 1)]) + " (sum, ns per exec)")
        solo = collections.defaultdict(list)
        for run in range(args.solo):
            for v in (["A", "B"] if run % 2 == 0 else ["B", "A"]):
                r = attach_and_run([v], srcs, extra, loop, [(args.execs, f"ab-solo-{os.getpid()}-{run}", str(workdir))])
                sane = r["stats"][v]["sched_process_exec"][1] >= args.execs
                print(f"-- solo {run + 1}, {v} alone: {r['wall']:.1f}s, lost {r['lost'][v]}"
                      + ("" if sane else ", run counts TOO LOW (bpf_stats toggled by someone else?)"))
                print_stats(v, r["stats"][v], solo, v)
        if args.solo:
            print_means("== alone (one variant attached at a time, alternating), mean (ns per program run)", solo)
    finally:
        stats.__exit__(None, None, None)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
        if deepdir:
            subprocess.run(["rm", "-rf", str(Path(deepdir).parents[2])], check=False)


if __name__ == "__main__":
    main()
