"""File exporter: complete JSON lines, 0600 files, size rotation with N backups, fsync policies, and
errno -> retry decisions."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from siemhub.collector.core.event import SCHEMA_VERSION, Event, Node, Process, decode_json
from siemhub.exporters import file as filemod
from siemhub.exporters.base import Outcome
from siemhub.exporters.file import FileConfig, FileExporter


def _ev(i: int, pad: int = 0) -> Event:
    return Event(id=f"ev-{i}", time="2024-01-02T03:04:05.000000000Z", type="process_exec",
                 schema_version=SCHEMA_VERSION, severity="info", node=Node(name="n"),
                 process=Process(exec_id=f"x{i}", pid=i, binary="/bin/echo", args=["echo", "a" * pad, "\n\x1b"]))


def _exporter(tmp_path, **kw) -> FileExporter:
    cfg = FileConfig(type="file", path=str(tmp_path / "out" / "events.jsonl"), **{"fsync": "never", **kw})
    exp = FileExporter("f", cfg)
    exp.start()
    return exp


def _send(exp: FileExporter, events: list[Event]):
    return exp.send(exp.encode(events))


def _lines(path) -> list[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    assert data == b"" or data.endswith(b"\n"), f"{path}: torn last line"
    return data.splitlines()


def _all_ids(path: str, backups: int) -> list[str]:
    """Event ids over path.N (oldest) .. path.1 .. path (newest), in write order."""
    files = [f"{path}.{i}" for i in range(backups, 0, -1) if os.path.exists(f"{path}.{i}")] + [path]
    return [decode_json(line).id for f in files for line in _lines(f)]


class OsProxy:
    """Stands in for the `os` module inside exporters/file.py: counts fsyncs, injects errors."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.write_error: OSError | None = None
        self.replace_error: OSError | None = None

    def __getattr__(self, name):
        return getattr(os, name)

    def fsync(self, fd):
        self.fsyncs += 1
        return os.fsync(fd)

    def write(self, fd, data):
        if self.write_error is not None:
            raise self.write_error
        return os.write(fd, data)

    def replace(self, a, b):
        if self.replace_error is not None:
            raise self.replace_error
        return os.replace(a, b)


@pytest.fixture
def fake_os(monkeypatch) -> OsProxy:
    proxy = OsProxy()
    monkeypatch.setattr(filemod, "os", proxy)
    return proxy


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


# --- content and permissions ---------------------------------------------------------------------


def test_lines_are_valid_and_complete(tmp_path):
    exp = _exporter(tmp_path)
    sent = [_ev(i, pad=i) for i in range(50)]
    for i in range(0, 50, 7):
        assert _send(exp, sent[i : i + 7]).outcome is Outcome.DONE
    exp.close()
    lines = _lines(exp.config.path)
    assert [decode_json(line) for line in lines] == sent
    assert all(b"\x1b" not in line for line in lines)  # control characters are JSON escapes


def test_files_are_created_0600_regardless_of_umask(tmp_path):
    old = os.umask(0)
    try:
        exp = _exporter(tmp_path, rotate_bytes=4096, backups=2)
        for i in range(60):
            _send(exp, [_ev(i, pad=100)])
        exp.close()
    finally:
        os.umask(old)
    path = exp.config.path
    for p in (path, f"{path}.1", f"{path}.2"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


# --- rotation ----------------------------------------------------------------------------------------


def test_rotation_keeps_exactly_n_backups_newest_first(tmp_path):
    exp = _exporter(tmp_path, rotate_bytes=4096, backups=3)
    n = 300  # ~250 bytes each: about 18 rotations
    for i in range(n):
        assert _send(exp, [_ev(i, pad=i % 50)]).outcome is Outcome.DONE
    exp.close()
    path = exp.config.path
    names = sorted(os.listdir(os.path.dirname(path)))
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.3"]
    for name in names:
        assert os.path.getsize(os.path.join(os.path.dirname(path), name)) <= 4096
    ids = _all_ids(path, 3)
    # what is kept is exactly the newest events, in order, ending with the last one sent
    assert ids == [f"ev-{i}" for i in range(n - len(ids), n)]
    # path.1 is newer than path.2, which is newer than path.3
    firsts = [int(decode_json(_lines(f"{path}.{k}")[0]).id[3:]) for k in (3, 2, 1)]
    assert firsts == sorted(firsts)


def test_no_event_lost_across_rotations(tmp_path):
    exp = _exporter(tmp_path, rotate_bytes=4096, backups=100)
    n, batch = 500, 3
    for i in range(0, n, batch):
        _send(exp, [_ev(j, pad=j % 40) for j in range(i, min(i + batch, n))])
    exp.close()
    path = exp.config.path
    assert os.path.exists(f"{path}.10")  # it did rotate, many times
    total = sum(len(_lines(os.path.join(os.path.dirname(path), f))) for f in os.listdir(os.path.dirname(path)))
    assert total == n
    assert _all_ids(path, 100) == [f"ev-{i}" for i in range(n)]


def test_backups_zero_keeps_only_the_live_file(tmp_path):
    exp = _exporter(tmp_path, rotate_bytes=4096, backups=0)
    for i in range(100):
        assert _send(exp, [_ev(i, pad=50)]).outcome is Outcome.DONE
    exp.close()
    path = exp.config.path
    assert os.listdir(os.path.dirname(path)) == ["events.jsonl"]
    ids = [decode_json(line).id for line in _lines(path)]
    assert 0 < len(ids) < 100 and ids[-1] == "ev-99"
    assert os.path.getsize(path) <= 4096


def test_payload_larger_than_rotate_bytes_is_written_whole(tmp_path):
    exp = _exporter(tmp_path, rotate_bytes=4096, backups=1)
    big = [_ev(i, pad=1000) for i in range(10)]
    assert _send(exp, [_ev(0)]).outcome is Outcome.DONE
    assert _send(exp, big).outcome is Outcome.DONE
    exp.close()
    assert [decode_json(line) for line in _lines(exp.config.path)] == big
    assert len(_lines(exp.config.path + ".1")) == 1


def test_failed_rotation_never_writes_to_a_stale_descriptor(tmp_path, fake_os):
    exp = _exporter(tmp_path, rotate_bytes=4096, backups=2)
    while os.path.getsize(exp.config.path) < 3300:
        _send(exp, [_ev(1, pad=100)])
    old_fd = exp._fd
    fake_os.replace_error = OSError(errno.EACCES, "Permission denied")
    assert _send(exp, [_ev(2, pad=1000)]).outcome is Outcome.GIVE_UP
    fake_os.replace_error = None
    # Whatever the process opens next may get the same descriptor number.
    decoy = tmp_path / "decoy"
    fd = os.open(decoy, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if fd != old_fd:
            os.dup2(fd, old_fd)
        # small enough not to trigger another rotation: it must go to a freshly opened log file
        assert _send(exp, [_ev(3)]).outcome is Outcome.DONE
    finally:
        exp.close()
        for f in {fd, old_fd}:
            try:
                os.close(f)
            except OSError:
                pass
    assert decoy.read_bytes() == b"", "an event went to an unrelated file"
    assert "ev-3" in _all_ids(exp.config.path, 2)


# --- fsync policies --------------------------------------------------------------------------------


def test_fsync_never(tmp_path, fake_os):
    exp = _exporter(tmp_path, fsync="never")
    for i in range(20):
        _send(exp, [_ev(i)])
    exp.flush()
    exp.close()
    assert fake_os.fsyncs == 0


def test_fsync_batch_syncs_every_send(tmp_path, fake_os):
    exp = _exporter(tmp_path, fsync="batch")
    for i in range(5):
        _send(exp, [_ev(i), _ev(i + 100)])
    assert fake_os.fsyncs == 5
    exp.flush()  # nothing written since the last sync
    exp.close()
    assert fake_os.fsyncs == 5


def test_fsync_interval(tmp_path, fake_os, monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(filemod, "time", clock)
    exp = _exporter(tmp_path, fsync="interval", fsync_interval=1.0)
    clock.t += 0.5
    _send(exp, [_ev(1)])
    assert fake_os.fsyncs == 0  # interval not elapsed
    clock.t += 0.5
    _send(exp, [_ev(2)])
    assert fake_os.fsyncs == 1  # 1.0 s since start
    clock.t += 0.9
    _send(exp, [_ev(3)])
    assert fake_os.fsyncs == 1
    exp.flush()  # flush syncs what is dirty
    assert fake_os.fsyncs == 2
    exp.flush()
    assert fake_os.fsyncs == 2
    clock.t += 0.1
    _send(exp, [_ev(4)])
    assert fake_os.fsyncs == 2  # the flush restarted the interval
    exp.close()  # close syncs the rest
    assert fake_os.fsyncs == 3


# --- errors ----------------------------------------------------------------------------------------


def test_enospc_is_retried_eacces_gives_up(tmp_path, fake_os):
    exp = _exporter(tmp_path)
    fake_os.write_error = OSError(errno.ENOSPC, "No space left on device")
    r = _send(exp, [_ev(1)])
    assert (r.outcome, r.reason) == (Outcome.RETRY, "ENOSPC")
    fake_os.write_error = OSError(errno.EACCES, "Permission denied")
    r = _send(exp, [_ev(1)])
    assert (r.outcome, r.reason) == (Outcome.GIVE_UP, "EACCES")
    fake_os.write_error = None
    assert _send(exp, [_ev(2)]).outcome is Outcome.DONE  # the exporter is still usable
    exp.close()
    assert [decode_json(line).id for line in _lines(exp.config.path)] == ["ev-2"]


def test_flush_and_close_are_idempotent(tmp_path, fake_os):
    exp = _exporter(tmp_path, fsync="interval")
    exp.flush()  # nothing written yet
    _send(exp, [_ev(1)])
    exp.flush()
    exp.flush()
    exp.close()
    exp.close()
    exp.flush()
    assert fake_os.fsyncs == 1
    assert [decode_json(line).id for line in _lines(exp.config.path)] == ["ev-1"]


def test_close_releases_the_descriptor_even_if_fsync_fails(tmp_path, fake_os):
    exp = _exporter(tmp_path, fsync="interval")
    _send(exp, [_ev(1)])
    fd = exp._fd

    def broken_fsync(_fd):
        raise OSError(errno.EIO, "I/O error")

    fake_os.fsync = broken_fsync
    with pytest.raises(OSError):
        exp.close()
    exp.close()  # a second close does not raise again
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF
