"""Tests for siemhub.collector.delivery.buffers through a runner: the disk buffer (order, restarts,
full policies), the memory buffer's full policies, and the delivery watermark."""
from __future__ import annotations

import threading
import time

from siemhub.collector.delivery.settings import BufferConfig
from siemhub.exporters.base import DONE
from tests.unit.delivery.fakes import events, ids, wait_until, RETRY_503, FakeExporter, dropped_metric, accounted, disk


# --- disk buffer -----------------------------------------------------------------------------------



def test_disk_buffer_delivers_in_order_and_acknowledges(make_runner, tmp_path):
    exp = FakeExporter(batch=7, max_wait=0.01, buffer=disk(tmp_path))
    r = make_runner(exp)
    evs = events(100)
    seq = 0
    for i in range(0, 100, 9):
        seq = r.put_many(evs[i:i + 9])
    assert seq == 100
    wait_until(lambda: r.finished == 100)
    assert exp.delivered == ids(evs)
    assert r.buffered == 0
    r.stop(time.monotonic() + 1)
    assert exp.delivered == ids(evs) and r.dropped == {}


def test_disk_buffer_survives_a_dead_backend_and_a_restart(make_runner, tmp_path):
    down = threading.Event()
    down.set()
    exp = FakeExporter(batch=10, max_wait=0.01, retry=(0.01, 0.02, 2.0, 0), buffer=disk(tmp_path),
                       on_send=lambda _i, _n: RETRY_503 if down.is_set() else DONE)
    r = make_runner(exp)
    evs = events(60)
    r.put_many(evs)
    wait_until(lambda: len(exp.attempts) >= 3)
    r.stop(time.monotonic() + 0.1)  # the backend never came back: nothing is dropped, all stays on disk
    assert r.dropped == {} and r.buffered == 60 and r.finished == 0
    assert not list((tmp_path / "var" / "dead-letter").glob("*")) if (tmp_path / "var").exists() else True
    down.clear()
    exp2 = FakeExporter(batch=10, max_wait=0.01, buffer=disk(tmp_path))
    r2 = make_runner(exp2)
    assert r2.recovered == 60 and r2.accepted == 60
    later = events(5)
    assert r2.put_many(later) == 65
    wait_until(lambda: r2.finished == 65)
    assert exp2.delivered == ids(evs) + ids(later)  # the recovered events first, in order
    r2.stop(time.monotonic() + 1)


def test_disk_buffer_full_drop_newest_counts(make_runner, tmp_path):
    exp = FakeExporter(batch=1000, max_wait=30, buffer=disk(tmp_path, max_bytes=8192, when_full="drop_newest"))
    r = make_runner(exp)
    r.put_many(events(500))
    assert 0 < r.accepted < 500
    assert r.dropped == {"buffer_full": 500 - r.accepted}
    assert dropped_metric(r, "buffer_full") == 500 - r.accepted
    r.stop(time.monotonic() + 1)
    assert r.sent == r.accepted


def test_disk_buffer_full_drop_oldest_keeps_the_newest_and_watermarks_hold(make_runner, tmp_path):
    gate = threading.Event()
    exp = FakeExporter(batch=5, max_wait=0.01, buffer=disk(tmp_path, max_bytes=8 * 4096, when_full="drop_oldest"),
                       on_send=lambda _i, _n: (gate.wait(5), DONE)[1])
    r = make_runner(exp)
    evs = events(2000)
    marks = [r.put_many(evs[i:i + 20]) for i in range(0, 2000, 20)]
    assert marks[-1] == 2000
    dropped = r.dropped.get("buffer_full_oldest", 0)
    assert dropped > 0
    gate.set()
    wait_until(lambda: r.finished == 2000)
    assert accounted(r) == 2000
    assert exp.delivered[-20:] == ids(evs[-20:])  # the newest survived
    assert exp.delivered == sorted(exp.delivered, key=lambda x: int(x[1:]))  # still FIFO
    r.stop(time.monotonic() + 1)


class _RecordingEvent(threading.Event):
    """The runner's `_room` event, counting how a blocked producer's waits ended."""

    def __init__(self) -> None:
        super().__init__()
        self.woken = self.timed_out = 0

    def wait(self, timeout=None):
        ok = super().wait(timeout)
        if ok:
            self.woken += 1
        else:
            self.timed_out += 1
        return ok


def test_block_policy_makes_the_producer_wait_instead_of_dropping(make_runner, tmp_path):
    def slow(_ids, _n):
        time.sleep(0.002)
        return DONE

    exp = FakeExporter(batch=8, max_wait=0.005, on_send=slow,
                       buffer=disk(tmp_path, max_bytes=8192, when_full="block"))
    r = make_runner(exp)
    r._room = room = _RecordingEvent()
    evs = events(600)
    for i in range(0, 600, 50):
        r.put_many(evs[i:i + 50])  # wait=False, like a sensor: block still waits
    r.stop(time.monotonic() + 5)
    assert r.dropped == {} and exp.delivered == ids(evs)
    assert room.woken >= 1  # the worker woke the producer when acknowledging frees disk space


def test_memory_block_policy(make_runner):
    exp = FakeExporter(batch=4, max_wait=0.005, queue=10, buffer=BufferConfig(when_full="block"))
    r = make_runner(exp)
    r._room = room = _RecordingEvent()
    evs = events(200)
    for i in range(0, 200, 25):
        r.put_many(evs[i:i + 25])
    r.stop(time.monotonic() + 2)
    assert r.dropped == {} and exp.delivered == ids(evs)
    assert room.woken >= 1  # the worker woke the producer when taking a batch freed room


def test_memory_drop_oldest(make_runner):
    exp = FakeExporter(batch=1000, max_wait=30, queue=10, buffer=BufferConfig(when_full="drop_oldest"))
    r = make_runner(exp)
    evs = events(25)
    assert r.put_many(evs) == 25
    assert r.dropped == {"queue_full_oldest": 15}
    r.stop(time.monotonic() + 1)
    assert exp.delivered == ids(evs[15:])
    assert r.finished == 25


def test_watermark_is_never_ahead_of_delivery(make_runner, tmp_path):
    delivered_upto = []

    def check(batch_ids, _n):
        return DONE

    exp = FakeExporter(batch=6, max_wait=0.002, buffer=disk(tmp_path, max_bytes=8192, when_full="drop_oldest"),
                       on_send=check)
    r = make_runner(exp)
    evs = events(300)
    pos = {e.id: i + 1 for i, e in enumerate(evs)}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            f = r.finished
            with exp.lock:
                got = {pos[x] for x in exp.delivered}
            # every event up to `finished` was delivered or counted as dropped
            missing = [s for s in range(1, f + 1) if s not in got]
            delivered_upto.append((f, len(missing)))
            time.sleep(0.005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        for i in range(0, 300, 30):
            r.put_many(evs[i:i + 30])
        # Every event ends sent or dropped. A put that finds nothing droppable at the front (the only
        # data is the batch in flight) refuses the newest instead ("buffer_full"): those never get a
        # sequence number, so `finished` ends at `accepted`, not at 300.
        wait_until(lambda: accounted(r) == 300 and r.finished == r.accepted, timeout=15)
    finally:
        stop.set()  # never leave the watcher running: it would hold the interpreter open
        t.join()
    assert accounted(r) == 300 and r.accepted == 300 - r.dropped.get("buffer_full", 0)
    # Positions of refused events are never delivered either, and they shift the sequence numbers of
    # the events after them: both kinds of drop bound what may be missing below the watermark.
    dropped = r.dropped.get("buffer_full_oldest", 0) + r.dropped.get("buffer_full", 0)
    assert all(missing <= dropped for _, missing in delivered_upto)
    r.stop(time.monotonic() + 1)
