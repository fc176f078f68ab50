"""Tests for siemhub.collector.delivery.deadletter through a runner: what is given up goes to the
dead-letter file or another exporter, tagged; disabled dead letters are only counted."""
from __future__ import annotations

import threading
import time

from siemhub.collector.delivery.settings import DeadLetterConfig
from siemhub.collector.metrics import Metrics
from siemhub.exporters.base import DONE, Outcome, SendResult
from tests.unit.delivery.fakes import events, ids, wait_until, RETRY_503, FakeExporter, accounted


# --- dead letters ----------------------------------------------------------------------------------


def read_dead_letters(path) -> list[dict]:
    import json

    return [json.loads(line) for line in open(path, "rb")]


def test_give_up_and_failed_items_go_to_the_dead_letter_file(make_runner, tmp_path):
    import os
    import stat

    def answer(batch_ids, attempt):
        if attempt == 1:
            return SendResult(Outcome.GIVE_UP, "http_400")
        return SendResult(Outcome.DONE, items=[(1, Outcome.GIVE_UP, "mapper_parsing")])

    exp = FakeExporter(batch=3, max_wait=0.01, on_send=answer)
    r = make_runner(exp)
    evs = events(6)
    r.put_many(evs)
    wait_until(lambda: accounted(r) == 6)
    r.stop(time.monotonic() + 1)
    path = tmp_path / "var" / "dead-letter" / "fake.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    recs = read_dead_letters(path)
    assert [(d["event"]["id"], d["reason"], d["attempts"], d["exporter"]) for d in recs] == [
        (evs[0].id, "http_400", 1, "fake"), (evs[1].id, "http_400", 1, "fake"), (evs[2].id, "http_400", 1, "fake"),
        (evs[4].id, "mapper_parsing", 1, "fake")]  # attempts: sends of that batch
    assert recs[0]["time"].endswith("Z")
    assert r.dead_lettered == {"http_400": 3, "mapper_parsing": 1}
    assert r._metrics.value("siemhub_exporter_dead_lettered_total", exporter="fake", reason="http_400") == 3


def test_retries_exhausted_are_dead_lettered_with_the_attempt_count(make_runner, tmp_path):
    exp = FakeExporter(batch=4, max_wait=0.01, retry=(0.01, 0.01, 1.0, 0.05), on_send=lambda _i, _n: RETRY_503,
                       dead_letter=DeadLetterConfig(path=str(tmp_path / "dl.jsonl")))
    r = make_runner(exp)
    r.put_many(events(4))
    wait_until(lambda: accounted(r) == 4)
    recs = read_dead_letters(tmp_path / "dl.jsonl")
    assert len(recs) == 4 and {d["reason"] for d in recs} == {"retries_exhausted_http_503"}
    assert recs[0]["attempts"] == len(exp.attempts) >= 3


def test_dead_letters_to_another_exporter_are_tagged(make_runner):
    metrics = Metrics()
    main = FakeExporter("main", batch=2, max_wait=0.01, on_send=lambda _i, _n: SendResult(Outcome.GIVE_UP, "http_413"),
                        dead_letter=DeadLetterConfig(exporter="spare"))
    spare = FakeExporter("spare", batch=2, max_wait=0.01)
    rm, rs = make_runner(main, metrics), make_runner(spare, metrics)
    rm.link({"main": rm, "spare": rs})
    evs = events(4)
    rm.put_many(evs)
    wait_until(lambda: rs.sent == 4)
    assert spare.delivered == ids(evs)
    assert rm.dead_lettered == {"http_413": 4}


def test_dead_letters_disabled_only_count(make_runner, tmp_path):
    exp = FakeExporter(batch=2, max_wait=0.01, on_send=lambda _i, _n: SendResult(Outcome.GIVE_UP, "http_400"),
                       dead_letter=DeadLetterConfig(enabled=False))
    r = make_runner(exp)
    r.put_many(events(2))
    wait_until(lambda: accounted(r) == 2)
    assert r.dropped == {"http_400": 2} and r.dead_lettered == {}
    assert not (tmp_path / "var").exists()


def test_shutdown_leftovers_of_a_memory_queue_are_dead_lettered(make_runner, tmp_path):
    release = threading.Event()
    exp = FakeExporter(batch=5, max_wait=0.01, on_send=lambda _i, _n: (release.wait(3), DONE)[1])
    r = make_runner(exp)
    r.put_many(events(20))
    wait_until(lambda: exp.sending)
    try:
        r.stop(time.monotonic() + 0.05)
    finally:
        release.set()
    assert r.dead_lettered == {"shutdown_deadline": 15}
