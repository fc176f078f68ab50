"""ECS format: the canonical event as an Elastic Common Schema document (docs/ecs-mapping.md).

`to_ecs(event)` is a pure function. Every field it can emit is listed once in FIELDS with its
Elasticsearch mapping: the index template is generated from that table, and
tests/unit/exporters/formats/test_ecs_format.py checks every emitted field against the table and against ECS's own
definitions (ecs_flat.yml: existence, type, allowed values of event.kind/category/type). Canonical
fields that ECS has no place for live under `siemhub.*`.

File, network, privilege and policy events map to `file.*`, `source.*`/`destination.*`/`network.*`,
`user.changes.*` and `rule.*` (see _body_fields); `event.type` and `event.action` follow the
operation (a file write is a `change`, an unlink a `deletion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from siemhub.collector.core.event import SEVERITY_RANK, Event, Process, enc_hook
from siemhub.exporters.formats.base import Format

# The ECS release whose field definitions tests/unit/exporters/formats/test_ecs_format.py checks this format against
# (shared/reference/ecs/ecs_flat.yml). Every field used here also exists in ECS 8.x.
ECS_VERSION = "9.5.0-dev"

# event type -> (event.kind, event.category, event.type, event.action, data stream dataset suffix)
# Only ECS-allowed values for kind/category/type; the dataset groups types the way Elastic Defend
# does (logs-endpoint.events.process / .file / .network).
EVENT_CLASS: dict[str, tuple[str, list[str] | None, list[str] | None, str, str]] = {
    "process_exec": ("event", ["process"], ["start"], "exec", "process"),
    "process_exit": ("event", ["process"], ["end"], "end", "process"),
    "agent_status": ("metric", None, None, "agent_status", "agent"),
    # reserved for the sensors to come
    "file_access": ("event", ["file"], ["access"], "file_access", "file"),
    "network_connect": ("event", ["network"], ["start", "connection"], "connect", "network"),
    "network_accept": ("event", ["network"], ["start", "connection"], "accept", "network"),
    "network_close": ("event", ["network"], ["end", "connection"], "close", "network"),
    "network_flow": ("event", ["network"], ["connection"], "flow", "network"),  # + "end" when flow_end is set
    "dns_query": ("event", ["network"], ["connection", "protocol"], "dns_query", "network"),
    "privilege_change": ("event", ["process"], ["change"], "privilege_change", "process"),
    "policy_action": ("alert", ["intrusion_detection"], ["denied"], "policy_action", "policy"),
}


def dataset(event_type: str) -> str:
    """`siemhub.process` for process_exec: the data stream is logs-<dataset>-<namespace>."""
    cls = EVENT_CLASS.get(event_type)
    return f"siemhub.{cls[4] if cls else 'other'}"


# --- the field table: every field this format emits, with its Elasticsearch mapping --------------

_KW = {"type": "keyword", "ignore_above": 1024}
_KW_TEXT = {"type": "keyword", "ignore_above": 1024, "fields": {"text": {"type": "match_only_text"}}}
_WILDCARD_TEXT = {"type": "wildcard", "fields": {"text": {"type": "match_only_text"}}}
_LONG = {"type": "long"}
_DATE = {"type": "date_nanos"}  # the kernel's nanoseconds keep exec/exit order within a millisecond
_BOOL = {"type": "boolean"}
_FLAT = {"type": "flattened"}  # maps with arbitrary keys (labels, counters): one mapped field


def _process_table(prefix: str) -> dict[str, dict]:
    return {
        f"{prefix}.entity_id": _KW,
        f"{prefix}.pid": _LONG,
        f"{prefix}.thread.id": _LONG,
        f"{prefix}.thread.capabilities.effective": _KW,
        f"{prefix}.thread.capabilities.permitted": _KW,
        f"{prefix}.executable": _KW_TEXT,
        f"{prefix}.name": _KW_TEXT,
        f"{prefix}.args": _KW,
        f"{prefix}.args_count": _LONG,
        f"{prefix}.command_line": _WILDCARD_TEXT,
        f"{prefix}.working_directory": _KW_TEXT,
        f"{prefix}.start": _DATE,
        f"{prefix}.user.id": _KW,
        f"{prefix}.group.id": _KW,
        f"{prefix}.real_user.id": _KW,
        f"{prefix}.real_group.id": _KW,
    }


def _siemhub_process_table(prefix: str) -> dict[str, dict]:
    return {
        f"{prefix}.flags": _KW,
        f"{prefix}.comm": _KW,
        f"{prefix}.auid": _LONG,
        f"{prefix}.cgroup_id": _LONG,
        f"{prefix}.pod.workload": _KW,
        f"{prefix}.pod.workload_kind": _KW,
        f"{prefix}.pod.qos_class": _KW,
    }


FIELDS: dict[str, dict] = {
    "@timestamp": _DATE,
    "ecs.version": _KW,
    "agent.type": _KW,
    "data_stream.type": {"type": "constant_keyword"},
    "data_stream.dataset": {"type": "constant_keyword"},
    "data_stream.namespace": {"type": "constant_keyword"},
    "event.id": _KW,
    "event.kind": _KW,
    "event.category": _KW,
    "event.type": _KW,
    "event.action": _KW,
    "event.module": _KW,
    "event.dataset": _KW,
    "event.severity": _LONG,
    "event.duration": _LONG,
    "log.level": _KW,
    "tags": _KW,
    "host.name": _KW,
    "host.hostname": _KW,
    "user.id": _KW,
    "group.id": _KW,
    **_process_table("process"),
    "process.end": _DATE,
    "process.exit_code": _LONG,
    **_process_table("process.parent"),
    "container.id": _KW,
    "container.runtime": _KW,
    "container.name": _KW,
    "container.image.name": _KW,
    "container.image.tag": _KW,
    "container.image.hash.all": _KW,
    "orchestrator.type": _KW,
    "orchestrator.cluster.name": _KW,
    "orchestrator.resource.annotation": _KW,
    "orchestrator.resource.parent.type": _KW,
    "orchestrator.namespace": _KW,
    "orchestrator.resource.type": _KW,
    "orchestrator.resource.name": _KW,
    "orchestrator.resource.id": _KW,
    "orchestrator.resource.label": _KW,
    # canonical fields ECS has no place for
    "siemhub.schema_version": _KW,
    "siemhub.node.labels": _FLAT,
    **_siemhub_process_table("siemhub.process"),
    **_siemhub_process_table("siemhub.parent"),
    "siemhub.exit.signal": _KW,
    "siemhub.exit.core_dumped": _BOOL,
    "siemhub.exit.duration_ns": _LONG,
    "siemhub.status.counters": _FLAT,
    "siemhub.status.lost_events": _LONG,
    "siemhub.status.dropped_events": _LONG,
    "siemhub.status.decode_errors": _LONG,
    # file_access
    "file.path": _KW_TEXT,
    "file.name": _KW,
    "file.directory": _KW,
    "file.inode": _KW,
    "file.mode": _KW,
    "file.uid": _KW,
    "file.gid": _KW,
    "siemhub.file.flags": _KW,
    "siemhub.file.target": _KW,
    "siemhub.file.result": _LONG,
    # network_*
    "source.ip": {"type": "ip"},
    "source.port": _LONG,
    "source.bytes": _LONG,
    "destination.ip": {"type": "ip"},
    "destination.port": _LONG,
    "destination.bytes": _LONG,
    "source.packets": _LONG,
    "destination.packets": _LONG,
    "network.bytes": _LONG,
    "network.packets": _LONG,
    "event.start": _DATE,
    "event.end": _DATE,
    "network.transport": _KW,
    "network.type": _KW,
    "network.direction": _KW,
    "network.protocol": _KW,
    "dns.question.name": _KW,
    "dns.question.type": _KW,
    "dns.id": _KW,
    "dns.type": _KW,
    "siemhub.dns.flags": _KW,
    "siemhub.flow_end": _KW,
    # privilege_change
    "user.changes.id": _KW,
    "user.changes.group.id": _KW,
    "siemhub.privilege.operation": _KW,
    "siemhub.privilege.old_uid": _LONG,
    "siemhub.privilege.new_caps": _KW,
    "siemhub.privilege.target_pid": _LONG,
    "siemhub.privilege.name": _KW,
    "siemhub.privilege.source": _KW,
    "siemhub.privilege.target": _KW,
    "siemhub.privilege.result": _LONG,
    # policy_action
    "rule.name": _KW,
    "rule.id": _KW,
    "event.outcome": _KW,
    "event.reason": _KW,
    "siemhub.policy.action": _KW,
    "siemhub.policy.enforced": _BOOL,
}

# file operation -> ECS event.type (allowed for category file: access, change, creation, deletion, info)
_FILE_TYPE = {"open": "access", "read": "access", "write": "change", "unlink": "deletion", "rename": "change",
              "chmod": "change", "chown": "change", "truncate": "change"}


def mappings() -> dict:
    """FIELDS as an Elasticsearch `mappings` object (nested `properties`). `dynamic: false`: a field
    that is not in the table is kept in _source but never gets a guessed type."""
    root: dict[str, Any] = {}
    for path, spec in FIELDS.items():
        node = root
        *parents, leaf = path.split(".") if path != "@timestamp" else ["@timestamp"]
        for p in parents:
            node = node.setdefault(p, {"properties": {}})["properties"]
        node[leaf] = dict(spec)
    return {"dynamic": False, "properties": root}


# --- the mapping ------------------------------------------------------------------------------


def _process_fields(p: Process) -> dict[str, Any]:
    d: dict[str, Any] = {"entity_id": p.exec_id, "pid": p.pid}
    if p.tid is not None:
        d["thread"] = {"id": p.tid}
    caps = p.caps
    if caps is not None and (caps.effective or caps.permitted):
        # ECS process.thread.capabilities.*: the names, as the kernel's capability set of the thread
        c = {k: v for k, v in (("effective", caps.effective), ("permitted", caps.permitted)) if v}
        d.setdefault("thread", {})["capabilities"] = c
    if p.binary:
        d["executable"] = p.binary
        d["name"] = p.binary.rsplit("/", 1)[-1]
    elif p.comm:
        d["name"] = p.comm
    if p.args:
        d["args"] = p.args
        d["args_count"] = len(p.args)
        d["command_line"] = " ".join(p.args)
    if p.cwd is not None:
        d["working_directory"] = p.cwd
    if p.start_time is not None:
        d["start"] = p.start_time
    # ECS: process.user is the effective user, process.real_user the real one (ids are keywords)
    if p.euid is not None:
        d["user"] = _id_object(p.euid)
    if p.egid is not None:
        d["group"] = _id_object(p.egid)
    if p.uid is not None:
        d["real_user"] = _id_object(p.uid)
    if p.gid is not None:
        d["real_group"] = _id_object(p.gid)
    return d


_IDS: dict[int, dict[str, str]] = {}


def _id_object(n: int) -> dict[str, str]:
    """{"id": "<n>"}, one shared object per uid/gid (documents never change what they share)."""
    obj = _IDS.get(n)
    if obj is None:
        if len(_IDS) >= 1024:
            _IDS.clear()
        obj = _IDS[n] = {"id": str(n)}
    return obj


def _siemhub_process(p: Process) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if p.flags:
        d["flags"] = p.flags
    if p.comm is not None:
        d["comm"] = p.comm
    if p.auid is not None:
        d["auid"] = p.auid
    if p.cgroup_id is not None:
        d["cgroup_id"] = p.cgroup_id
    if p.pod is not None and (p.pod.workload or p.pod.qos_class):
        d["pod"] = {k: v for k, v in (("workload", p.pod.workload), ("workload_kind", p.pod.workload_kind),
                                      ("qos_class", p.pod.qos_class)) if v}
    return d


def _split_image(image: str) -> tuple[str, str | None]:
    """`registry:5000/nginx:1.25` -> (`registry:5000/nginx`, `1.25`); a digest stays in the name."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash and "@" not in image:
        return image[:colon], image[colon + 1 :]
    return image, None


def _workload_fields(p: Process, doc: dict[str, Any]) -> None:
    if p.container is not None:
        c = doc["container"] = {"id": p.container.id}
        if p.container.runtime:
            c["runtime"] = p.container.runtime
    pod = p.pod
    if pod is None:
        return
    if pod.container is not None:
        c = doc.setdefault("container", {})
        if pod.container.name:
            c["name"] = pod.container.name
        if pod.container.image:
            name, tag = _split_image(pod.container.image)
            c["image"] = {"name": name, **({"tag": [tag]} if tag else {})}
        if pod.container.image_id:
            # `<repo>@sha256:<hex>` (or a bare digest): ECS wants the digest
            digest = pod.container.image_id.rpartition("@")[2]
            c.setdefault("image", {})["hash"] = {"all": [digest]}
    res: dict[str, Any] = {"type": "pod", "name": pod.name}
    if pod.uid:
        res["id"] = pod.uid
    if pod.labels:
        res["label"] = [f"{k}:{v}" for k, v in sorted(pod.labels.items())]
    if pod.annotations:
        res["annotation"] = [f"{k}:{v}" for k, v in sorted(pod.annotations.items())]
    if pod.workload_kind:
        res["parent"] = {"type": pod.workload_kind}  # the owning workload's kind; its name: siemhub.process.pod
    doc.setdefault("orchestrator", {}).update(type="kubernetes", namespace=pod.namespace, resource=res)


# id(process) -> (process, its process.* mapping, its siemhub.process.* mapping, its top-level fields
# (user, group, container, orchestrator)). Processes are immutable and shared (an exec and its exit, the
# children of one parent: the agent's process cache and the replay/Kafka decoder share them), so each is
# mapped once; the mappings are shared by the documents that use them and never changed (to_ecs copies
# what it extends). The process is kept referenced so that its id cannot be reused meanwhile.
_MAPPED: dict[int, tuple[Process, dict[str, Any], dict[str, Any], dict[str, Any]]] = {}


def _mapped(p: Process) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    hit = _MAPPED.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1], hit[2], hit[3]
    top: dict[str, Any] = {}
    if p.euid is not None:
        top["user"] = _id_object(p.euid)
    if p.egid is not None:
        top["group"] = _id_object(p.egid)
    if p.container is not None or p.pod is not None:
        _workload_fields(p, top)
    out = (_process_fields(p), _siemhub_process(p), top)
    if len(_MAPPED) >= 4096:  # a few MB of mappings at most
        _MAPPED.clear()
    _MAPPED[id(p)] = (p, *out)
    return out


def _parent_ids(p: Process) -> dict[str, Any]:
    """process.parent of a process whose parent image is not in the event: its ids only."""
    return {k: v for k, v in (("entity_id", p.parent_exec_id), ("pid", p.ppid)) if v is not None}


# id(process) -> (process, (JSON of its process.* mapping without the closing brace, of its
# siemhub.process mapping or b"", of its top-level fields as members `,"user":{...},...` or b"")).
# The per-process pieces encode_one
# joins: a parent's JSON is encoded once for all its children. The process is kept referenced so that
# its id cannot be reused meanwhile.
_JSON: dict[int, tuple[Process, tuple[bytes, bytes, bytes, bytes]]] = {}
# id(shared dict) -> (dict, its JSON): the constant parts (data_stream, host) encoded once
_RAWS: dict[int, tuple[dict, msgspec.Raw]] = {}


def _mapped_json(p: Process) -> tuple[bytes, bytes, bytes]:
    hit = _JSON.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    pf, sp, top = _mapped(p)
    enc = _encoder.encode
    out = (enc(pf)[:-1], enc(sp) if sp else b"", b"," + enc(top)[1:-1] if top else b"")
    if len(_JSON) >= 4096:  # a few MB at most
        _JSON.clear()
    _JSON[id(p)] = (p, out)
    return out


def _process_json(p: Process, parent: Process | None) -> tuple[bytes, bytes, bytes]:
    """(JSON of the process object with its parent, without its closing brace; the top-level fields
    (user, group, container, orchestrator) as members `,"user":{...},...`; siemhub.parent and
    siemhub.process as members)."""
    pf_json, sp_json, top_members = _mapped_json(p)
    if parent is not None:
        ppf_json, psp_json, _ = _mapped_json(parent)
        head = pf_json + b',"parent":' + ppf_json + b"}"
        sh = b',"parent":' + psp_json if psp_json else b""
    else:
        head = pf_json
        if p.ppid is not None or p.parent_exec_id is not None:
            head += b',"parent":' + _encoder.encode(_parent_ids(p))
        sh = b""
    if sp_json:
        sh += b',"process":' + sp_json
    return head, top_members, sh


# (event type, namespace, severity) -> the JSON between the timestamp and the event id, and between
# the event id and the duration: everything constant about the head of a process event's document
_FAST_HEADS: dict[tuple[str, str, str], tuple[bytes, bytes]] = {}
_NODES: dict[int, tuple[Any, bytes]] = {}  # id(node) -> (node, `,"host":...` and siemhub.node JSON)


def _fast_head(event_type: str, namespace: str, severity: str) -> tuple[bytes, bytes]:
    head = _HEADS.get((event_type, namespace)) or _head(event_type, namespace)
    enc = _encoder.encode
    ev = enc(head[0])  # {"kind":...,"dataset":...}
    pre = (b',"ecs":' + bytes(_ECS_RAW) + b',"agent":' + bytes(_AGENT_RAW) + b',"data_stream":' + enc(head[1])
           + b',"event":{"id":')
    mid = b"," + ev[1:-1] + b',"severity":%d' % SEVERITY_RANK.get(severity, 0)
    out = (pre, mid)
    if len(_FAST_HEADS) > 256:
        _FAST_HEADS.clear()
    _FAST_HEADS[(event_type, namespace, severity)] = out
    return out


def _node_json(node) -> tuple[bytes, bytes]:
    hit = _NODES.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    enc = _encoder.encode
    host = b',"host":' + enc({"name": node.name, "hostname": node.name})
    labels = b',"node":' + enc({"labels": dict(node.labels)}) if node.labels else b""
    out = (host, labels)
    if len(_NODES) > 64:
        _NODES.clear()
    _NODES[id(node)] = (node, out)
    return out


def _process_event_json(event: Event, namespace: str, p: Process) -> bytes:
    """The document of an event that is only about its process (exec, exit), as bytes: the pieces
    of the JSON that do not change from one event to the next are joined with the ones that do."""
    enc = _encoder.encode
    sev = event.severity
    heads = _FAST_HEADS.get((event.type, namespace, sev)) or _fast_head(event.type, namespace, sev)
    head_json, top_members, sh_members = _process_json(p, event.parent)
    host, labels = _node_json(event.node)
    x = event.exit
    parts = [b'{"@timestamp":', enc(event.time), heads[0], enc(event.id), heads[1]]
    if x is not None and x.duration_ns is not None:
        parts.append(b',"duration":%d' % x.duration_ns)
    parts += [b'},"log":', bytes(_LOG_RAW[sev]), host]
    if event.tags:
        parts += [b',"tags":', enc(event.tags)]
    if event.node.cluster:
        parts += [b',"orchestrator":', enc({"type": "kubernetes", "cluster": {"name": event.node.cluster}})]
    parts += [top_members, b',"process":', head_json]
    if x is None:
        parts.append(b'},"siemhub":{"schema_version":')
    else:
        parts += [b',"end":', enc(event.time)]
        if x.code is not None:
            parts.append(b',"exit_code":%d' % x.code)
        parts.append(b'},"siemhub":{"schema_version":')
    parts += [enc(event.schema_version), labels, sh_members]
    if x is not None:
        ex = {}
        if x.signal:
            ex["signal"] = x.signal
        if x.core_dumped:
            ex["core_dumped"] = True
        if x.duration_ns is not None:
            ex["duration_ns"] = x.duration_ns
        if ex:
            parts += [b',"exit":', enc(ex)]
    parts.append(b"}}")
    return b"".join(parts)


def clear_memos() -> None:
    """Forget every memoized mapping (benchmarks measure cold documents; tests compare with fresh ones)."""
    _MAPPED.clear()
    _JSON.clear()
    _RAWS.clear()
    _NODES.clear()


def _raw(d: dict) -> msgspec.Raw:
    hit = _RAWS.get(id(d))
    if hit is not None and hit[0] is d:
        return hit[1]
    r = msgspec.Raw(_encoder.encode(d))
    if len(_RAWS) >= 512:
        _RAWS.clear()
    _RAWS[id(d)] = (d, r)
    return r


def _status_fields(counters: dict[str, int]) -> dict[str, Any]:
    lost = sum(v for k, v in counters.items() if "_ringbuf_lost" in k)
    dropped = sum(v for k, v in counters.items() if k.startswith("exporter_") and "_dropped" in k)
    decode = sum(v for k, v in counters.items() if k.endswith("_decode_errors"))
    return {"counters": dict(counters), "lost_events": lost, "dropped_events": dropped, "decode_errors": decode}


# Parts of a document that depend only on the event type, namespace, severity or node: built once and
# shared by the documents (never changed after: to_ecs builds new dicts for what varies).
_encoder = msgspec.json.Encoder(enc_hook=enc_hook)
_ECS = {"version": ECS_VERSION}
_AGENT = {"type": "siemhub"}
_LOG = {s: {"level": s} for s in SEVERITY_RANK}
_ECS_RAW = msgspec.Raw(_encoder.encode(_ECS))
_AGENT_RAW = msgspec.Raw(_encoder.encode(_AGENT))
_LOG_RAW = {s: msgspec.Raw(_encoder.encode(v)) for s, v in _LOG.items()}
_HOSTS: dict[str, dict[str, str]] = {}
_HEADS: dict[tuple[str, str], tuple[dict[str, Any], dict[str, str]]] = {}


def _head(event_type: str, namespace: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(event.* but id and severity, data_stream) of an event type."""
    kind, category, etype, action, _ = EVENT_CLASS.get(event_type, ("event", None, None, event_type, "other"))
    ds = dataset(event_type)
    ev: dict[str, Any] = {"kind": kind}
    if category:
        ev["category"] = category
    if etype:
        ev["type"] = etype
    ev.update(action=action, module="siemhub", dataset=ds)
    head = (ev, {"type": "logs", "dataset": ds, "namespace": namespace})
    if len(_HEADS) > 256:
        _HEADS.clear()
    _HEADS[(event_type, namespace)] = head
    return head


def to_ecs(event: Event, namespace: str = "default") -> dict[str, Any]:
    """One canonical event -> one ECS document (a plain dict, ready for JSON). Its nested dicts are
    shared with other documents (the mapping of a shared process, the constant parts): encode it, or
    copy before changing anything below the top level."""
    return _document(event, namespace, False)


def encode_one(event: Event, namespace: str = "default") -> bytes:
    """The JSON of to_ecs(event, namespace), built faster: the parts shared by many documents (a
    process' mapping with its parent's, the constant event/host/agent objects) are encoded once and
    spliced in as raw JSON. Same JSON object as encoding to_ecs (tests/unit/exporters/formats/
    test_ecs_format.py compares them on every event type); bench/codec_cost.py measures it."""
    p = event.process
    if (p is not None and event.file is None and event.network is None and event.privilege is None
            and event.policy is None and event.status is None and event.severity in _LOG_RAW
            and not (event.node.cluster and p.pod is not None)):
        return _process_event_json(event, namespace, p)
    return _encoder.encode(_document(event, namespace, True))


def _document(event: Event, namespace: str, raw: bool) -> dict[str, Any]:
    head = _HEADS.get((event.type, namespace))
    if head is None:
        head = _head(event.type, namespace)
    ev: dict[str, Any] = {"id": event.id, **head[0]}
    ev["severity"] = SEVERITY_RANK.get(event.severity, 0)
    node = event.node
    host = _HOSTS.get(node.name)
    if host is None:
        host = _HOSTS[node.name] = {"name": node.name, "hostname": node.name}
        if len(_HOSTS) > 64:
            _HOSTS.clear()
    if raw:
        doc: dict[str, Any] = {
            "@timestamp": event.time,
            "ecs": _ECS_RAW,
            "agent": _AGENT_RAW,
            "data_stream": _raw(head[1]),
            "event": ev,
            "log": _LOG_RAW.get(event.severity) or {"level": event.severity},
            "host": _raw(host),
        }
    else:
        doc = {
            "@timestamp": event.time,
            "ecs": _ECS,
            "agent": _AGENT,
            "data_stream": head[1],
            "event": ev,
            "log": _LOG.get(event.severity) or {"level": event.severity},
            "host": host,
        }
    sh: dict[str, Any] = {"schema_version": event.schema_version}
    if event.node.labels:
        sh["node"] = {"labels": dict(event.node.labels)}
    if event.tags:
        doc["tags"] = event.tags
    if event.node.cluster:
        doc["orchestrator"] = {"type": "kubernetes", "cluster": {"name": event.node.cluster}}

    p = event.process
    x = event.exit
    if p is not None and raw:
        # the process object (with its parent) is one piece of JSON per (process, parent) pair; an exit
        # appends `end` and `exit_code` to it
        head_json = _process_json(p, event.parent)[0]
        _, sp, top = _mapped(p)
        psp = _mapped(event.parent)[1] if event.parent is not None else None
        if psp:
            sh["parent"] = psp
        if sp:
            sh["process"] = sp
        if top:
            cluster = doc.get("orchestrator")
            doc.update(top)
            if cluster is not None and "orchestrator" in top:  # the pod's fields and the node's cluster
                doc["orchestrator"] = {**top["orchestrator"], "cluster": cluster["cluster"]}
        if x is None:
            doc["process"] = msgspec.Raw(head_json + b"}")
        else:
            tail = b',"end":' + _encoder.encode(event.time)
            if x.code is not None:
                tail += b',"exit_code":%d' % x.code
            doc["process"] = msgspec.Raw(head_json + tail + b"}")
    elif p is not None:
        pf, sp, top = _mapped(p)
        proc = dict(pf)  # gets `parent`, `end`, `exit_code` below: a copy of the shared mapping
        parent = event.parent
        if parent is not None:
            ppf, psp, _ = _mapped(parent)
            proc["parent"] = ppf
            if psp:
                sh["parent"] = psp
        elif p.ppid is not None or p.parent_exec_id is not None:
            proc["parent"] = _parent_ids(p)
        if sp:
            sh["process"] = sp
        if top:
            cluster = doc.get("orchestrator")
            doc.update(top)
            if cluster is not None and "orchestrator" in top:  # the pod's fields and the node's cluster
                doc["orchestrator"] = {**top["orchestrator"], "cluster": cluster["cluster"]}
        doc["process"] = proc

    if x is not None:
        if p is None or not raw:
            proc = doc.setdefault("process", {})
            proc["end"] = event.time
            if x.code is not None:
                proc["exit_code"] = x.code
        ex: dict[str, Any] = {}
        if x.signal:
            ex["signal"] = x.signal
        if x.core_dumped:
            ex["core_dumped"] = True
        if x.duration_ns is not None:
            ex["duration_ns"] = x.duration_ns
            ev["duration"] = x.duration_ns
        if ex:
            sh["exit"] = ex

    if event.status is not None:
        sh["status"] = _status_fields(event.status.counters)

    _body_fields(event, doc, ev, sh)
    doc["siemhub"] = sh
    return doc


def _body_fields(event: Event, doc: dict[str, Any], ev: dict[str, Any], sh: dict[str, Any]) -> None:
    """file.*, source/destination/network.*, user.changes.*, rule.* for the non-process bodies."""
    f = event.file
    if f is not None:
        directory, _, name = f.path.rpartition("/")
        fd: dict[str, Any] = {"path": f.path, "name": name, "directory": directory or "/"}
        if f.inode is not None:
            fd["inode"] = str(f.inode)
        if f.mode is not None:
            fd["mode"] = format(f.mode & 0o7777, "o")
        if f.uid is not None:
            fd["uid"] = str(f.uid)
        if f.gid is not None:
            fd["gid"] = str(f.gid)
        doc["file"] = fd
        ev["action"] = f.operation
        ev["type"] = ["creation" if f.operation == "open" and "O_CREAT" in f.flags else _FILE_TYPE.get(f.operation, "info")]
        sf = {k: v for k, v in (("flags", f.flags or None), ("target", f.target), ("result", f.result)) if v is not None}
        if sf:
            sh["file"] = sf
        if f.result is not None:
            ev["outcome"] = "failure" if f.result < 0 else "success"
    n = event.network
    if n is not None:
        for side, ip, port in (("source", n.source_ip, n.source_port), ("destination", n.destination_ip, n.destination_port)):
            d = {k: v for k, v in (("ip", ip), ("port", port)) if v is not None}
            if d:
                doc[side] = d
        # Bytes from the local process' point of view: what it sent went from source to destination on
        # an outbound connection, and from destination to source on an inbound one.
        outbound = n.direction != "inbound"
        for count, side in ((n.bytes_sent, "source" if outbound else "destination"),
                            (n.bytes_received, "destination" if outbound else "source")):
            if count is not None:
                doc.setdefault(side, {})["bytes"] = count
        nd: dict[str, Any] = {"transport": n.protocol, "type": n.family}
        if n.direction:
            nd["direction"] = "egress" if outbound else "ingress"
        doc["network"] = nd
        if n.datagrams_sent is not None:  # network_flow (UDP): packets as bytes, totals, start and end
            for count, side in ((n.datagrams_sent, "source" if outbound else "destination"),
                                (n.datagrams_received, "destination" if outbound else "source")):
                doc.setdefault(side, {})["packets"] = count
            nd["bytes"] = (n.bytes_sent or 0) + (n.bytes_received or 0)
            nd["packets"] = n.datagrams_sent + (n.datagrams_received or 0)
            if n.first_seen:
                ev["start"] = n.first_seen
            if n.flow_end:
                ev["type"] = ["connection", "end"]
                if n.last_seen:
                    ev["end"] = n.last_seen
                sh["flow_end"] = n.flow_end
        if n.duration_ns is not None:
            ev["duration"] = n.duration_ns
        if n.dns_query:
            doc["dns"] = {"question": {"name": n.dns_query}}
        q = n.dns
        if q is not None:
            # a query as sent (dns.type: query); the answer is not observed
            nd["protocol"] = "dns"
            dns = doc.setdefault("dns", {})
            dns["type"] = "query"
            if q.id is not None:
                dns["id"] = str(q.id)
            if q.type:
                dns.setdefault("question", {})["type"] = q.type
            if q.flags:
                sh["dns"] = {"flags": q.flags}
    pv = event.privilege
    if pv is not None:
        ev["action"] = pv.operation
        if pv.new_uid is not None or pv.new_gid is not None:
            user = doc["user"] = dict(doc.get("user", {}))  # the process' mapping is shared: extend a copy
            if pv.new_uid is not None:
                user["changes"] = {"id": str(pv.new_uid)}
            if pv.new_gid is not None:
                user.setdefault("changes", {})["group"] = {"id": str(pv.new_gid)}
        sp = {k: v for k, v in (("operation", pv.operation), ("old_uid", pv.old_uid), ("new_caps", pv.new_caps or None),
                                ("target_pid", pv.target_pid), ("name", pv.name), ("source", pv.source),
                                ("target", pv.target), ("result", pv.result)) if v is not None}
        sh["privilege"] = sp
        if pv.result is not None:
            ev["outcome"] = "failure" if pv.result < 0 else "success"
    pol = event.policy
    if pol is not None:
        doc["rule"] = {k: v for k, v in (("name", pol.policy), ("id", pol.rule)) if v is not None}
        ev["outcome"] = "success" if pol.enforced or pol.action in ("post", "notify") else "unknown"
        if pol.reason:
            ev["reason"] = pol.reason
        sh["policy"] = {"action": pol.action, "enforced": pol.enforced}


def encode_lines(batch: Sequence[Event]) -> bytes:
    if not batch:
        return b""
    return b"\n".join(map(encode_one, batch)) + b"\n"


def to_obj(event: Event) -> dict:
    return to_ecs(event)


FORMAT = Format("ecs", encode_lines, to_obj)
