"""Elasticsearch / OpenSearch exporter: ECS documents into data streams through the bulk API.

- encode(batch) is pure: one `create` action + ECS source per event, into the data stream
  `logs-siemhub.<dataset>-<namespace>` (Elastic's `{type}-{dataset}-{namespace}` scheme).
- send(payload) posts the events still pending in the payload, split into requests of at most
  `max_bulk_bytes` (gzip), `concurrency` requests at a time, and records each item's outcome in the
  payload. Items answered 429/5xx (es_rejected_execution_exception) stay pending and the result is
  RETRY: the delivery path waits (backoff with jitter) and calls send() with the same payload, which
  re-sends only those items. Items answered 400 (mapping errors) are GIVE_UP with the error type as
  reason (the full message is kept in payload.details for the dead-letter path).
  Status codes become outcomes only in exporters/base.py (outcome_for_endpoint for the request,
  outcome_for_http per item, outcome_for_exception).
- Idempotence: the event id is the document `_id` and the op_type is `create` (the only op_type a data
  stream accepts). A retry of an item the server already stored -- its response was lost, or the
  server restarted after writing it -- is answered 409 version_conflict, which counts as done. So a
  retried batch never duplicates. Caveat: `_id` is unique per backing index; a retry that crosses a
  rollover (minutes apart, at most once per rollover) could store a second copy.
- Setup on start (`setup: true`): lifecycle policy (ILM on Elasticsearch, ISM on OpenSearch; data
  stream lifecycle where the server has no ILM API) and a composable index template with explicit
  mappings for every field the ECS format emits (generated from formats/ecs.FIELDS). Each object
  carries `_meta.managed_by: siemhub` and a fingerprint of its body: an object that is missing or
  still as siemhub wrote it is created or upgraded; one a user changed (fingerprint mismatch) or
  wrote (no siemhub _meta) is left alone with a warning unless `overwrite_templates: true`.
  Customisations belong in the `<template>@custom` component template, which the template includes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from pydantic import Field, SecretStr, field_validator, model_validator

from siemhub.collector.core.event import Event
from siemhub.collector.core.settings import Strict
from siemhub.exporters.base import (
    DONE, Exporter, ExporterConfig, Outcome, SendResult, chunk_by_bytes, outcome_for_endpoint, outcome_for_exception,
    outcome_for_http,
)
from siemhub.exporters.formats import ecs

log = logging.getLogger("siemhub.exporters.elasticsearch")

TEMPLATE_VERSION = 2  # bump when the template or policy body changes (an unmodified one is upgraded)
_FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"
_BAD_NAMESPACE = re.compile(r'[\\/*?"<>| ,#:A-Z-]')


class LifecycleConfig(Strict):
    enabled: bool = True
    policy: str = Field("logs-siemhub", description="ILM/ISM policy name")
    rollover_max_age: str = "1d"
    rollover_max_primary_shard_size: str = "50gb"
    delete_after: str | None = Field("30d", description="retention after rollover; null keeps data forever")


class ElasticsearchConfig(ExporterConfig):
    format: str = "ecs"
    flavor: Literal["elasticsearch", "opensearch"] = "elasticsearch"
    hosts: list[str] = Field(default_factory=list, description="http(s)://host:port URLs")
    cloud_id: str | None = None
    api_key: SecretStr | None = Field(None, description="base64 `id:key`, or `id:key`")
    username: str | None = None
    password: SecretStr | None = None
    ca_certs: str | None = Field(None, description="CA bundle (PEM) to verify the server")
    insecure: bool = Field(False, description="skip TLS verification (logged as a warning)")
    client_cert: str | None = Field(None, description="client certificate (PEM) for mTLS")
    client_key: str | None = Field(None, description="client private key (PEM) for mTLS")
    namespace: str = Field("default", description="data stream namespace: logs-siemhub.<dataset>-<namespace>")
    max_bulk_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="split bulk requests above this size")
    concurrency: int = Field(1, ge=1, le=16, description="bulk requests in flight at once")
    compression: bool = Field(True, description="gzip request bodies")
    request_timeout: float = Field(30.0, gt=0)
    setup: bool = Field(True, description="create/upgrade the index template and lifecycle policy on start")
    overwrite_templates: bool = Field(False, description="replace a template or policy a user modified")
    template: str = Field("logs-siemhub", description="index template name")
    lifecycle: LifecycleConfig = LifecycleConfig()

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not v or len(v.encode()) > 100 or _BAD_NAMESPACE.search(v):
            raise ValueError("lowercase, at most 100 bytes, none of \\ / * ? \" < > | space , # : -")
        return v

    @model_validator(mode="after")
    def _where_and_who(self):
        if not self.hosts and not self.cloud_id:
            raise ValueError("set hosts or cloud_id")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.api_key is not None and self.username is not None:
            raise ValueError("use api_key or username/password, not both")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        if self.flavor == "opensearch" and self.cloud_id:
            raise ValueError("cloud_id is Elastic Cloud only")
        return self


def index_for(event_type: str, namespace: str) -> str:
    return f"logs-{ecs.dataset(event_type)}-{namespace}"


def client_kwargs(cfg: ElasticsearchConfig) -> dict[str, Any]:
    """Arguments of elasticsearch.Elasticsearch for this config. The client does no retries of its
    own (max_retries=0): retries belong to the delivery path, which counts them."""
    kw: dict[str, Any] = {"http_compress": cfg.compression, "request_timeout": cfg.request_timeout,
                          "max_retries": 0, "retry_on_timeout": False}
    if cfg.cloud_id:
        kw["cloud_id"] = cfg.cloud_id
    else:
        kw["hosts"] = list(cfg.hosts)
    if cfg.api_key is not None:
        key = cfg.api_key.get_secret_value()
        kw["api_key"] = tuple(key.split(":", 1)) if ":" in key else key
    if cfg.username is not None:
        kw["basic_auth"] = (cfg.username, cfg.password.get_secret_value())
    if cfg.ca_certs:
        kw["ca_certs"] = cfg.ca_certs
    if cfg.client_cert:
        kw["client_cert"], kw["client_key"] = cfg.client_cert, cfg.client_key
    kw["verify_certs"] = not cfg.insecure
    if cfg.insecure:
        kw["ssl_show_warn"] = False  # warned once, by us, at start
    return kw


def auth_headers(cfg: ElasticsearchConfig) -> dict[str, str]:
    """Authorization header for requests sent through the transport (OpenSearch flavour)."""
    if cfg.api_key is not None:
        key = cfg.api_key.get_secret_value()
        return {"authorization": "ApiKey " + (base64.b64encode(key.encode()).decode() if ":" in key else key)}
    if cfg.username is not None:
        raw = f"{cfg.username}:{cfg.password.get_secret_value()}".encode()
        return {"authorization": "Basic " + base64.b64encode(raw).decode()}
    return {}


# --- templates and policies ----------------------------------------------------------------------


def _normalize(obj: Any, prefix: str = "", out: dict | None = None) -> dict:
    """Flatten to dotted keys with string leaves, so a body compares equal to what a server returns
    for it (servers nest dotted settings and may turn booleans and numbers into strings)."""
    out = {} if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k not in _VOLATILE:
                _normalize(v, f"{prefix}{k}.", out)
    elif isinstance(obj, list):
        if obj:  # an empty list is what a server returns for "none" (composed_of: [])
            out[prefix[:-1]] = json.dumps([_normalize(v) if isinstance(v, dict) else _leaf(v) for v in obj], sort_keys=True)
    else:
        out[prefix[:-1]] = _leaf(obj)
    return out


# keys a server adds or that siemhub keeps out of the fingerprinted body
_VOLATILE = {"_meta", "description", "last_updated_time"}


def _leaf(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(_normalize(body), sort_keys=True).encode()).hexdigest()[:16]


def _with_meta(body: dict) -> dict:
    return {**body, "_meta": {"managed_by": "siemhub", "version": TEMPLATE_VERSION, "fingerprint": fingerprint(body)}}


def template_body(cfg: ElasticsearchConfig, lifecycle: Literal["ilm", "dsl", "ism", "none"]) -> dict:
    template: dict[str, Any] = {"mappings": ecs.mappings(), "settings": {}}
    if lifecycle == "ilm":
        template["settings"]["index.lifecycle.name"] = cfg.lifecycle.policy
    elif lifecycle == "dsl" and cfg.lifecycle.delete_after:
        template["lifecycle"] = {"data_retention": cfg.lifecycle.delete_after}
    if not template["settings"]:
        del template["settings"]
    body: dict[str, Any] = {"index_patterns": ["logs-siemhub.*-*"], "data_stream": {}, "priority": 200,
                            "template": template}
    if cfg.flavor == "elasticsearch":  # OpenSearch has no ignore_missing_component_templates
        custom = f"{cfg.template}@custom"
        body["composed_of"] = [custom]
        body["ignore_missing_component_templates"] = [custom]
    return body


def ilm_policy(cfg: ElasticsearchConfig) -> dict:
    lc = cfg.lifecycle
    # "min_age": "0ms" written out: Elasticsearch returns it on GET, and the fingerprint must match
    phases: dict[str, Any] = {"hot": {"min_age": "0ms", "actions": {"rollover": {
        "max_age": lc.rollover_max_age, "max_primary_shard_size": lc.rollover_max_primary_shard_size}}}}
    if lc.delete_after:
        phases["delete"] = {"min_age": lc.delete_after, "actions": {"delete": {}}}
    return {"phases": phases}


def ism_policy(cfg: ElasticsearchConfig) -> dict:
    lc = cfg.lifecycle
    hot: dict[str, Any] = {"name": "hot", "actions": [{"rollover": {
        "min_index_age": lc.rollover_max_age, "min_primary_shard_size": lc.rollover_max_primary_shard_size}}],
        "transitions": []}
    states = [hot]
    if lc.delete_after:
        hot["transitions"] = [{"state_name": "delete", "conditions": {"min_index_age": lc.delete_after}}]
        states.append({"name": "delete", "actions": [{"delete": {}}], "transitions": []})
    return {"default_state": "hot", "states": states,
            "ism_template": [{"index_patterns": [".ds-logs-siemhub.*"], "priority": 100}]}


class SetupError(RuntimeError):
    pass


class _Unreachable(Exception):
    pass


# --- payload -------------------------------------------------------------------------------------


@dataclass(slots=True)
class BulkPayload:
    """One batch, encoded; send() updates it so a retry re-sends only what is still pending."""

    items: list[bytes]  # per event: action line + source line (NDJSON)
    pending: list[int]
    failed: dict[int, tuple[Outcome, str]] = field(default_factory=dict)
    details: dict[int, str] = field(default_factory=dict)  # full error per given-up item
    attempts: int = 0


_enc = msgspec.json.Encoder()


class ElasticsearchExporter(Exporter):
    config_model = ElasticsearchConfig
    formats = ("ecs",)

    def __init__(self, name: str, config: ElasticsearchConfig) -> None:
        super().__init__(name, config)
        self._client = None
        self._headers: dict[str, str] = {}
        self._setup_done = not config.setup
        self._pool: ThreadPoolExecutor | None = None
        self._index = {t: index_for(t, config.namespace) for t in ecs.EVENT_CLASS}
        self.lifecycle_mode = "none"

    # --- lifecycle ---

    def start(self) -> None:
        from elasticsearch import Elasticsearch

        cfg = self.config
        if self._client is not None:  # started already
            return
        if cfg.insecure:
            log.warning("exporter %s: TLS certificate verification is OFF (insecure: true)", self.name)
        self._client = Elasticsearch(**client_kwargs(cfg))
        self._headers = auth_headers(cfg)
        if cfg.concurrency > 1:
            self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix=f"es-{self.name}")
        if not self._setup_done:
            try:
                self._setup()
            except _Unreachable as exc:
                # Not fatal: the sensors keep running and queueing; setup is retried before each send.
                log.warning("exporter %s: server unreachable at start (%s); setup will run when it answers",
                            self.name, exc)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self._client is not None:
            self._client.close()

    # --- I/O primitives: one request, status and parsed body; never raises for HTTP status ---

    def _request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                 ndjson: bool = False) -> tuple[int, Any]:
        from elastic_transport import ApiError, ConnectionError as TConnectionError, ConnectionTimeout
        from elasticsearch import UnsupportedProductError

        try:
            if self.config.flavor == "opensearch":
                # Straight through the transport: the client's product check and its
                # `compatible-with=8` media types are Elasticsearch-only.
                ctype = "application/x-ndjson" if ndjson else "application/json"
                headers = {**self._headers, "accept": "application/json"}
                if body is not None:
                    headers["content-type"] = ctype
                target = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
                resp = self._client.transport.perform_request(method, target, headers=headers, body=body)
                return resp.meta.status, resp.body
            headers = {"accept": "application/json"}
            if body is not None:
                headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
            resp = self._client.perform_request(method, path, params=params, headers=headers, body=body)
            return resp.meta.status, resp.body
        except UnsupportedProductError as exc:
            raise SetupError("the server is not Elasticsearch (no X-Elastic-Product header); "
                             "for OpenSearch set flavor: opensearch") from exc
        except ApiError as exc:  # elasticsearch.ApiError subclasses it
            return exc.meta.status, exc.body
        except ConnectionTimeout as exc:
            raise _Unreachable("timeout") from exc
        except TConnectionError as exc:
            raise _Unreachable(type(exc).__name__) from exc

    # --- setup ---

    def _setup(self) -> None:
        cfg = self.config
        if cfg.flavor == "elasticsearch":
            status, body = self._request("GET", "/")
            if status in (401, 403):
                raise SetupError(f"authentication refused (HTTP {status})")
            if status >= 400:
                raise SetupError(f"server answered HTTP {status} to GET /")
        mode = "none"
        if cfg.lifecycle.enabled:
            mode = self._setup_policy()
        self.lifecycle_mode = mode
        self._put_managed(f"/_index_template/{cfg.template}", template_body(cfg, mode),
                          self._get_index_template, "index template")
        self._setup_done = True

    def _setup_policy(self) -> str:
        cfg = self.config
        name = cfg.lifecycle.policy
        if cfg.flavor == "opensearch":
            path = f"/_plugins/_ism/policies/{name}"
            status, body = self._request("GET", path)
            if _no_handler(status, body):
                log.warning("exporter %s: the server has no ISM API; indices are not rolled over or deleted", self.name)
                return "none"
            desired = ism_policy(cfg)
            current = body.get("policy") if status == 200 and isinstance(body, dict) else None
            params = meta = None
            if current is not None:
                params = {"if_seq_no": body.get("_seq_no"), "if_primary_term": body.get("_primary_term")}
                meta = _meta_from_description(current)  # ISM policies have no _meta: it rides in the description
                current = {k: v for k, v in current.items() if k in desired}
            if not self._may_write(current, desired, "ISM policy", meta):
                return "ism"
            fp = fingerprint(desired)
            doc = {"policy": {"description": f"managed by siemhub v{TEMPLATE_VERSION} fp:{fp}", **desired}}
            self._check(self._request("PUT", path, doc, params=params), "ISM policy")
            return "ism"
        path = f"/_ilm/policy/{name}"
        status, body = self._request("GET", path)
        if _no_handler(status, body):
            log.warning("exporter %s: the server has no ILM API; using the data stream lifecycle (retention %s)",
                        self.name, cfg.lifecycle.delete_after)
            return "dsl"
        desired = ilm_policy(cfg)
        current = body.get(name, {}).get("policy") if status == 200 and isinstance(body, dict) else None
        if current is not None:
            meta = current.get("_meta")
            current = {"phases": current.get("phases", {}), "_meta": meta}
        if self._may_write(current, desired, "ILM policy"):
            self._check(self._request("PUT", path, {"policy": _with_meta(desired)}), "ILM policy")
        return "ilm"

    def _get_index_template(self, path: str) -> dict | None:
        status, body = self._request("GET", path)
        if status == 404:
            return None
        self._check((status, body), "index template")
        found = body.get("index_templates") or []
        return found[0]["index_template"] if found else None

    def _put_managed(self, path: str, desired: dict, getter, what: str) -> None:
        current = getter(path)
        if self._may_write(current, desired, what):
            self._check(self._request("PUT", path, _with_meta(desired)), what)

    def _may_write(self, current: dict | None, desired: dict, what: str, meta: dict | None = None) -> bool:
        """Create when missing, upgrade when still as siemhub wrote it, else leave it (or overwrite on flag)."""
        if current is None:
            log.info("exporter %s: creating %s", self.name, what)
            return True
        meta = meta if meta is not None else (current.get("_meta") or {})
        if meta.get("managed_by") != "siemhub":
            if self.config.overwrite_templates:
                log.warning("exporter %s: overwriting the %s a user wrote (overwrite_templates)", self.name, what)
                return True
            log.warning("exporter %s: the %s exists and is not managed by siemhub; left as is "
                        "(set overwrite_templates: true to replace it)", self.name, what)
            return False
        unmodified = fingerprint(current) == meta.get("fingerprint")
        if unmodified and fingerprint(desired) == meta.get("fingerprint"):
            return False  # already what we want
        if not unmodified and not self.config.overwrite_templates:
            log.warning("exporter %s: the %s was modified after siemhub wrote it; left as is "
                        "(set overwrite_templates: true to replace it)", self.name, what)
            return False
        log.info("exporter %s: updating %s", self.name, what)
        return True

    def _check(self, answer: tuple[int, Any], what: str) -> None:
        status, body = answer
        if status >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            etype = err.get("type") if isinstance(err, dict) else err
            raise SetupError(f"{what}: HTTP {status} {etype or ''}".strip())

    # --- the contract ---

    def encode(self, batch: Sequence[Event]) -> BulkPayload:
        ns = self.config.namespace
        index = self._index
        document, enc = ecs.encode_one, _enc.encode
        items = []
        for e in batch:
            idx = index.get(e.type) or index_for(e.type, ns)
            items.append(b'{"create":{"_index":"%s","_id":%s}}\n%s\n' % (idx.encode(), enc(e.id), document(e, ns)))
        return BulkPayload(items, list(range(len(items))))

    def send(self, payload: BulkPayload) -> SendResult:
        payload.attempts += 1
        if not self._setup_done:
            try:
                self._setup()
            except _Unreachable as exc:
                return outcome_for_exception(ConnectionError(str(exc)))
            except SetupError as exc:
                log.warning("exporter %s: setup failed: %s", self.name, exc)
                return SendResult(Outcome.RETRY, "setup_failed")
        chunks = chunk_by_bytes(payload.pending, payload.items, self.config.max_bulk_bytes)
        if self._pool is not None and len(chunks) > 1:
            answers = list(self._pool.map(self._post, chunks, [payload] * len(chunks)))
        else:
            answers = [self._post(c, payload) for c in chunks]
        pending: dict[int, str] = {}  # item -> why it is retried
        retry_reason = ""
        for chunk, answer in zip(chunks, answers):
            if isinstance(answer, SendResult):  # the whole request failed
                if answer.outcome is Outcome.RETRY:
                    pending.update(dict.fromkeys(chunk, answer.reason))
                    retry_reason = answer.reason
                else:
                    for i in chunk:
                        payload.failed[i] = (Outcome.GIVE_UP, answer.reason)
                continue
            retry_reason = self._items(chunk, answer, payload, pending) or retry_reason
        payload.pending = sorted(pending)
        failed = [(i, o, r) for i, (o, r) in sorted(payload.failed.items())]
        if pending:
            return SendResult(Outcome.RETRY, retry_reason or "retry",
                              sorted(failed + [(i, Outcome.RETRY, r) for i, r in pending.items()]))
        if not failed:
            return DONE
        if len(failed) == len(payload.items) and len({r for _, _, r in failed}) == 1:
            return SendResult(Outcome.GIVE_UP, failed[0][2], failed)
        return SendResult(Outcome.DONE, "", failed)

    def _post(self, chunk: list[int], payload: BulkPayload) -> SendResult | dict:
        body = b"".join([payload.items[i] for i in chunk])
        try:
            status, resp = self._request("POST", "/_bulk", body, params={"filter_path": _FILTER_PATH}, ndjson=True)
        except _Unreachable as exc:
            return outcome_for_exception(TimeoutError() if str(exc) == "timeout" else ConnectionError())
        result = outcome_for_endpoint(status)
        if result.outcome is not Outcome.DONE:
            return result
        if not isinstance(resp, dict):
            return SendResult(Outcome.RETRY, "bulk_bad_response")
        return resp

    def _items(self, chunk: list[int], resp: dict, payload: BulkPayload, pending: dict[int, str]) -> str:
        """Record per-item outcomes of one bulk response; returns the last retry reason seen."""
        if not resp.get("errors"):
            return ""
        items = resp.get("items") or []
        if len(items) != len(chunk):  # cannot tell which item is which: resend them all (creates dedupe)
            pending.update(dict.fromkeys(chunk, "bulk_items_mismatch"))
            return "bulk_items_mismatch"
        reason = ""
        for i, item in zip(chunk, items):
            r = next(iter(item.values()), {})
            status = r.get("status", 0)
            if status == 409:  # create of an _id that exists: stored by an earlier attempt
                continue
            outcome = outcome_for_http(status)
            if outcome.outcome is Outcome.DONE:
                continue
            err = r.get("error") or {}
            etype = (err.get("type") if isinstance(err, dict) else None) or outcome.reason
            if outcome.outcome is Outcome.RETRY:
                pending[i] = reason = etype
            else:
                payload.failed[i] = (Outcome.GIVE_UP, etype)
                payload.details[i] = str(err.get("reason", ""))[:2000] if isinstance(err, dict) else str(err)
        return reason


def _no_handler(status: int, body: Any) -> bool:
    """The server has no such API at all (as opposed to 'no such policy')."""
    if status not in (400, 404, 405, 410):
        return False
    text = json.dumps(body) if not isinstance(body, str) else body
    return "no handler found" in text or (status != 404 and "unrecognized" in text) or (
        status == 404 and "resource_not_found" not in text and "index_not_found" not in text)


def _meta_from_description(policy: dict | None) -> dict | None:
    if not policy:
        return None
    m = re.match(r"managed by siemhub v(\d+) fp:([0-9a-f]+)", policy.get("description", ""))
    return {"managed_by": "siemhub", "version": int(m.group(1)), "fingerprint": m.group(2)} if m else {}
