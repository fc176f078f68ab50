"""OCSF format: the canonical event as an OCSF 1.3.0 event (Open Cybersecurity Schema Framework).

- process_exec -> Process Activity (class_uid 1007, category 1 System Activity), activity Launch (1);
  process_exit -> Process Activity, activity Terminate (2), with exit_code and duration.
- dns_query -> DNS Activity (class_uid 4003, category 4 Network Activity), activity Query (1): `query`
  {hostname, type, packet_uid (the query id)}, source and destination endpoints, `connection_info`
  (outbound UDP), `actor.process` the process that sent it; the sensor's dns flags in `unmapped.dns_flags`.
- Every other type (agent_status, and sensors that have no OCSF mapping here yet) -> Base Event
  (class_uid 0, activity Other; the node name in `unmapped.node`), so a topic always holds one OCSF
  event per siemhub event.

Mapping notes: `process.uid` is siemhub's exec_id (unique per process image), `actor.process` is who
caused the activity (the parent for a launch, the process itself for a terminate), `device` is the node.
Fields OCSF 1.3 has no place for (cwd, flags, exit signal, pod, node labels, tags) go to `unmapped`.
`cmd_line` is the argv joined with POSIX shell quoting (`shlex.join`), so it splits back exactly.
tests/unit/exporters/formats/test_ocsf.py validates the output against the OCSF 1.1.0, 1.3.0 and 1.5.0 JSON Schemas.
"""

from __future__ import annotations

import calendar
import shlex
from collections.abc import Sequence
from importlib import metadata

import msgspec

from siemhub.collector.core.event import Event, Process, enc_hook
from siemhub.exporters.formats.base import Format

OCSF_VERSION = "1.3.0"
PROCESS_ACTIVITY = 1007
SYSTEM_ACTIVITY = 1
LAUNCH, TERMINATE, OTHER = 1, 2, 99
DNS_ACTIVITY = 4003
NETWORK_ACTIVITY = 4
DNS_QUERY = 1
NETWORK_ACTIVITY_CLASS = 4001
TRAFFIC, CLOSE = 6, 2  # Network Activity activities: a flow still open reports Traffic, an ended one Close

_SEVERITY = {"info": (1, "Informational"), "low": (2, "Low"), "medium": (3, "Medium"),
             "high": (4, "High"), "critical": (5, "Critical")}
_ACTIVITY = {"process_exec": (LAUNCH, "Launch"), "process_exit": (TERMINATE, "Terminate")}

try:
    _VERSION = metadata.version("siemhub")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    _VERSION = "0"
_PRODUCT = {"name": "siemhub", "vendor_name": "siemhub", "version": _VERSION}

_sec_cache: dict[str, int] = {}


def epoch_ms(rfc3339: str) -> int:
    """'2026-11-25T22:21:27.507097186Z' -> milliseconds since the epoch (UTC, as siemhub writes it)."""
    head = rfc3339[:19]
    sec = _sec_cache.get(head)
    if sec is None:
        y, mo, d = int(head[0:4]), int(head[5:7]), int(head[8:10])
        h, mi, s = int(head[11:13]), int(head[14:16]), int(head[17:19])
        sec = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if len(_sec_cache) > 4096:
            _sec_cache.clear()
        _sec_cache[head] = sec
    if len(rfc3339) > 20 and rfc3339[19] == ".":
        digits = rfc3339[20:23].rstrip("Z+-:")
        return sec * 1000 + int(digits.ljust(3, "0"))
    return sec * 1000


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1] or path


def _process(p: Process, parent: Process | None = None) -> dict:
    out: dict = {"pid": p.pid, "uid": p.exec_id}
    if p.tid is not None:
        out["tid"] = p.tid
    if p.binary:
        name = _basename(p.binary)
        out["name"] = name
        out["file"] = {"name": name, "path": p.binary, "type_id": 1, "type": "Regular File"}
    elif p.comm:
        out["name"] = p.comm
    if p.args:
        out["cmd_line"] = shlex.join(p.args)
    if p.uid is not None:
        out["user"] = {"uid": str(p.uid)}
    if p.start_time:
        out["created_time"] = epoch_ms(p.start_time)
    if p.container is not None:
        c: dict = {"uid": p.container.id}
        if p.container.runtime:
            c["runtime"] = p.container.runtime
        if p.pod is not None and p.pod.container is not None and p.pod.container.name:
            c["name"] = p.pod.container.name
        if p.pod is not None:
            c["orchestrator"] = "kubernetes"
            if p.pod.uid:
                c["pod_uuid"] = p.pod.uid
            pc = p.pod.container
            if pc is not None and pc.image and pc.image_id:  # OCSF's Image requires its uid: from the API only
                slash, colon = pc.image.rfind("/"), pc.image.rfind(":")
                tagged = colon > slash and "@" not in pc.image
                image: dict = {"name": pc.image[:colon] if tagged else pc.image, "uid": pc.image_id}
                if tagged:
                    image["tag"] = pc.image[colon + 1 :]
                c["image"] = image
        out["container"] = c
    if parent is not None:
        out["parent_process"] = _process(parent)
    return out


def _unmapped(e: Event) -> dict:
    u: dict = {}
    p = e.process
    if p is not None:
        if p.cwd is not None:
            u["cwd"] = p.cwd
        if p.flags:
            u["flags"] = list(p.flags)
        for k in ("euid", "gid", "egid", "auid", "ppid", "cgroup_id"):
            v = getattr(p, k)
            if v is not None:
                u[k] = v
        if p.pod is not None:
            u["pod"] = msgspec.to_builtins(p.pod)
    if e.exit is not None:
        if e.exit.signal:
            u["exit_signal"] = e.exit.signal
        if e.exit.core_dumped:
            u["core_dumped"] = True
    if e.node.labels:
        u["node_labels"] = dict(e.node.labels)
    if e.node.cluster:
        u["cluster"] = e.node.cluster
    if e.tags:
        u["tags"] = list(e.tags)
    if e.status is not None:
        u["status"] = msgspec.to_builtins(e.status)
    return u


def to_obj(e: Event) -> dict:
    severity_id, severity = _SEVERITY.get(e.severity, (0, "Unknown"))
    activity = _ACTIVITY.get(e.type)
    meta = {"uid": e.id, "version": OCSF_VERSION, "product": _PRODUCT, "original_time": e.time,
            "log_name": e.type, "labels": [f"siemhub_schema_version:{e.schema_version}"]}
    device = {"hostname": e.node.name, "name": e.node.name, "type_id": 0, "type": "Unknown"}
    if e.type == "dns_query" and e.network is not None and e.process is not None:
        return _dns_activity(e, meta, device, severity_id, severity)
    if e.type == "network_flow" and e.network is not None and e.process is not None:
        return _network_flow(e, meta, device, severity_id, severity)
    if activity is None or e.process is None:
        out = {"class_uid": 0, "class_name": "Base Event", "category_uid": 0, "category_name": "Uncategorized",
               "activity_id": OTHER, "activity_name": e.type, "type_uid": OTHER, "type_name": f"Base Event: {e.type}",
               "time": epoch_ms(e.time), "severity_id": severity_id, "severity": severity,
               "message": e.type, "metadata": meta}
        # Base Event has no `device` before OCSF 1.5 (the host profile does not apply to it there)
        unmapped = {"node": e.node.name, **_unmapped(e)}
        if unmapped:
            out["unmapped"] = unmapped
        return out
    activity_id, activity_name = activity
    p = e.process
    process = _process(p, e.parent)
    # Who did it: the parent launched the process; a process terminates itself (or is killed: the
    # signal is in unmapped.exit_signal).
    actor_process = _process(e.parent) if activity_id == LAUNCH and e.parent is not None else _process(p)
    out = {
        "class_uid": PROCESS_ACTIVITY, "class_name": "Process Activity",
        "category_uid": SYSTEM_ACTIVITY, "category_name": "System Activity",
        "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": PROCESS_ACTIVITY * 100 + activity_id, "type_name": f"Process Activity: {activity_name}",
        "time": epoch_ms(e.time), "severity_id": severity_id, "severity": severity,
        "metadata": meta, "device": device, "actor": {"process": actor_process}, "process": process,
    }
    if p.container is not None:
        meta["profiles"] = ["container"]
    if e.exit is not None:
        if e.exit.code is not None:
            out["exit_code"] = e.exit.code
        if e.exit.duration_ns is not None:
            out["duration"] = e.exit.duration_ns // 1_000_000
        out["process"]["terminated_time"] = out["time"]
    unmapped = _unmapped(e)
    if unmapped:
        out["unmapped"] = unmapped
    return out


def _dns_activity(e: Event, meta: dict, device: dict, severity_id: int, severity: str) -> dict:
    n = e.network
    src: dict = {"hostname": e.node.name}
    if n.source_ip:
        src["ip"] = n.source_ip
    if n.source_port is not None:
        src["port"] = n.source_port
    dst = {k: v for k, v in (("ip", n.destination_ip), ("port", n.destination_port)) if v is not None}
    out = {
        "class_uid": DNS_ACTIVITY, "class_name": "DNS Activity",
        "category_uid": NETWORK_ACTIVITY, "category_name": "Network Activity",
        "activity_id": DNS_QUERY, "activity_name": "Query",
        "type_uid": DNS_ACTIVITY * 100 + DNS_QUERY, "type_name": "DNS Activity: Query",
        "time": epoch_ms(e.time), "severity_id": severity_id, "severity": severity,
        "metadata": meta, "device": device, "actor": {"process": _process(e.process, e.parent)},
        "src_endpoint": src, "dst_endpoint": dst,
        "connection_info": {"direction_id": 2, "direction": "Outbound", "protocol_name": n.protocol,
                            "protocol_num": 17 if n.protocol == "udp" else 6,
                            "protocol_ver_id": 6 if n.family == "ipv6" else 4},
    }
    # actor and device come with the host profile in the Network Activity classes
    meta["profiles"] = ["host", "container"] if e.process.container is not None else ["host"]
    q = n.dns
    if n.dns_query is not None:  # hostname is required in a query object: none when the name was unreadable
        query: dict = {"hostname": n.dns_query}
        if q is not None and q.type:
            query["type"] = q.type
        if q is not None and q.id is not None:
            query["packet_uid"] = q.id
        out["query"] = query
    unmapped = _unmapped(e)
    if q is not None and q.flags:
        unmapped["dns_flags"] = list(q.flags)
    if q is not None and q.id is not None and n.dns_query is None:
        unmapped["dns_id"] = q.id
    if unmapped:
        out["unmapped"] = unmapped
    return out


def _network_flow(e: Event, meta: dict, device: dict, severity_id: int, severity: str) -> dict:
    """A UDP flow as Network Activity: Traffic while it lasts, Close when it ended (bytes and packets
    in `traffic`, seen from the source endpoint: out = from source to destination)."""
    n = e.network
    src = {k: v for k, v in (("ip", n.source_ip), ("port", n.source_port)) if v is not None}
    dst = {k: v for k, v in (("ip", n.destination_ip), ("port", n.destination_port)) if v is not None}
    outbound = n.direction != "inbound"
    sent, received = n.bytes_sent or 0, n.bytes_received or 0
    dsent, dreceived = n.datagrams_sent or 0, n.datagrams_received or 0
    out_b, in_b, out_p, in_p = (sent, received, dsent, dreceived) if outbound else (received, sent, dreceived, dsent)
    activity_id, activity_name = (CLOSE, "Close") if n.flow_end else (TRAFFIC, "Traffic")
    out = {
        "class_uid": NETWORK_ACTIVITY_CLASS, "class_name": "Network Activity",
        "category_uid": NETWORK_ACTIVITY, "category_name": "Network Activity",
        "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": NETWORK_ACTIVITY_CLASS * 100 + activity_id, "type_name": f"Network Activity: {activity_name}",
        "time": epoch_ms(e.time), "severity_id": severity_id, "severity": severity,
        "metadata": meta, "device": device, "actor": {"process": _process(e.process, e.parent)},
        "src_endpoint": src, "dst_endpoint": dst,
        "connection_info": {"direction_id": 2 if outbound else 1, "direction": "Outbound" if outbound else "Inbound",
                            "protocol_name": n.protocol, "protocol_num": 17 if n.protocol == "udp" else 6,
                            "protocol_ver_id": 6 if n.family == "ipv6" else 4},
        "traffic": {"bytes_out": out_b, "bytes_in": in_b, "packets_out": out_p, "packets_in": in_p,
                    "bytes": out_b + in_b, "packets": out_p + in_p},
    }
    if n.first_seen:
        out["start_time"] = epoch_ms(n.first_seen)
    if n.last_seen:
        out["end_time"] = epoch_ms(n.last_seen)
    if n.duration_ns is not None:
        out["duration"] = n.duration_ns // 1_000_000
    meta["profiles"] = ["host", "container"] if e.process.container is not None else ["host"]
    unmapped = _unmapped(e)
    if n.flow_end:
        unmapped["flow_end"] = n.flow_end
    if unmapped:
        out["unmapped"] = unmapped
    return out


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


def encode_lines(batch: Sequence[Event]) -> bytes:
    return _encoder.encode_lines([to_obj(e) for e in batch])


FORMAT = Format("ocsf", encode_lines, to_obj)
