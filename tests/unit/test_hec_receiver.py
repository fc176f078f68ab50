"""The HEC receiver of tests/servers/hec.py, which stands in for Splunk's HTTP Event Collector in the
exporter tests: it must answer as Splunk documents (status, code and text), or those tests prove
nothing."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
import urllib3

from tests.servers.hec import HecProcess, HecReceiver, Token

TOKEN = "11111111-2222-3333-4444-555555555555"
ACK_TOKEN = "aaaaaaaa-2222-3333-4444-555555555555"
OFF_TOKEN = "dddddddd-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def hec():
    tokens = [Token(TOKEN), Token(ACK_TOKEN, ack=True), Token(OFF_TOKEN, enabled=False),
              Token("limited-token", indexes=("siemhub",))]
    with HecReceiver(tokens, ack_delay=0.0) as r:
        yield r


@pytest.fixture(scope="module")
def http():
    return urllib3.PoolManager(retries=False)


def post(http, hec, body, token=TOKEN, path="/services/collector/event", headers=None, scheme="Splunk"):
    h = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    h.update(headers or {})
    data = body if isinstance(body, bytes) else "".join(json.dumps(e) for e in body).encode()
    r = http.request("POST", hec.url + path, body=data, headers=h)
    return r.status, json.loads(r.data)


def ev(i=0, **kw):
    return {"time": 1700000000.5 + i, "host": "node-a", "sourcetype": "siemhub:process", "event": {"n": i}, **kw}


def test_success_keeps_events_with_default_index(hec, http):
    before = len(hec.events)
    status, body = post(http, hec, [ev(1), ev(2)])
    assert (status, body) == (200, {"text": "Success", "code": 0})
    got = hec.events[before:]
    assert [e["event"]["n"] for e in got] == [1, 2] and got[0]["index"] == "main"


@pytest.mark.parametrize("token,scheme,status,code,text", [
    (None, "Splunk", 401, 2, "Token is required"),
    (TOKEN, "Bearer", 401, 3, "Invalid authorization"),
    ("not-a-token", "Splunk", 403, 4, "Invalid token"),
    (OFF_TOKEN, "Splunk", 403, 1, "Token disabled"),
])
def test_token_checks(hec, http, token, scheme, status, code, text):
    assert post(http, hec, [ev()], token=token, scheme=scheme) == (status, {"text": text, "code": code})


def test_basic_auth_with_the_token_as_password(hec, http):
    import base64

    basic = base64.b64encode(f"x:{TOKEN}".encode()).decode()
    assert post(http, hec, [ev()], token=basic, scheme="Basic")[0] == 200
    bad = base64.b64encode(b"x:nope").decode()
    assert post(http, hec, [ev()], token=bad, scheme="Basic") == (403, {"text": "Invalid token", "code": 4})


def test_query_string_token_is_refused(hec, http):
    assert post(http, hec, [ev()], path=f"/services/collector/event?token={TOKEN}") == \
        (400, {"text": "Query string authorization is not enabled", "code": 16})


@pytest.mark.parametrize("bad,code,text", [
    ({"time": 1.0, "host": "x"}, 12, "Event field is required"),
    ({"event": ""}, 13, "Event field cannot be blank"),
    ({"event": "x", "time": "yesterday"}, 6, "Invalid data format"),
    ({"event": "x", "host": 5}, 6, "Invalid data format"),
    ({"event": "x", "index": "nope"}, 7, "Incorrect index"),
    ({"event": "x", "fields": {"a": {"nested": "no"}}}, 15, "Error in handling indexed fields"),
    ({"event": "x", "fields": {"a": 1}}, 15, "Error in handling indexed fields"),
])
def test_bad_event_is_named_and_only_earlier_events_are_indexed(hec, http, bad, code, text):
    before = len(hec.events)
    status, body = post(http, hec, [ev(10), ev(11), bad, ev(12)])
    assert status == 400
    assert body == {"text": text, "code": code, "invalid-event-number": 2}
    assert [e["event"]["n"] for e in hec.events[before:]] == [10, 11]


def test_numeric_string_time_and_string_array_fields_are_accepted(hec, http):
    assert post(http, hec, [ev(time="1700000000.25", fields={"a": "x", "b": ["y", "z"]})])[0] == 200


def test_malformed_json_and_empty_body(hec, http):
    assert post(http, hec, b'{"event": "a"} {"event": ') == \
        (400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 1})
    assert post(http, hec, b"  \n") == (400, {"text": "No data", "code": 5})


def test_index_allowed_list_of_the_token(hec, http):
    assert post(http, hec, [ev(index="siemhub")], token="limited-token")[0] == 200
    assert post(http, hec, [ev(index="main")], token="limited-token")[1]["code"] == 7


def test_gzip_body(hec, http):
    before = hec.gzip_requests
    data = gzip.compress("\n".join(json.dumps(ev(i)) for i in range(3)).encode())
    assert post(http, hec, data, headers={"Content-Encoding": "gzip"})[0] == 200
    assert hec.gzip_requests == before + 1
    assert post(http, hec, b"not gzip", headers={"Content-Encoding": "gzip"})[1]["code"] == 6


def test_ack_channel_required_and_acks_reported_once(hec, http):
    assert post(http, hec, [ev()], token=ACK_TOKEN) == (400, {"text": "Data channel is missing", "code": 10})
    assert post(http, hec, [ev()], token=ACK_TOKEN, headers={"X-Splunk-Request-Channel": "abc"}) == \
        (400, {"text": "Invalid data channel", "code": 11})
    ch = {"X-Splunk-Request-Channel": str(uuid.uuid4())}
    s0 = post(http, hec, [ev()], token=ACK_TOKEN, headers=ch)
    s1 = post(http, hec, [ev()], token=ACK_TOKEN, headers=ch)
    assert s0 == (200, {"text": "Success", "code": 0, "ackId": 0}) and s1[1]["ackId"] == 1
    ack = json.dumps({"acks": [0, 1, 7]}).encode()
    assert post(http, hec, ack, token=ACK_TOKEN, path="/services/collector/ack", headers=ch) == \
        (200, {"acks": {"0": True, "1": True, "7": False}})
    # reported true once, then forgotten
    assert post(http, hec, ack, token=ACK_TOKEN, path="/services/collector/ack", headers=ch)[1] == \
        {"acks": {"0": False, "1": False, "7": False}}
    # another channel has its own ids
    other = {"X-Splunk-Request-Channel": str(uuid.uuid4())}
    assert post(http, hec, [ev()], token=ACK_TOKEN, headers=other)[1]["ackId"] == 0


def test_lost_request_is_never_acknowledged(hec, http):
    ch = {"X-Splunk-Request-Channel": str(uuid.uuid4())}
    hec.lose_acks(1)
    before = hec.event_count
    ack_id = post(http, hec, [ev()], token=ACK_TOKEN, headers=ch)[1]["ackId"]
    assert hec.event_count == before  # not indexed
    body = json.dumps({"acks": [ack_id]}).encode()
    assert post(http, hec, body, token=ACK_TOKEN, path="/services/collector/ack", headers=ch)[1] == \
        {"acks": {str(ack_id): False}}


def test_ack_endpoint_on_a_token_without_ack(hec, http):
    body = json.dumps({"acks": [0]}).encode()
    assert post(http, hec, body, path="/services/collector/ack") == (400, {"text": "ACK is disabled", "code": 14})
    # and the event endpoint ignores a channel for such a token: no ackId
    assert post(http, hec, [ev()], headers={"X-Splunk-Request-Channel": str(uuid.uuid4())}) == \
        (200, {"text": "Success", "code": 0})


def test_busy_mode_answers_503_with_retry_after_then_recovers(hec, http):
    hec.set_busy(2, retry_after=3)
    r = http.request("POST", hec.url + "/services/collector/event", body=json.dumps(ev()).encode(),
                     headers={"Authorization": f"Splunk {TOKEN}"})
    assert r.status == 503 and json.loads(r.data) == {"text": "Server is busy", "code": 9}
    assert r.headers["Retry-After"] == "3"
    h = http.request("GET", hec.url + "/services/collector/health")
    assert (h.status, json.loads(h.data)) == (503, {"text": "HEC is unhealthy, queues are full", "code": 18})
    assert post(http, hec, [ev()])[0] == 503
    assert post(http, hec, [ev()])[0] == 200


def test_health(hec, http):
    h = http.request("GET", hec.url + "/services/collector/health")
    assert (h.status, json.loads(h.data)) == (200, {"text": "HEC is healthy", "code": 17})
    h = http.request("GET", hec.url + "/services/collector/health", headers={"Authorization": "Splunk nope"})
    assert (h.status, json.loads(h.data)) == (400, {"text": "Invalid token", "code": 21})


def test_too_large_body_is_413():
    with HecReceiver([Token(TOKEN)], max_content_length=1000) as r:
        http = urllib3.PoolManager(retries=False)
        status, body = post(http, r, [ev(i) for i in range(50)])
        assert status == 413 and body["code"] == 6
        assert post(http, r, [ev()])[0] == 200  # the connection and server are fine afterwards


def test_keep_alive_reuses_one_connection(hec):
    pool = urllib3.HTTPConnectionPool("127.0.0.1", hec.port, maxsize=1, retries=False)
    for _ in range(5):
        r = pool.request("POST", "/services/collector/event", body=json.dumps(ev()).encode(),
                         headers={"Authorization": f"Splunk {TOKEN}"})
        assert r.status == 200
    assert pool.num_connections == 1


def test_separate_process_with_controls():
    with HecProcess([TOKEN], ack=True) as p:
        http = urllib3.PoolManager(retries=False)
        ch = {"Authorization": f"Splunk {TOKEN}", "X-Splunk-Request-Channel": str(uuid.uuid4())}
        r = http.request("POST", p.url + "/services/collector/event", body=json.dumps(ev(5)).encode(), headers=ch)
        assert json.loads(r.data)["ackId"] == 0
        p.control(busy=1)
        r = http.request("POST", p.url + "/services/collector/event", body=json.dumps(ev(6)).encode(), headers=ch)
        assert r.status == 503
        assert [e["event"]["n"] for e in p.events()] == [5]
        assert p.stats()["events"] == 1
