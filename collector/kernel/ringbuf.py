"""A BPF ring buffer reader that takes every pending record in one Python loop.

bcc's reader calls a Python function through a ctypes trampoline for every record (about 3 µs each
here). This reader maps the ring buffer the way libbpf does and walks the records itself:

  offset 0          consumer page (read-write): consumer_pos, advanced by us
  offset page       producer page (read-only): producer_pos, advanced by the kernel
  offset 2 * page   data pages, mapped twice in a row, so a record that wraps reads contiguously

Each record starts with an 8-byte header: u32 length with BUSY (bit 31, still being written) and
DISCARD (bit 30) flags, then u32 page offset; records are 8-byte aligned. Waiting uses epoll on the
map fd, which the kernel signals on wake-ups (batched by the BPF program).

Memory ordering: the kernel publishes a record with a release store of its header. On x86-64 every
load has acquire semantics, so plain reads here are correct. Other architectures need real acquire
loads, which Python cannot express: `available()` is False there and the sensor uses bcc's reader.
"""

from __future__ import annotations

import mmap
import os
import platform
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def available() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


class RingBuffer:
    def __init__(self, map_fd: int, data_size: int) -> None:
        if data_size & (data_size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self._size = data_size
        self._mask = data_size - 1
        self._consumer = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                                   offset=0)
        self._producer = mmap.mmap(map_fd, page + 2 * data_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                                   offset=page)
        self._data_start = page  # data pages follow the producer page inside the second mapping
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        # wake(): another thread cuts a wait short (the kernel's wake-ups are batched; see process.py)
        self._nudge = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._nudge, select.EPOLLIN)
        # True when the last drain() read up to the producer position it saw: every record reserved before
        # that moment was taken (a busy record or the limit leave it False).
        self.caught_up = False

    def wait(self, timeout: float) -> None:
        """Sleep until the kernel signals new data, wake() is called, or `timeout` seconds pass."""
        if not self.pending():
            for fd, _ in self._epoll.poll(timeout):
                if fd == self._nudge:
                    try:
                        os.eventfd_read(self._nudge)
                    except BlockingIOError:
                        pass

    def wake(self) -> None:
        """End a wait() in progress (or the next one) at once; any thread may call it."""
        os.eventfd_write(self._nudge, 1)

    def pending(self) -> bool:
        return _U64.unpack_from(self._producer, 0)[0] != _U64.unpack_from(self._consumer, 0)[0]

    def drain(self, limit: int = 1 << 30) -> list[bytes]:
        """Copy out up to `limit` committed records and release their space to the kernel."""
        prod_map = self._producer
        cons = _U64.unpack_from(self._consumer, 0)[0]
        prod = _U64.unpack_from(prod_map, 0)[0]
        mask, base = self._mask, self._data_start
        unpack_u32 = _U32.unpack_from
        out: list[bytes] = []
        append = out.append
        while cons < prod and len(out) < limit:
            off = base + (cons & mask)
            hdr = unpack_u32(prod_map, off)[0]
            if hdr & BUSY:
                break  # the kernel is still writing this record: later ones wait for it
            length = hdr & ~(BUSY | DISCARD)
            if not hdr & DISCARD:
                append(prod_map[off + 8 : off + 8 + length])
            cons += (length + 8 + 7) & ~7
        _U64.pack_into(self._consumer, 0, cons)
        self.caught_up = cons >= prod
        return out

    def close(self) -> None:
        self._epoll.close()
        os.close(self._nudge)
        self._consumer.close()
        self._producer.close()
