"""Fault injection for delivery: full disks (a 1 MiB tmpfs), SIGKILL mid-stream, SIGTERM.

Needs root for `mount -t tmpfs`; skips otherwise. Every count is by event id. TLS verification and
backend outages of network exporters belong to those exporters' own fault tests (their issues).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from siemhub.collector import config
from siemhub.collector.agent import Pipeline
from siemhub.collector.delivery.diskqueue import DiskQueue
from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node, Process, encode_json_lines

SIEMHUB = [shutil.which("siemhub", path=os.path.dirname(sys.executable)) or "siemhub"]


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a directory on a fresh tmpfs of that size; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m") -> Path:
        from tests.conftest import server_unavailable

        if os.geteuid() != 0:
            server_unavailable("mounting a tmpfs needs root")
        d = tmp_path / name
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode:
            server_unavailable(f"cannot mount a tmpfs: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(d: Path) -> Path:
    """Fill a file system to the last byte; returns the filler to delete later."""
    filler = d / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 512, b"\0"):
            while True:
                try:
                    if os.write(fd, chunk) < len(chunk):
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def make_events(n: int, prefix: str = "ev") -> list[Event]:
    return [Event(id=f"{prefix}-{i:06d}", time="2024-05-01T12:00:00.000000000Z", type="process_exec",
                  schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n1"),
                  process=Process(exec_id=f"x{i}", pid=1000 + i, binary="/bin/true", args=["/bin/true", str(i)]))
            for i in range(n)]


def ids_in(path: Path) -> list[str]:
    """Event ids of a JSON-lines file; torn lines (a partial write on ENOSPC) are skipped."""
    out = []
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        try:
            out.append(msgspec.json.decode(line)["id"])
        except (msgspec.DecodeError, KeyError, TypeError):
            pass
    return out


def buffer_ids(path: Path) -> list[str]:
    """Ids of what waits in a disk buffer, without acknowledging anything."""
    q = DiskQueue(str(path), 1 << 40, 1 << 20, "never")
    dec = msgspec.msgpack.Decoder(Event)
    out = []
    while True:
        recs = q.read(1000)
        if not recs:
            break
        out += [dec.decode(r).id for r in recs]
    q.close()
    return out


def agent_config(out: Path, buf: Path, **buffer) -> str:
    b = {"type": "disk", "path": str(buf), "max_bytes": 64 << 20, "segment_bytes": 65536, "fsync": "never", **buffer}
    return f"""
exporters:
  out:
    type: file
    path: "{out}"
    fsync: never
    batch: {{max_events: 200, max_wait: 0.02}}
    retry: {{initial_interval: 0.01, max_interval: 0.05, max_elapsed: 0}}
    circuit_breaker: {{failure_threshold: 3, cooldown: 0.2}}
    buffer: {msgspec.json.encode(b).decode()}
routes: [{{name: all, to: [out]}}]
metrics: {{enabled: false}}
status_interval: 0
shutdown_deadline: 1
"""


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.02)


# --- the exporter's disk is full: the buffer holds everything, then delivers in order ---------------


def test_full_output_disk_buffers_then_delivers_everything(tmpfs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outdir = tmpfs("out", "8m")
    out = outdir / "events.jsonl"
    out.touch()
    filler = fill(outdir)
    pipe = Pipeline(config.parse(agent_config(out, tmp_path / "buf")))
    pipe.start()
    evs = make_events(5000)
    for i in range(0, 5000, 500):
        pipe.emit(evs[i:i + 500])
    r = pipe.runners["out"]
    wait_for(lambda: r.breaker.state == r.breaker.OPEN, what="breaker open")
    assert r.sent == 0 and r.dropped == {} and r.buffered == 5000
    filler.unlink()  # the disk has room again
    wait_for(lambda: r.finished == 5000, timeout=15, what="all delivered")
    counts = pipe.stop(2)
    got = ids_in(out)
    assert set(got) == {e.id for e in evs}
    first = {}
    for i, x in enumerate(got):
        first.setdefault(x, i)
    assert sorted(first, key=first.get) == [e.id for e in evs]  # FIFO
    assert counts["out"]["dropped"] == {} and counts["out"]["buffered"] == 0
    print(f"\nfull output disk: {len(set(got))}/5000 delivered after the disk came back, "
          f"{len(got) - len(set(got))} duplicates (torn writes retried)")


# --- the buffer's own disk is full: the configured policy, every drop counted -----------------------


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
def test_full_buffer_disk_follows_the_policy(tmpfs, tmp_path, monkeypatch, policy):
    monkeypatch.chdir(tmp_path)
    outdir = tmpfs("out")
    out = outdir / "events.jsonl"
    out.touch()
    fill(outdir)  # the backend is down for the whole test
    tiny = tmpfs("tiny")  # the buffer's disk: 1 MiB, far below max_bytes (64 MiB)
    pipe = Pipeline(config.parse(agent_config(out, tiny / "buf", when_full=policy)))
    pipe.start()
    evs = make_events(20000)
    for i in range(0, 20000, 250):
        pipe.emit(evs[i:i + 250])
    r = pipe.runners["out"]
    offered = 20000
    if policy == "drop_newest":
        assert r.dropped.get("buffer_ENOSPC", 0) > 0
        assert r.accepted + r.dropped["buffer_ENOSPC"] == offered
    else:
        assert r.dropped.get("buffer_full_oldest", 0) > 0
        kept = buffer_ids_live(r)
        assert evs[-1].id in kept  # the newest is there, the oldest went
        assert r.dropped.get("buffer_ENOSPC", 0) < r.dropped["buffer_full_oldest"]
    counts = pipe.stop(0.5)
    total = sum(counts["out"]["dropped"].values())
    print(f"\n{policy} on a full 1 MiB tmpfs: accepted {r.accepted}, dropped {counts['out']['dropped']}, "
          f"left in buffer {counts['out']['buffered']}, sent {counts['out']['sent']}")
    # every event is accounted for: sent, dropped with a reason, or still in the buffer
    assert counts["out"]["sent"] + total + counts["out"]["buffered"] >= offered - len(ids_in(out))
    assert r.sent + total + r.buffered == offered


def buffer_ids_live(r) -> set[str]:
    q = r._buf.q
    return set(buffer_ids(Path(q.path)))


# --- SIGKILL mid-stream, then restart: nothing accepted into the disk buffer is lost ----------------


def test_sigkill_of_replay_then_restart_delivers_everything_accepted(tmpfs, tmp_path):
    outdir = tmpfs("out", "32m")
    out = outdir / "events.jsonl"
    out.touch()
    filler = fill(outdir)  # the backend is "down": nothing can be delivered before the kill
    buf = tmp_path / "buf"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_config(out, buf).replace("shutdown_deadline: 1", "shutdown_deadline: 60"))
    src = tmp_path / "in.jsonl"
    evs = make_events(50000)
    src.write_bytes(encode_json_lines(evs))
    proc = subprocess.Popen([*SIEMHUB, "replay", str(src), "-c", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def buffered_bytes():
            return sum(p.stat().st_size for p in buf.glob("*.seg")) if buf.exists() else 0
        wait_for(lambda: buffered_bytes() > 2 << 20 or proc.poll() is not None, timeout=30, what="buffer filling")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)  # mid-stream: replay is still reading its input
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    accepted = buffer_ids(buf)
    assert 0 < len(accepted) < 50000
    assert accepted == [e.id for e in evs[: len(accepted)]]  # a prefix, in order
    filler.unlink()
    cfg.write_text(agent_config(out, buf))
    run = subprocess.run([*SIEMHUB, "run", "-c", str(cfg), "--duration", "3"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    delivered = set(ids_in(out))
    lost = [x for x in accepted if x not in delivered]
    assert not lost, f"{len(lost)} accepted events lost, e.g. {lost[:3]}"
    assert buffer_ids(buf) == []
    print(f"\nSIGKILL mid-stream: {len(accepted)} events were in the disk buffer, "
          f"{len(set(accepted) & delivered)} delivered after the restart, 0 lost")


# --- SIGTERM: exit 0 within the deadline, what could not be sent stays on disk ----------------------


def test_sigterm_exits_0_and_keeps_the_rest_on_disk(tmpfs, tmp_path):
    outdir = tmpfs("out", "8m")
    out = outdir / "events.jsonl"
    out.touch()
    filler = fill(outdir)
    buf = tmp_path / "buf"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(agent_config(out, buf).replace("status_interval: 0", "status_interval: 0.05"))
    proc = subprocess.Popen([*SIEMHUB, "run", "-c", str(cfg)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    took = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert took < 1 + 3, took  # shutdown_deadline 1 s plus start-up slack
    assert "left in the disk buffer" in err
    waiting = buffer_ids(buf)
    assert waiting
    filler.unlink()
    run = subprocess.run([*SIEMHUB, "run", "-c", str(cfg), "--duration", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert set(waiting) <= set(ids_in(out))
