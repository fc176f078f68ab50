"""The lifecycle every BPF sensor shares.

One program, compiled and attached in the loader child (collector/kernel/loader_child.py), its ring buffer read in
batches (collector/kernel/ringbuf.py), and its per-CPU counters moved to metrics once a second: messages the
kernel could not queue (`lost`, indexed by message kind) and events dropped by in-kernel filters
(`filtered`, when the program has that map). A sensor subclass says what to compile and how to turn
raw messages into events (`ready`), and what to flush at unload (`flush`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from siemhub.collector.kernel import ringbuf
from siemhub.collector.kernel.maps import u32
from siemhub.collector.kernel.build import compile_program
from siemhub.collector.kernel.loader_child import Loaded
from siemhub.collector.core.event import Event
from siemhub.collector.sensors import Sensor, SensorContext

log = logging.getLogger("siemhub.sensors")
_CHUNK = 4096  # ring-buffer records decoded and routed at a time (see poll)
_CHUNKS_PER_POLL = 64
_NOTHING = object()


class KernelSensor(Sensor):
    program: ClassVar[str]  # bpf/<program>, e.g. "network/network.bpf.c"
    lost_kinds: ClassVar[dict[int, str]]  # index in the program's `lost` map -> metric label
    counts_filtered: ClassVar[bool] = False  # the program drops events in the kernel (`filtered` map)

    def __init__(self, config: Any, ctx: SensorContext) -> None:
        self.config = config
        self.ctx = ctx
        self.poll_interval = config.poll_interval
        self._bpf: Loaded | None = None
        self._rb: ringbuf.RingBuffer | None = None
        self.decode_errors = 0
        self.lost_seen: dict[int, int] = {}
        self.filtered = 0
        self._next_check = 0.0
        m = ctx.metrics
        self._m_events = m.sensor_events.labels(self.name)
        self._m_decode = m.decode_errors
        self._m_lost = m.ringbuf_lost
        self._m_filtered = m.kernel_filtered.labels(self.name)

    # --- for subclasses ---

    # Sensors whose events wait to be named (collector/sensors/attribution.py) set `self.join`; their
    # decode() hands events to it. The defaults below then serve them as they are.
    join: Any = None

    def ready(self, raw: list[bytes]) -> list[Event]:
        """Decode `raw` (possibly empty) and return the events ready to go out."""
        if raw:
            self.decode(raw)
        return self.join.ready()

    def flush(self) -> list[Event]:
        """At unload: whatever still waits (for its process, for its settle time...)."""
        return self.join.ready(force=True) if self.join is not None else []

    def read_until(self, ktime: int) -> None:
        """Called after a poll that took every message the kernel had queued before boot time `ktime`
        (and handed them to ready()). The process sensor publishes it (see attribution.py)."""

    def _open(self, offsets: dict, defines: dict, maps: list[str], pages: int, before_release=None) -> None:
        self._bpf = compile_program(self.program, offsets, defines, maps, before_release=before_release)
        self._rb = ringbuf.RingBuffer(self._bpf.maps["events"].fd, pages * 4096)

    def log_once(self, logger: logging.Logger, what: str, state: Any, msg: str, *args: Any) -> None:
        """Log `msg` at INFO when `state` differs from what was last logged for `what`: the policy
        engine re-applies the same settings at start-up, and that is not news."""
        logged = self.__dict__.setdefault("_logged", {})
        if logged.get(what, _NOTHING) != state:
            logged[what] = state
            logger.info(msg, *args)

    def counters(self) -> dict[str, int]:
        """The counters every kernel sensor has: ring-buffer losses (one total for a program with one
        kind of message, else per kind), decode errors, and in-kernel drops when the program filters."""
        if len(self.lost_kinds) == 1:
            out = {"ringbuf_lost": self.lost}
        else:
            out = {f"ringbuf_lost_{self.lost_kinds[k]}": v for k, v in self.lost_seen.items()}
        out["decode_errors"] = self.decode_errors
        if self.counts_filtered:
            out["kernel_filtered"] = self.filtered
        return out

    def _decode_error(self, reason: str) -> None:
        self.decode_errors += 1
        self._m_decode.labels(self.name, reason).inc()

    @property
    def lost(self) -> int:
        return sum(self.lost_seen.values())

    # --- shared lifecycle ---

    def poll(self, timeout: float) -> int:
        if self._bpf is None:
            return 0
        if timeout > 0:
            self._rb.wait(timeout)
        # Wake-ups are batched: take whatever is there, in chunks, each routed before the next is read. A
        # burst (50,000 processes killed at once) then reaches the exporters' queues a chunk at a time,
        # while their threads drain them, instead of all at once past their bound; what is not read yet
        # waits in the ring buffer.
        n = 0
        # Read before the first drain: a message the kernel committed before this time is in the ring now.
        started = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        rb = self._rb
        for _ in range(_CHUNKS_PER_POLL):  # bounded: a ring that never empties must not hold the thread
            raw = rb.drain(_CHUNK)
            n += len(raw)
            if raw:
                self._m_events.inc(len(raw))
            events = self.ready(raw)
            if events:
                self.ctx.emit(events)
            if len(raw) < _CHUNK:
                break
        if rb.caught_up:
            self.read_until(started)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 1.0
            self.check_counters()
        return n

    def check_counters(self) -> None:
        """Move the kernel's per-CPU counters into metrics (and log losses)."""
        maps = self._bpf.maps
        if "filtered" in maps:
            filtered = sum(maps["filtered"].lookup_percpu_u64(u32(0)))
            if filtered > self.filtered:
                self._m_filtered.inc(filtered - self.filtered)
                self.filtered = filtered
        for kind, name in self.lost_kinds.items():
            total = sum(maps["lost"].lookup_percpu_u64(u32(kind)))
            new = total - self.lost_seen.get(kind, 0)
            if new > 0:
                self.lost_seen[kind] = total
                self._m_lost.labels(self.name, name).inc(new)
                log.warning("%s sensor: kernel could not queue %d %s messages (ring buffer full)",
                            self.name, new, name)

    def unload(self) -> None:
        if self._bpf is None:
            return
        self.poll(0)
        left = self.flush()
        if left:
            self.ctx.emit(left)
        self.check_counters()
        self._rb.close()
        self._rb = None
        self._bpf.close()  # closing the attachments detaches the programs
        self._bpf = None
