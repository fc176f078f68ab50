"""Tests for siemhub.collector.delivery.diskqueue: FIFO order, acknowledgement across reopen (a crash), torn
and corrupt records, the size bound and drop_oldest, permissions."""
from __future__ import annotations

import os
import stat

import pytest

from siemhub.collector.delivery.diskqueue import DiskQueue


def recs(start: int, n: int, size: int = 20) -> list[bytes]:
    return [f"r{i:06d}".encode().ljust(size, b".") for i in range(start, start + n)]


def make(path, max_bytes=1 << 20, segment_bytes=4096, fsync="never") -> DiskQueue:
    return DiskQueue(str(path), max_bytes, segment_bytes, fsync)


def drain(q: DiskQueue, batch: int = 7) -> list[bytes]:
    out = []
    while True:
        got = q.read(batch)
        if not got:
            return out
        out += got
        q.ack()


def segments(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def test_fifo_across_segments_and_acknowledged_segments_are_deleted(tmp_path):
    q = make(tmp_path / "q", segment_bytes=256)
    data = recs(0, 100)
    assert q.put(data) == 100
    assert len(q) == 100 and len(segments(tmp_path / "q")) > 5
    assert drain(q) == data
    assert len(q) == 0
    assert len(segments(tmp_path / "q")) == 1  # only the write segment is left
    q.close()


@pytest.mark.parametrize("fsync", ["never", "batch", "always"])
def test_unacknowledged_records_come_back_after_reopen(tmp_path, fsync):
    path = tmp_path / "q"
    q = make(path, segment_bytes=300, fsync=fsync)
    data = recs(0, 50)
    q.put(data)
    assert q.read(10) == data[:10]
    q.ack()
    assert q.read(15) == data[10:25]  # read, never acknowledged: a crash now
    del q  # no close: as after SIGKILL (the OS keeps what was written)
    q2 = make(path, segment_bytes=300, fsync=fsync)
    assert len(q2) == 40
    q2.put(recs(50, 5))
    assert drain(q2) == data[10:] + recs(50, 5)
    q2.close()
    q3 = make(path, segment_bytes=300)
    assert len(q3) == 0 and q3.read(10) == []


def test_files_are_private(tmp_path):
    path = tmp_path / "q"
    q = make(path)
    q.put(recs(0, 3))
    q.read(1)
    q.ack()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    for name in os.listdir(path):
        assert stat.S_IMODE(os.stat(path / name).st_mode) == 0o600, name
    q.close()


def test_torn_last_record_is_skipped_counted_and_cut(tmp_path):
    path = tmp_path / "q"
    q = make(path)
    data = recs(0, 10)
    q.put(data)
    q.close()
    seg = path / segments(path)[-2] if len(segments(path)) > 1 else path / segments(path)[0]
    seg = max((path / n for n in segments(path)), key=lambda p: p.stat().st_size)
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 5)  # the last record half written
    q2 = make(path)
    assert q2.corrupt == 1
    assert len(q2) == 9
    assert drain(q2) == data[:9]
    q2.put(recs(10, 2))
    assert drain(q2) == recs(10, 2)
    q2.close()


def test_flipped_byte_ends_the_segment_later_segments_survive(tmp_path):
    path = tmp_path / "q"
    q = make(path, segment_bytes=10 * 28)  # 10 records of 20 bytes + 8 header per segment
    data = recs(0, 30)
    q.put(data)
    q.close()
    first = path / segments(path)[0]
    raw = bytearray(first.read_bytes())
    raw[28 * 4 + 10] ^= 0xFF  # inside the payload of the fifth record
    first.write_bytes(bytes(raw))
    q2 = make(path, segment_bytes=10 * 28)
    assert q2.corrupt == 1
    assert drain(q2) == data[:4] + data[10:]
    q2.close()


def test_corruption_found_while_reading_is_counted_and_skipped(tmp_path):
    path = tmp_path / "q"
    q = make(path, segment_bytes=10 * 28)
    data = recs(0, 30)
    q.put(data)
    first = path / segments(path)[0]
    with open(first, "r+b") as f:  # damaged after open
        f.seek(28 * 2 + 12)
        f.write(b"XX")
    got = drain(q)
    assert got == data[:2] + data[10:]
    assert q.corrupt == 1 and q.corrupt_dropped == 8
    assert q.take_skipped() == 8
    q.close()


def test_garbage_length_and_foreign_files_do_not_crash(tmp_path):
    path = tmp_path / "q"
    path.mkdir()
    (path / "0000000000000001.seg").write_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00garbage")
    (path / "ack").write_bytes(b"short")
    (path / "notes.txt").write_text("ignored")
    q = make(path)
    assert len(q) == 0 and q.corrupt == 1
    q.put(recs(0, 3))
    assert drain(q) == recs(0, 3)
    q.close()


def test_corrupt_ack_file_redelivers_from_the_oldest_record(tmp_path):
    path = tmp_path / "q"
    q = make(path)
    q.put(recs(0, 5))
    q.read(3)
    q.ack()
    q.close()
    raw = bytearray((path / "ack").read_bytes())
    raw[3] ^= 0x55
    (path / "ack").write_bytes(bytes(raw))
    q2 = make(path)
    assert q2.corrupt == 1
    assert drain(q2) == recs(0, 5)  # at-least-once: never skip what may not have been delivered
    q2.close()


def test_size_bound_put_takes_what_fits(tmp_path):
    q = make(tmp_path / "q", max_bytes=10 * 28, segment_bytes=5 * 28)
    assert q.put(recs(0, 15)) == 10
    assert q.put(recs(15, 1)) == 0
    assert q.bytes == 10 * 28
    q.read(5)
    q.ack()  # frees the first segment
    assert q.put(recs(15, 10)) == 5
    assert drain(q) == recs(5, 5) + recs(15, 5)
    q.close()


def test_drop_oldest_frees_whole_segments_and_counts(tmp_path):
    q = make(tmp_path / "q", max_bytes=10 * 28, segment_bytes=5 * 28)
    q.put(recs(0, 10))
    dropped = q.drop_oldest(28)
    assert dropped == 5 and q.dropped_oldest == 5
    assert q.put(recs(10, 5)) == 5
    assert q.take_skipped() == 5
    assert drain(q) == recs(5, 10)
    q.close()


def test_drop_oldest_never_drops_records_in_flight(tmp_path):
    q = make(tmp_path / "q", max_bytes=10 * 28, segment_bytes=5 * 28)
    q.put(recs(0, 10))
    inflight = q.read(2)
    # the unread rest of the first segment (its file stays: it holds the batch in flight), then
    # the whole second segment, which frees its space at once
    assert q.drop_oldest(28) == 8
    assert q.put(recs(10, 6)) == 5
    q.ack()
    assert inflight + drain(q) == recs(0, 2) + recs(10, 5)
    assert q.take_skipped() == 8
    q.close()
    q2 = make(tmp_path / "q", max_bytes=10 * 28, segment_bytes=5 * 28)
    assert len(q2) == 0
    q2.close()


def test_a_record_larger_than_a_segment(tmp_path):
    q = make(tmp_path / "q", segment_bytes=64)
    big = b"x" * 1000
    assert q.put([b"a", big, b"b"]) == 3
    q.close()
    q2 = make(tmp_path / "q", segment_bytes=64)
    assert drain(q2, 1) == [b"a", big, b"b"]
    q2.close()


def test_rewind_reads_the_unacknowledged_records_again(tmp_path):
    q = make(tmp_path / "q", segment_bytes=100)
    q.put(recs(0, 10))
    assert q.read(3) == recs(0, 3)
    q.ack()
    assert q.read(4) == recs(3, 4)
    q.rewind()
    assert len(q) == 7
    assert drain(q) == recs(3, 7)
    q.close()


def test_enospc_rolls_back_to_whole_records(tmp_path, monkeypatch):
    q = make(tmp_path / "q")
    q.put(recs(0, 2))
    real_write = os.write
    calls = {"n": 0}

    def short_then_fail(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:13])  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError):
        q.put(recs(2, 3))
    monkeypatch.setattr(os, "write", real_write)
    assert len(q) == 2
    q.put(recs(5, 1))
    assert drain(q) == recs(0, 2) + recs(5, 1)
    q.close()
    q2 = make(tmp_path / "q")
    assert q2.corrupt == 0
    q2.close()
