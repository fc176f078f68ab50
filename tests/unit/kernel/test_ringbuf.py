"""collector/kernel/ringbuf.py against a ring laid out in a memfd the way the kernel lays out a BPF ring buffer
(consumer page, producer page, data pages): records, BUSY and DISCARD headers, and `caught_up`, which
the process sensor's read-up-to time depends on (collector/sensors/attribution.py)."""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time

import pytest

from siemhub.collector.kernel import ringbuf

PAGE = mmap.PAGESIZE
SIZE = 4 * PAGE


_real_epoll = select.epoll


class _Epoll:  # epoll refuses regular files (the memfd standing in for the map): leave that one out
    def __init__(self):
        self._ep = _real_epoll()

    def register(self, fd, mask):
        try:
            self._ep.register(fd, mask)
        except PermissionError:
            pass

    def poll(self, timeout):
        return self._ep.poll(timeout)

    def close(self):
        self._ep.close()


@pytest.fixture
def ring(monkeypatch):
    monkeypatch.setattr(ringbuf.select, "epoll", _Epoll)
    fd = os.memfd_create("ringbuf-test")
    os.ftruncate(fd, PAGE + PAGE + 2 * SIZE)
    mem = mmap.mmap(fd, PAGE + PAGE + 2 * SIZE)
    rb = ringbuf.RingBuffer(fd, SIZE)
    state = {"prod": 0}

    def put(payload: bytes, busy: bool = False, discard: bool = False) -> int:
        """Write one record at the producer position; returns its offset in the data pages."""
        at = state["prod"]
        hdr = len(payload) | (ringbuf.BUSY if busy else 0) | (ringbuf.DISCARD if discard else 0)
        struct.pack_into("<II", mem, 2 * PAGE + at, hdr, 0)
        mem[2 * PAGE + at + 8: 2 * PAGE + at + 8 + len(payload)] = payload
        state["prod"] = at + ((len(payload) + 8 + 7) & ~7)
        struct.pack_into("<Q", mem, PAGE, state["prod"])
        return at

    def commit(at: int) -> None:
        hdr = struct.unpack_from("<I", mem, 2 * PAGE + at)[0]
        struct.pack_into("<I", mem, 2 * PAGE + at, hdr & ~ringbuf.BUSY)

    yield rb, put, commit
    rb.close()
    mem.close()
    os.close(fd)


def test_drain_takes_committed_records_and_skips_discarded(ring):
    rb, put, _ = ring
    put(b"one")
    put(b"gone", discard=True)
    put(b"three!!!!")
    assert rb.pending()
    assert rb.drain() == [b"one", b"three!!!!"]
    assert rb.caught_up and not rb.pending()


def test_a_busy_record_stops_the_drain_and_it_is_not_caught_up(ring):
    rb, put, commit = ring
    put(b"a")
    busy = put(b"b", busy=True)
    put(b"c")  # committed, but behind a record still being written
    assert rb.drain() == [b"a"]
    assert not rb.caught_up
    commit(busy)
    assert rb.drain() == [b"b", b"c"]
    assert rb.caught_up


def test_the_limit_leaves_it_not_caught_up(ring):
    rb, put, _ = ring
    for i in range(5):
        put(b"r%d" % i)
    assert rb.drain(3) == [b"r0", b"r1", b"r2"] and not rb.caught_up
    assert rb.drain(3) == [b"r3", b"r4"] and rb.caught_up
    assert rb.drain(3) == [] and rb.caught_up


def test_wake_cuts_a_wait_short_from_another_thread(ring):
    rb, _, _ = ring
    t = time.monotonic()
    rb.wait(0.05)  # nothing: the whole timeout
    assert time.monotonic() - t >= 0.04
    threading.Timer(0.1, rb.wake).start()
    t = time.monotonic()
    rb.wait(10)
    assert time.monotonic() - t < 5
    t = time.monotonic()
    rb.wait(0.05)  # the wake-up was consumed: a full wait again
    assert time.monotonic() - t >= 0.04
