"""A durable FIFO of opaque records: append-only segment files in one directory, one per exporter.

    <dir>/0000000000000001.seg   records: u32 length, u32 CRC32(payload), payload   (files 0600)
    <dir>/ack                    u64 segment, u64 offset, u32 CRC32 of those 16 bytes
    (the directory is 0700: events carry command lines)

A writer appends to the last segment and starts a new one past `segment_bytes`. The reader hands out
records after the read position; `ack()` moves the acknowledged position up to the read position and
deletes segments it has left behind. Only acknowledged records are gone after a crash: on open,
reading resumes at the acknowledged position, so what was read but not acknowledged is delivered
again (at-least-once).

Open scans every unacknowledged record. A record that is torn (a crash in the middle of a write) or
fails its CRC ends the valid part of its segment: the rest of the segment is skipped and counted in
`corrupt` (corruption cannot be resynchronised inside a segment; later segments are read as usual).
The last segment is truncated to its valid part so that no later write lands after garbage.

`max_bytes` bounds the segment files on disk; `put` takes what fits and tells the caller the rest did
not, and the caller applies its full-policy (block, drop_newest, or `drop_oldest()` here). Thread-safe:
producers append while one worker reads.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import zlib
from collections.abc import Sequence

_HDR = struct.Struct("<II")
_ACK = struct.Struct("<QQI")
MAX_RECORD = 64 * 1024 * 1024  # a length beyond this is corruption, not a record
_CHUNK = 1 << 20


def _seg_name(seg: int) -> str:
    return f"{seg:016d}.seg"


class DiskQueueError(OSError):
    pass


class DiskQueue:
    def __init__(self, path: str, max_bytes: int, segment_bytes: int, fsync: str = "batch") -> None:
        if fsync not in ("never", "batch", "always"):
            raise ValueError(f"fsync must be never, batch or always, not {fsync!r}")
        self.path = path
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self.corrupt = 0  # corrupt or torn records found (each ends the valid part of a segment)
        self.corrupt_dropped = 0  # records known to be lost behind corruption found while reading
        self.dropped_oldest = 0
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        self._segs: list[int] = []  # segment ids, oldest first; the last is the write segment
        self._sizes: dict[int, int] = {}  # bytes of each segment file
        self._limit: dict[int, int] = {}  # end of the valid part of each segment
        self._counts: dict[int, int] = {}  # unread records per segment
        self._unread = 0
        self._inflight = 0  # read, not yet acknowledged
        self._skipped = 0  # unread records dropped (oldest / corrupt) since the last take_skipped()
        self._rseg, self._roff = 0, 0  # read position
        self._aseg, self._aoff = 0, 0  # acknowledged position
        self._rfd: int | None = None
        self._rfd_seg = -1
        self._wfd = -1
        self._dirty = False
        self._ack_fd = os.open(os.path.join(path, "ack"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._recover()

    # --- open -----------------------------------------------------------------------------------

    def _recover(self) -> None:
        names = sorted(n for n in os.listdir(self.path) if n.endswith(".seg") and n[:-4].isdigit())
        segs = [int(n[:-4]) for n in names]
        raw = os.pread(self._ack_fd, _ACK.size, 0)
        aseg = aoff = 0
        if len(raw) == _ACK.size:
            s, o, crc = _ACK.unpack(raw)
            if zlib.crc32(raw[:16]) == crc:
                aseg, aoff = s, o
            else:
                self.corrupt += 1  # unreadable position: start from the oldest record (redeliver)
        for seg in segs:
            if seg < aseg:
                self._unlink(seg)
        segs = [s for s in segs if s >= aseg]
        if not segs or segs[0] != aseg:
            aoff = 0
        for seg in segs:
            start = aoff if seg == segs[0] else 0
            size = os.stat(self._seg_path(seg)).st_size
            count, end = self._scan(seg, start, size)
            if end < size:
                self.corrupt += 1
                if seg == segs[-1]:  # a torn tail: cut it so the file is clean again
                    with open(self._seg_path(seg), "r+b") as f:
                        f.truncate(end)
                    size = end
            self._sizes[seg], self._limit[seg], self._counts[seg] = size, end, count
            self._unread += count
        self._segs = segs
        # New records go to a new segment (the old ones stay as they were found), numbered after
        # both the last segment and the acknowledged one, so the ack never points past new data.
        self._new_segment(max(segs[-1] if segs else 0, aseg) + 1)
        self._aseg, self._aoff = self._segs[0], (aoff if segs else 0)
        self._rseg, self._roff = self._aseg, self._aoff

    def _scan(self, seg: int, start: int, size: int) -> tuple[int, int]:
        """(valid records, end of the valid part) of a segment from `start`."""
        count, off = 0, start
        with open(self._seg_path(seg), "rb") as f:
            f.seek(start)
            buf, base = b"", start
            while True:
                rel = off - base
                if len(buf) - rel < _HDR.size:
                    buf, base = buf[rel:] + f.read(_CHUNK), off
                    rel = 0
                    if len(buf) < _HDR.size:
                        return count, off
                length, crc = _HDR.unpack_from(buf, rel)
                if length > MAX_RECORD or off + _HDR.size + length > size:
                    return count, off
                if len(buf) - rel < _HDR.size + length:
                    buf, base = buf[rel:] + f.read(max(_CHUNK, _HDR.size + length)), off
                    rel = 0
                payload = memoryview(buf)[rel + _HDR.size : rel + _HDR.size + length]
                if zlib.crc32(payload) != crc:
                    return count, off
                count += 1
                off += _HDR.size + length

    # --- files ----------------------------------------------------------------------------------

    def _seg_path(self, seg: int) -> str:
        return os.path.join(self.path, _seg_name(seg))

    def _unlink(self, seg: int) -> None:
        try:
            os.unlink(self._seg_path(seg))
        except FileNotFoundError:
            pass

    def _new_segment(self, seg: int) -> None:
        fd = os.open(self._seg_path(seg), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        if self._wfd >= 0:
            if self.fsync != "never" and self._dirty:
                os.fsync(self._wfd)
            os.close(self._wfd)
        self._wfd = fd
        self._segs.append(seg)
        self._sizes[seg] = self._limit[seg] = self._counts[seg] = 0
        self._dirty = False

    # --- writer ---------------------------------------------------------------------------------

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def __len__(self) -> int:
        """Records not yet acknowledged (unread + in flight)."""
        return self._unread + self._inflight

    @property
    def unread(self) -> int:
        return self._unread

    def put(self, payloads: Sequence[bytes]) -> int:
        """Append records in order; returns how many were written (a prefix). Stops at the size bound.
        A failed write (ENOSPC...) is rolled back to whole records; it raises only if nothing was
        written, so the caller can tell "full" (0 returned / short count) from a disk error."""
        written = 0
        with self._lock:
            total = self.bytes
            while written < len(payloads):
                seg = self._segs[-1]
                size = self._sizes[seg]
                if size >= self.segment_bytes:
                    self._new_segment(seg + 1)
                    continue
                chunk: list[bytes] = []
                n_bytes = 0
                for p in payloads[written:]:
                    need = _HDR.size + len(p)
                    if total + n_bytes + need > self.max_bytes:
                        break
                    if chunk and size + n_bytes + need > self.segment_bytes:
                        break
                    chunk.append(_HDR.pack(len(p), zlib.crc32(p)))
                    chunk.append(p)
                    n_bytes += need
                if not chunk:
                    break  # full
                data = b"".join(chunk)
                try:
                    self._write_all(data)
                except OSError:
                    self._rollback(seg, size)
                    if written:
                        return written
                    raise
                self._sizes[seg] = self._limit[seg] = size + n_bytes
                n = len(chunk) // 2
                self._counts[seg] += n
                self._unread += n
                total += n_bytes
                written += n
                self._dirty = True
            if written and self.fsync == "always":
                os.fsync(self._wfd)
                self._dirty = False
        return written

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._wfd, view)
            if n == 0:
                raise DiskQueueError(errno.EIO, "short write")
            view = view[n:]

    def _rollback(self, seg: int, size: int) -> None:
        try:
            os.ftruncate(self._wfd, size)
        except OSError:
            # Cannot cut the torn record: start a fresh segment; the next open skips the torn tail.
            self._limit[seg] = size
            self._sizes[seg] = os.fstat(self._wfd).st_size
            try:
                self._new_segment(seg + 1)
            except OSError:
                pass

    def sync(self) -> None:
        """fsync the write segment and the ack file (fsync: batch calls this once per batch)."""
        with self._lock:
            if self.fsync != "never" and self._dirty and self._wfd >= 0:
                os.fsync(self._wfd)
                self._dirty = False

    # --- reader ---------------------------------------------------------------------------------

    def read(self, n: int) -> list[bytes]:
        """Up to n records after the read position (they stay on disk until ack())."""
        out: list[bytes] = []
        with self._lock:
            while len(out) < n and self._unread:
                seg = self._rseg
                limit = self._limit.get(seg, 0)
                if self._roff >= limit or self._counts.get(seg, 0) == 0:
                    if seg == self._segs[-1]:
                        break
                    self._skip_rest(seg)
                    continue
                fd = self._reader_fd(seg)
                want = min(limit - self._roff, max(_CHUNK, 0))
                buf = os.pread(fd, want, self._roff)
                pos = 0
                while len(out) < n and pos + _HDR.size <= len(buf):
                    length, crc = _HDR.unpack_from(buf, pos)
                    end = pos + _HDR.size + length
                    if length > MAX_RECORD or self._roff + end > limit:
                        break
                    if end > len(buf):
                        if pos == 0:  # one record larger than the chunk
                            buf = os.pread(fd, _HDR.size + length, self._roff)
                            if len(buf) < end:
                                break
                        else:
                            break
                    payload = bytes(buf[pos + _HDR.size : end])
                    if zlib.crc32(payload) != crc:
                        self._corrupt_at(seg, self._roff + pos)
                        break
                    out.append(payload)
                    pos = end
                    self._counts[seg] -= 1
                    self._unread -= 1
                    self._inflight += 1
                if pos == 0 and len(out) < n and self._limit[seg] > self._roff:
                    # nothing readable at the read position: corruption that appeared after open
                    self._corrupt_at(seg, self._roff)
                self._roff += pos
        return out

    def _corrupt_at(self, seg: int, off: int) -> None:
        """The rest of `seg` from `off` is unreadable: count it, and never write after it again."""
        self.corrupt += 1
        self._limit[seg] = off
        self._lose_unread(seg)
        if seg == self._segs[-1]:
            self._new_segment(seg + 1)

    def _reader_fd(self, seg: int) -> int:
        if self._rfd_seg != seg:
            if self._rfd is not None:
                os.close(self._rfd)
                self._rfd = None
            self._rfd = os.open(self._seg_path(seg), os.O_RDONLY | os.O_CLOEXEC)
            self._rfd_seg = seg
        return self._rfd  # type: ignore[return-value]

    def _lose_unread(self, seg: int) -> None:
        lost = self._counts.get(seg, 0)
        if lost:
            self._counts[seg] = 0
            self._unread -= lost
            self._skipped += lost
            self.corrupt_dropped += lost

    def _skip_rest(self, seg: int) -> None:
        """Move the read position to the next segment, counting what could not be read."""
        self._lose_unread(seg)
        i = self._segs.index(seg)
        self._rseg, self._roff = self._segs[i + 1], 0
        if self._aseg == seg and self._inflight == 0:
            self._set_ack(self._rseg, 0)

    def take_skipped(self) -> int:
        """Unread records dropped (oldest, corrupt) since the last call: the worker adds them to its
        finished count between batches, when everything before them is done."""
        with self._lock:
            n, self._skipped = self._skipped, 0
        return n

    def rewind(self) -> None:
        """Forget what was read and not acknowledged: it is read again (and after a restart)."""
        with self._lock:
            if self._inflight == 0:
                return
            # Recount from the acknowledged position: cheap enough, and never wrong.
            self._rseg, self._roff = self._aseg, self._aoff
            for seg in self._segs:
                start = self._aoff if seg == self._aseg else 0
                if seg < self._aseg:
                    continue
                count, _ = self._scan(seg, start, self._limit[seg])
                self._counts[seg] = count
            self._unread = sum(self._counts.values())
            self._inflight = 0

    def ack(self) -> None:
        """Acknowledge everything read so far: it will not be delivered again, even after a crash."""
        with self._lock:
            if self._inflight == 0 and (self._aseg, self._aoff) == (self._rseg, self._roff):
                return
            self._inflight = 0
            # At the end of a finished segment, the position is the start of the next: that lets
            # _set_ack delete the finished one now.
            while (self._rseg != self._segs[-1] and self._roff >= self._limit.get(self._rseg, 0)
                   and not self._counts.get(self._rseg, 0)):
                self._rseg, self._roff = self._segs[self._segs.index(self._rseg) + 1], 0
            self._set_ack(self._rseg, self._roff)

    def _set_ack(self, seg: int, off: int) -> None:
        self._aseg, self._aoff = seg, off
        head = struct.pack("<QQ", seg, off)
        os.pwrite(self._ack_fd, head + struct.pack("<I", zlib.crc32(head)), 0)
        if self.fsync == "always":
            os.fsync(self._ack_fd)
        while self._segs and self._segs[0] < seg:
            old = self._segs.pop(0)
            for d in (self._sizes, self._limit, self._counts):
                d.pop(old, None)
            if self._rfd_seg == old and self._rfd is not None:
                os.close(self._rfd)
                self._rfd, self._rfd_seg = None, -1
            self._unlink(old)

    # --- full-policy ----------------------------------------------------------------------------

    def drop_oldest(self, need_bytes: int, disk_full: bool = False) -> int:
        """Free at least `need_bytes` (if possible) by dropping the oldest unread records, a whole
        segment at a time. Returns the number of records dropped. Records in flight are never
        dropped: the segment holding them goes once they are acknowledged, so while a batch is in
        flight the segments after it go first."""
        dropped = 0
        freed_one = not disk_full  # a full file system: free one segment, whatever max_bytes says
        with self._lock:
            while self.bytes + need_bytes > self.max_bytes or not freed_one:
                freed_one = True
                seg = self._rseg
                if seg == self._segs[-1]:
                    if not self._sizes[seg]:
                        break
                    self._new_segment(seg + 1)  # make the write segment droppable
                n = self._counts.get(seg, 0)
                self._counts[seg] = 0
                self._unread -= n
                self._skipped += n
                dropped += n
                i = self._segs.index(seg)
                nxt = self._segs[i + 1]
                if not self._inflight:
                    self._rseg, self._roff = nxt, 0
                    self._set_ack(nxt, 0)  # deletes seg
                elif seg != self._aseg and self._roff == 0:
                    # wholly unread, after the batch in flight: delete it now
                    self._segs.pop(i)
                    for d in (self._sizes, self._limit, self._counts):
                        d.pop(seg, None)
                    if self._rfd_seg == seg and self._rfd is not None:
                        os.close(self._rfd)
                        self._rfd, self._rfd_seg = None, -1
                    self._unlink(seg)
                    self._rseg, self._roff = nxt, 0
                else:
                    # shares its file with records in flight: freed by their ack. Cut it at the read
                    # position so that a rewind does not count the dropped records again.
                    self._limit[seg] = min(self._limit[seg], self._roff)
                    self._rseg, self._roff = nxt, 0
            self.dropped_oldest += dropped
        return dropped

    def close(self) -> None:
        with self._lock:
            if self._wfd >= 0:
                if self.fsync != "never" and self._dirty:
                    os.fsync(self._wfd)
                os.close(self._wfd)
                self._wfd = -1
            if self.fsync != "never":
                os.fsync(self._ack_fd)
            os.close(self._ack_fd)
            if self._rfd is not None:
                os.close(self._rfd)
                self._rfd = None
