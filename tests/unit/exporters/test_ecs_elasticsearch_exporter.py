"""Elasticsearch exporter without a server: per-item outcomes of bulk answers (a table of cases), the
retry of only failed items, config validation, client arguments and secrets."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from siemhub.collector.core.event import decode_json
from siemhub.exporters.base import Outcome
from siemhub.exporters.elasticsearch import (
    ElasticsearchConfig, ElasticsearchExporter, _Unreachable, client_kwargs, fingerprint, ilm_policy, template_body,
)

from tests.unit.exporters.formats.test_ecs_format import EVENTS


def cfg(**kw) -> ElasticsearchConfig:
    return ElasticsearchConfig.model_validate({"type": "elasticsearch", "hosts": ["https://es:9200"], **kw})


class Scripted(ElasticsearchExporter):
    """Answers bulk requests from a script of per-item statuses; records which _ids were sent."""

    def __init__(self, answers, **kw):
        super().__init__("es", cfg(setup=False, **kw))
        self.answers = list(answers)
        self.sent_ids: list[list[str]] = []

    def _request(self, method, path, body=None, params=None, ndjson=False):
        assert (method, path, ndjson) == ("POST", "/_bulk", True)
        lines = body.decode().splitlines()
        self.sent_ids.append([json.loads(a)["create"]["_id"] for a in lines[::2]])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            return answer, {"error": {"type": "x"}}
        items = [{"create": {"status": s, **({"error": {"type": t, "reason": f"why {t}"}} if t else {})}}
                 for s, t in answer]
        return 200, {"errors": any(s >= 300 for s, _ in answer), "items": items}


def events(n=4):
    base = [decode_json(t) for t in EVENTS.values()]
    return [base[i % 3].__class__(**{**{f: getattr(base[i % 3], f) for f in base[0].__struct_fields__},
                                     "id": f"id-{i}"}) for i in range(n)]


def test_encode_is_create_into_data_streams_with_event_id():
    ex = ElasticsearchExporter("es", cfg(namespace="prod"))
    p = ex.encode(events(3))
    action, source = p.items[0].decode().splitlines()
    assert json.loads(action) == {"create": {"_index": "logs-siemhub.process-prod", "_id": "id-0"}}
    assert json.loads(source)["event"]["id"] == "id-0"
    assert json.loads(p.items[2].decode().splitlines()[0])["create"]["_index"] == "logs-siemhub.agent-prod"


CASES = [  # per-item statuses -> batch outcome, items left pending
    ([(201, None)] * 4, Outcome.DONE, []),
    ([(201, None), (409, "version_conflict_engine_exception"), (201, None), (201, None)], Outcome.DONE, []),
    ([(201, None), (429, "es_rejected_execution_exception"), (201, None), (503, "unavailable_shards_exception")],
     Outcome.RETRY, [1, 3]),
    ([(201, None), (400, "document_parsing_exception"), (201, None), (201, None)], Outcome.DONE, []),
    ([(400, "document_parsing_exception")] * 4, Outcome.GIVE_UP, []),
]


@pytest.mark.parametrize("statuses,outcome,pending", CASES)
def test_item_outcomes(statuses, outcome, pending):
    ex = Scripted([statuses])
    p = ex.encode(events(4))
    r = ex.send(p)
    assert r.outcome is outcome and p.pending == pending
    for i, o, reason in r.items:
        assert reason == statuses[i][1]
        assert o is (Outcome.RETRY if i in pending else Outcome.GIVE_UP)


def test_retry_resends_only_failed_items_and_keeps_give_ups():
    ex = Scripted([[(201, None), (429, "es_rejected_execution_exception"), (400, "document_parsing_exception"),
                    (429, "es_rejected_execution_exception")],
                   [(409, "version_conflict_engine_exception"), (201, None)]])
    p = ex.encode(events(4))
    first = ex.send(p)
    assert first.outcome is Outcome.RETRY and first.reason == "es_rejected_execution_exception"
    second = ex.send(p)
    assert ex.sent_ids == [["id-0", "id-1", "id-2", "id-3"], ["id-1", "id-3"]]
    assert second.outcome is Outcome.DONE
    assert second.items == [(2, Outcome.GIVE_UP, "document_parsing_exception")]
    assert p.details[2] == "why document_parsing_exception"


@pytest.mark.parametrize("answer,outcome,reason", [
    (429, Outcome.RETRY, "http_429"), (503, Outcome.RETRY, "http_503"),
    # credentials refused: held behind the circuit breaker (base.outcome_for_endpoint), not dead-lettered
    (401, Outcome.RETRY, "http_401"),
    (413, Outcome.GIVE_UP, "http_413"), (_Unreachable("ConnectionError"), Outcome.RETRY, "ConnectionError"),
    (_Unreachable("timeout"), Outcome.RETRY, "TimeoutError"),
])
def test_request_level_failures(answer, outcome, reason):
    ex = Scripted([answer])
    r = ex.send(ex.encode(events(2)))
    assert (r.outcome, r.reason) == (outcome, reason)


def test_bulk_requests_are_split_by_size():
    ex = Scripted([[(201, None)]] * 10, max_bulk_bytes=1024)
    p = ex.encode(events(6))
    assert ex.send(p).outcome is Outcome.DONE
    assert len(ex.sent_ids) > 1 and sum(map(len, ex.sent_ids)) == 6


def test_config_validation():
    with pytest.raises(ValidationError, match="hosts or cloud_id"):
        ElasticsearchConfig.model_validate({"type": "elasticsearch"})
    with pytest.raises(ValidationError, match="namespace"):
        cfg(namespace="Bad-Name")
    with pytest.raises(ValidationError, match="go together"):
        cfg(username="u")
    with pytest.raises(ValidationError, match="not both"):
        cfg(username="u", password="p", api_key="k")
    with pytest.raises(ValidationError, match="client_cert and client_key"):
        cfg(client_cert="c.pem")
    with pytest.raises(ValidationError):
        cfg(unknown_key=1)


def test_client_kwargs_tls_on_by_default_and_auth():
    kw = client_kwargs(cfg(username="elastic", password="s3cret", ca_certs="ca.pem",
                           client_cert="c.pem", client_key="k.pem"))
    assert kw["verify_certs"] is True and kw["ca_certs"] == "ca.pem" and kw["http_compress"] is True
    assert kw["basic_auth"] == ("elastic", "s3cret") and kw["max_retries"] == 0
    assert (kw["client_cert"], kw["client_key"]) == ("c.pem", "k.pem")
    assert client_kwargs(cfg(api_key="id:key"))["api_key"] == ("id", "key")
    assert client_kwargs(cfg(api_key="aWQ6a2V5"))["api_key"] == "aWQ6a2V5"
    cloud = client_kwargs(ElasticsearchConfig.model_validate({"type": "elasticsearch", "cloud_id": "x:eHl6"}))
    assert cloud["cloud_id"] == "x:eHl6" and "hosts" not in cloud


def test_secrets_never_in_repr_or_logs(caplog):
    c = cfg(username="elastic", password="hunter2-secret", insecure=True)
    assert "hunter2" not in repr(c) and "hunter2" not in str(c.model_dump())
    caplog.set_level(logging.DEBUG)
    ex = ElasticsearchExporter("es", c.model_copy(update={"setup": False}))
    ex.start()
    ex.close()
    assert "verification is OFF" in caplog.text and "hunter2" not in caplog.text


def test_template_maps_every_field_and_uses_lifecycle():
    body = template_body(cfg(), "ilm")
    assert body["index_patterns"] == ["logs-siemhub.*-*"] and body["data_stream"] == {}
    assert body["template"]["settings"]["index.lifecycle.name"] == "logs-siemhub"
    assert body["template"]["mappings"]["dynamic"] is False
    dsl = template_body(cfg(), "dsl")
    assert dsl["template"]["lifecycle"] == {"data_retention": "30d"} and "settings" not in dsl["template"]
    assert "composed_of" not in template_body(cfg(flavor="opensearch"), "ism")
    assert ilm_policy(cfg(lifecycle={"delete_after": "7d"}))["phases"]["delete"]["min_age"] == "7d"


def test_fingerprint_ignores_server_normalisation():
    sent = {"template": {"settings": {"index.lifecycle.name": "p"}, "mappings": {"dynamic": False}}, "composed_of": []}
    back = {"template": {"settings": {"index": {"lifecycle": {"name": "p"}}}, "mappings": {"dynamic": "false"}},
            "_meta": {"managed_by": "siemhub"}}
    assert fingerprint(sent) == fingerprint(back)
    assert fingerprint(sent) != fingerprint({**back, "priority": 1})
