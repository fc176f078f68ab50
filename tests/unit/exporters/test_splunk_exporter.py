"""The Splunk HEC exporter: config, pure encoding, the answer->outcome table, and its behaviour against
the HEC receiver of tests/servers/hec.py, which stands in for Splunk (no Splunk can be installed here;
the receiver answers with Splunk's documented codes and texts)."""

from __future__ import annotations

import gzip
import json
import logging
import time
import uuid

import pytest
from pydantic import ValidationError

from siemhub.collector.core.event import decode_json
from siemhub.exporters.base import Outcome, load_exporter_class
from siemhub.exporters.splunk import (
    DELIVERED, FAILED, PENDING, SplunkConfig, SplunkExporter, _EpochCache, default_channel, outcome_for_hec,
)
from tests.servers.hec import HecReceiver, Token
from tests.unit.exporters.formats.test_ecs_format import EVENTS, EXTRA

TOKEN = "5f0c8a62-1b7e-4a59-9d3c-6a1e2b3c4d5e"
ACK_TOKEN = "ac0c8a62-1b7e-4a59-9d3c-6a1e2b3c4d5e"


def cfg(url="http://127.0.0.1:1", **kw) -> SplunkConfig:
    return SplunkConfig.model_validate({"type": "splunk", "url": url, "token": TOKEN, **kw})


def make(url, **kw) -> SplunkExporter:
    ex = SplunkExporter("splunk", cfg(url, **kw))
    ex.start()
    return ex


def events(n=None):
    base = [decode_json(t) for t in [*EVENTS.values(), *EXTRA]]
    if n is None:
        return base
    out = []
    for i in range(n):
        e = base[i % len(base)]
        out.append(type(e)(**{**{f: getattr(e, f) for f in e.__struct_fields__}, "id": f"ev-{i}"}))
    return out


# --- config ---


def test_registered_under_splunk():
    assert load_exporter_class("splunk") is SplunkExporter


def test_config_defaults_and_checks():
    c = cfg("https://splunk.example:8088/services/collector/event")
    assert c.url == "https://splunk.example:8088" and c.format == "cim" and not c.insecure
    assert c.batch.max_events == 2000 and c.max_content_length == 1_000_000
    assert cfg(batch={"max_wait": 0.1}).batch.max_events == 2000  # a partial batch keeps the defaults
    for bad in ({"url": "splunk:8088"}, {"sourcetype": "siemhub:{nope}"}, {"channel": "not-a-guid"},
                {"index_by_type": {"proces": "x"}}, {"client_cert": "/c.pem"}, {"format": "ocsf"},
                {"max_content_length": 10**10}, {"token": " "}, {"unknown_key": 1}):
        with pytest.raises(ValidationError):
            cfg(**bad)


def test_channel_is_a_stable_guid():
    assert default_channel("a") == default_channel("a") != default_channel("b")
    uuid.UUID(default_channel("a"))


def test_token_never_in_repr_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    c = cfg()
    assert TOKEN not in repr(c) and TOKEN not in str(c.model_dump())
    with HecReceiver([Token("other")]) as r:  # refuses our token: error paths log too
        ex = make(r.url, circuit_breaker={"failure_threshold": 1})
        ex.send(ex.encode(events(3)))
        ex.close()
    assert "refused" in caplog.text
    assert TOKEN not in caplog.text


# --- encoding ---


def test_epoch_with_microseconds():
    ep = _EpochCache()
    assert ep("2023-11-14T22:13:27.000000123Z") == b"1700000007.000000"
    assert ep("2023-11-14T22:13:27.123456789Z") == b"1700000007.123456"
    assert ep("2023-11-14T22:13:27.5Z") == b"1700000007.500000"
    assert ep("2023-11-14T22:13:27Z") == b"1700000007.000000"


def test_encode_envelope_per_event_type():
    ex = SplunkExporter("s", cfg(index="sec", index_by_type={"network": "net", "policy_action": "alerts"}))
    evs = events()
    payload = ex.encode(evs)
    objs = [json.loads(x) for x in payload.items]
    by_type: dict = {}
    for e, o in zip(evs, objs):
        by_type.setdefault(e.type, o)  # the first of each type
    exec_ = by_type["process_exec"]
    assert exec_["sourcetype"] == "siemhub:process" and exec_["index"] == "sec" and exec_["host"] == "node-a"
    assert exec_["source"] == "siemhub" and exec_["time"] == 1700000007.0
    assert exec_["event"]["process_path"] == "/usr/bin/curl" and exec_["event"]["vendor_product"] == "siemhub"
    assert exec_["fields"] == {"siemhub_severity": "info", "siemhub_tag": ["k8s"]}
    # no indexed field is also a key of the event: Splunk's KV_MODE=json would extract it a second time
    for line in payload.items:
        o = json.loads(line)
        assert not set(o.get("fields", {})) & set(o["event"])
    assert {t: o["sourcetype"] for t, o in by_type.items()} == {
        "process_exec": "siemhub:process", "process_exit": "siemhub:process", "agent_status": "siemhub:agent",
        "file_access": "siemhub:file", "network_close": "siemhub:network", "network_accept": "siemhub:network",
        "dns_query": "siemhub:network", "network_flow": "siemhub:network",
        "privilege_change": "siemhub:privilege", "policy_action": "siemhub:policy"}
    assert by_type["network_close"]["index"] == "net" and by_type["policy_action"]["index"] == "alerts"
    assert by_type["policy_action"]["fields"]["siemhub_policy"] == "fim"
    # pure: the same batch gives the same bytes
    assert ex.encode(evs).items == payload.items


@pytest.mark.parametrize("fmt,probe", [("native", lambda o: o["process"]["binary"]),
                                       ("ecs", lambda o: o["process"]["executable"]),
                                       ("cim", lambda o: o["process_path"])])
def test_formats_over_hec(fmt, probe):
    ex = SplunkExporter("s", cfg(format=fmt, sourcetype="siemhub:{format}:{type}", indexed_fields=False))
    o = json.loads(ex.encode(events()[:1]).items[0])
    assert probe(o["event"]) == "/usr/bin/curl"
    assert o["sourcetype"] == f"siemhub:{fmt}:process_exec" and "fields" not in o and "index" not in o


# --- the answer -> outcome table ---


@pytest.mark.parametrize("status,code,invalid,outcome,how", [
    (200, 0, None, Outcome.DONE, ""),
    (400, 6, 3, Outcome.GIVE_UP, "event"),
    (400, 7, 0, Outcome.GIVE_UP, "event"),
    (400, 12, 1, Outcome.GIVE_UP, "event"),
    (400, 13, 1, Outcome.GIVE_UP, "event"),
    (400, 15, 2, Outcome.GIVE_UP, "event"),
    (400, 6, None, Outcome.GIVE_UP, "split"),
    (413, None, None, Outcome.GIVE_UP, "split"),
    (401, 2, None, Outcome.RETRY, "config"),
    (401, 3, None, Outcome.RETRY, "config"),
    (403, 1, None, Outcome.RETRY, "config"),
    (403, 4, None, Outcome.RETRY, "config"),
    (400, 10, None, Outcome.RETRY, "config"),
    (400, 11, None, Outcome.RETRY, "config"),
    (503, 9, None, Outcome.RETRY, ""),
    (503, 18, None, Outcome.RETRY, ""),
    (429, None, None, Outcome.RETRY, ""),
    (500, 8, None, Outcome.RETRY, ""),
    (404, 404, None, Outcome.RETRY, "config"),  # not a HEC URL: an operator must act, events kept
    (405, None, None, Outcome.RETRY, "config"),
    (501, None, None, Outcome.GIVE_UP, ""),
])
def test_outcome_for_hec(status, code, invalid, outcome, how):
    a = outcome_for_hec(status, code, invalid)
    assert (a.outcome, a.how) == (outcome, how)
    if outcome is not Outcome.DONE:
        assert a.reason.startswith(f"hec_{status}")


# --- against the receiver ---


@pytest.fixture
def hec():
    with HecReceiver([Token(TOKEN, indexes=("main", "siemhub")), Token(ACK_TOKEN, ack=True)], ack_delay=0.05) as r:
        yield r


def test_batched_gzip_requests_bounded_by_bytes(hec):
    ex = make(hec.url, max_content_length=20_000, index="siemhub", health_check=False)
    evs = events(300)
    assert ex.send(ex.encode(evs)).outcome is Outcome.DONE
    assert len(hec.events) == 300 and hec.requests >= 300 * 1000 // 20_000
    assert hec.gzip_requests == hec.requests  # every request was large enough to be compressed
    assert {e["index"] for e in hec.events} == {"siemhub"}
    assert sorted(e["event"]["event_id"] for e in hec.events) == sorted(e.id for e in evs)
    assert all(h == f"Splunk {TOKEN}" for h in hec.auth_headers)
    ex.close()


def test_bad_events_are_given_up_alone_and_the_rest_delivered(hec):
    ex = make(hec.url, max_content_length=5_000)
    evs = events(40)
    payload = ex.encode(evs)
    # two events Splunk refuses: a wrong index, and a blank event
    bad_index = json.loads(payload.items[7])
    bad_index["index"] = "no_such_index"
    payload.items[7] = json.dumps(bad_index).encode() + b"\n"
    blank = json.loads(payload.items[23])
    blank["event"] = ""
    payload.items[23] = json.dumps(blank).encode() + b"\n"
    res = ex.send(payload)
    assert res.outcome is Outcome.DONE
    assert [(i, o, r) for i, o, r in res.items] == [(7, Outcome.GIVE_UP, "hec_400_incorrect_index"),
                                                    (23, Outcome.GIVE_UP, "hec_400_event_field_blank")]
    assert payload.details[7] == "Incorrect index"
    got = sorted(e["event"]["event_id"] for e in hec.events)
    assert got == sorted(e.id for i, e in enumerate(evs) if i not in (7, 23))  # each once, none lost
    ex.close()


def test_413_is_split_until_delivered():
    with HecReceiver([Token(TOKEN)], max_content_length=4000) as r:
        ex = make(r.url, max_content_length=50_000, compression=False)
        res = ex.send(ex.encode(events(30)))
        assert res.outcome is Outcome.DONE and res.items == []
        assert len(r.events) == 30
        ex.close()


def test_busy_503_is_retried_after_retry_after(hec):
    hec.set_busy(1, retry_after=1)
    ex = make(hec.url)
    payload = ex.encode(events(10))
    res = ex.send(payload)
    assert res.outcome is Outcome.RETRY and res.reason == "hec_503_code_9"
    assert set(payload.state) == {PENDING}
    t0 = time.monotonic()
    assert ex.send(payload).outcome is Outcome.DONE  # waits for Retry-After first
    assert time.monotonic() - t0 >= 0.9
    assert len(hec.events) == 10
    ex.close()


def test_bad_token_is_a_retry_with_one_clear_error(hec, caplog):
    ex = SplunkExporter("s", SplunkConfig.model_validate({"type": "splunk", "url": hec.url, "token": "wrong"}))
    ex.start()
    payload = ex.encode(events(5))
    for _ in range(3):
        res = ex.send(payload)
        assert res.outcome is Outcome.RETRY and res.reason == "hec_403_invalid_token"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Invalid token" in errors[0].getMessage() and "`token`" in errors[0].getMessage()
    assert ex.health == (400, "Invalid token")  # the health check said so at start, without failing it
    ex.close()


def test_ack_waits_for_indexer_acknowledgement(hec):
    ex = SplunkExporter("s", SplunkConfig.model_validate(
        {"type": "splunk", "url": hec.url, "token": ACK_TOKEN, "ack": True, "ack_interval": 0.05,
         "max_content_length": 10_000}))
    ex.start()
    payload = ex.encode(events(50))
    rnd = ex.submit(payload)
    first = ex.poll(rnd, 0.0)
    assert first is None  # answered 200 with ackIds, not yet acknowledged
    res = ex.send(payload) if first else None
    while res is None:
        res = ex.poll(rnd, 0.1)
    assert res.outcome is Outcome.DONE and set(payload.state) == {DELIVERED}
    assert hec.ack_queries >= 1 and len(hec.events) == 50
    ex.close()


def test_unacknowledged_request_is_resent_after_ack_timeout(hec):
    ex = SplunkExporter("s", SplunkConfig.model_validate(
        {"type": "splunk", "url": hec.url, "token": ACK_TOKEN, "ack": True, "ack_interval": 0.05,
         "ack_timeout": 0.5}))
    ex.start()
    hec.lose_acks(1)
    payload = ex.encode(events(20))
    res = ex.send(payload)
    assert res.outcome is Outcome.RETRY and res.reason == "hec_ack_timeout"
    assert len(hec.events) == 0
    assert ex.send(payload).outcome is Outcome.DONE
    assert len(hec.events) == 20
    ex.close()


def test_ack_disabled_on_token_falls_back_to_the_200(hec, caplog):
    ex = make(hec.url, ack=True, ack_interval=0.01)  # TOKEN has no indexer acknowledgement
    res = ex.send(ex.encode(events(5)))
    assert res.outcome is Outcome.DONE and len(hec.events) == 5
    assert "counting the 200" in caplog.text
    ex.close()


def test_ack_endpoint_4xx_falls_back_once(hec, caplog):
    ex = SplunkExporter("s", SplunkConfig.model_validate(
        {"type": "splunk", "url": hec.url, "token": ACK_TOKEN, "ack": True, "ack_interval": 0.01}))
    ex.start()
    # the token stops doing acks after the events were accepted with ackIds
    rnd = ex.submit(ex.encode(events(5)))
    while any(not r.future.done() for r in rnd.requests):
        time.sleep(0.01)
    hec.tokens[ACK_TOKEN].ack = False
    res = None
    while res is None:
        res = ex.poll(rnd, 0.1)
    assert res.outcome is Outcome.DONE
    assert caplog.text.count("ack endpoint answered HTTP 400") == 1
    ex.close()


def test_unreachable_is_retry_not_crash():
    ex = make("http://127.0.0.1:9", request_timeout=1)
    assert ex.health[0] == 0
    res = ex.send(ex.encode(events(3)))
    assert res.outcome is Outcome.RETRY and res.reason == "ConnectionError"
    ex.close()


def test_state_marks():
    assert (PENDING, DELIVERED, FAILED) == (0, 1, 2)


def test_gzip_body_is_valid(hec):
    ex = make(hec.url)
    payload = ex.encode(events(20))
    body = b"".join(payload.items)
    c = __import__("zlib").compressobj(1, 8, 31)
    assert gzip.decompress(c.compress(body) + c.flush()) == body
    ex.close()


def test_tls_verified_by_default_with_ca_certs_and_insecure(tmp_path, caplog):
    from tests.servers.tlscert import self_signed

    cert, key = self_signed(tmp_path)
    with HecReceiver([Token(TOKEN)], certfile=str(cert), keyfile=str(key)) as r:
        assert r.url.startswith("https://")
        ex = make(r.url)  # the self-signed certificate is not trusted: nothing is sent, events kept
        res = ex.send(ex.encode(events(3)))
        assert res.outcome is Outcome.RETRY and res.reason == "hec_tls_error"
        assert "TLS" in caplog.text and len(r.events) == 0
        ex.close()
        ex = make(r.url, ca_certs=str(cert))
        assert ex.send(ex.encode(events(3))).outcome is Outcome.DONE
        ex.close()
        ex = make(r.url, insecure=True)
        assert ex.send(ex.encode(events(3))).outcome is Outcome.DONE
        assert "verification is OFF" in caplog.text
        ex.close()
        assert len(r.events) == 6


def test_doc_config_table_matches_the_model():
    from pathlib import Path

    from pydantic import BaseModel

    doc = (Path(__file__).resolve().parents[3] / "docs" / "exporters" / "splunk.md").read_text(encoding="utf-8")
    table = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out = set()
        for name, f in model.model_fields.items():
            sub = f.annotation if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) else None
            out |= keys(sub, f"{prefix}{name}.") if sub else {prefix + name}
        return out

    assert table == keys(SplunkConfig)


def test_ack_ids_restarting_after_a_splunk_restart_do_not_count_for_the_lost_request(hec):
    ex = SplunkExporter("s", SplunkConfig.model_validate(
        {"type": "splunk", "url": hec.url, "token": ACK_TOKEN, "ack": True, "ack_interval": 0.05,
         "health_check": False}))
    ex.start()
    hec.lose_acks(1)
    first = ex.encode(events(5))
    a = ex.submit(first)  # ackId 0, never indexed
    while any(not r.future.done() for r in a.requests):
        time.sleep(0.01)
    hec._channels.clear()  # Splunk restarts: unacknowledged ids are gone, ids start again at 0
    b = ex.submit(ex.encode(events(5)))  # ackId 0 again, indexed
    res_a = None
    while res_a is None:
        res_a = ex.poll(a, 0.1)
    assert res_a.outcome is Outcome.RETRY and res_a.reason == "hec_ack_id_reused"
    assert set(first.state) == {PENDING}
    res_b = None
    while res_b is None:
        res_b = ex.poll(b, 0.1)
    assert res_b.outcome is Outcome.DONE
    assert ex.send(first).outcome is Outcome.DONE  # re-sent: now indexed
    assert len(hec.events) == 10
    ex.close()
