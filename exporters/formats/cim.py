"""CIM format: the canonical event with the field names of Splunk's Common Information Model
(docs/cim-mapping.md, field by field).

`to_cim(event)` is a pure function returning a flat object (Splunk's `KV_MODE = json` extracts each
top-level key as a field; arrays become multi-value fields named `<key>{}`, objects `<key>.<sub>`):

- process events fill the Endpoint.Processes fields (`process`, `process_id`, `process_guid`,
  `process_name`, `process_path`, `process_exec`, `parent_process*`, `user`, `user_id`, `dest`...);
- file_access the Endpoint.Filesystem fields (`action` created/deleted/modified/read/acl_modified,
  `file_path`, `file_name`) plus the process fields of the process that touched the file;
- network_* and dns_query the Network_Traffic fields (`src`, `src_ip`, `src_port`, `dest`, `dest_ip`,
  `dest_port`, `transport`, `direction`, `bytes_in`/`bytes_out`, `duration`; for UDP flows also
  `packets_in`/`packets_out`) and, for DNS, the Network_Resolution ones (`query`, `record_type`);
- privilege_change the Change fields (`change_type`, `object_category`, `src_user`, `user`, `status`);
- policy_action the Alerts/Intrusion_Detection fields (`signature`, `signature_id`, `category`,
  `severity`, `action` allowed/blocked).

Every event carries `vendor_product`, `dvc` (the node), `event_id`, `siemhub_type`, `severity` and
`timestamp` (RFC 3339, what props.conf extracts _time from when events come from a file). Which CIM
data model an event belongs to is decided by Splunk's tags (dashboards/splunk: eventtypes.conf +
tags.conf, by sourcetype), not by a field here. `SOURCETYPE_CATEGORY` names the sourcetype suffix of
each event type (siemhub:process, siemhub:file, ...), shared by the Splunk exporter and app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from siemhub.collector.core.event import Event, Process, enc_hook
from siemhub.exporters.formats.base import Format

VENDOR_PRODUCT = "siemhub"

# event type -> sourcetype suffix (siemhub:<category>)
SOURCETYPE_CATEGORY: dict[str, str] = {
    "process_exec": "process",
    "process_exit": "process",
    "file_access": "file",
    "network_connect": "network",
    "network_accept": "network",
    "network_close": "network",
    "network_flow": "network",
    "dns_query": "network",
    "privilege_change": "privilege",
    "policy_action": "policy",
    "agent_status": "agent",
}
CATEGORIES = ("process", "file", "network", "privilege", "policy", "agent")

# CIM severity values (Alerts, Intrusion_Detection): informational, low, medium, high, critical
_SEVERITY = {"info": "informational", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}

# file operation -> Endpoint.Filesystem action
_FILE_ACTION = {"open": "read", "read": "read", "open_read": "read", "write": "modified", "open_write": "modified",
                "truncate": "modified", "rename": "modified", "unlink": "deleted", "chmod": "acl_modified",
                "chown": "acl_modified"}

# network event type -> Network_Traffic action
_NET_ACTION = {"network_connect": "allowed", "network_accept": "allowed", "network_close": "teardown",
               "network_flow": "allowed", "dns_query": "allowed"}

# policy action -> CIM action (Intrusion_Detection: allowed, blocked)
_POLICY_ACTION = {"sigkill": "blocked", "block": "blocked"}


def category(event_type: str) -> str:
    return SOURCETYPE_CATEGORY.get(event_type, "other")


def _cmdline(p: Process) -> str:
    return " ".join(p.args) if p.args else (p.binary or p.comm or "")


def _name(p: Process) -> str | None:
    if p.binary:
        return p.binary.rsplit("/", 1)[-1]
    return p.comm


def _process_fields(p: Process, d: dict[str, Any]) -> None:
    d["process_id"] = p.pid
    d["process_guid"] = p.exec_id
    name = _name(p)
    if name:
        d["process_name"] = name
        d["process_exec"] = name
    if p.binary:
        d["process_path"] = p.binary
    cmd = _cmdline(p)
    if cmd:
        d["process"] = cmd
    if p.cwd is not None:
        d["process_current_directory"] = p.cwd
    if p.tid is not None:
        d["thread_id"] = p.tid
    # CIM `user` is the account the process runs as: the effective uid (no names in the kernel)
    if p.euid is not None:
        d["user"] = str(p.euid)
        d["user_id"] = str(p.euid)
    if p.uid is not None:
        d["process_real_user_id"] = str(p.uid)
    if p.auid is not None:
        d["process_login_user_id"] = str(p.auid)
    if p.start_time is not None:
        d["process_start_time"] = p.start_time
    if p.flags:
        d["process_flags"] = list(p.flags)
    caps = p.caps
    if caps is not None and caps.effective:
        d["process_capabilities"] = list(caps.effective)
    if p.entered_namespaces:
        d["process_entered_namespaces"] = list(p.entered_namespaces)
    if p.container is not None:
        d["container_id"] = p.container.id
        if p.container.runtime:
            d["container_runtime"] = p.container.runtime
    pod = p.pod
    if pod is not None:
        d["k8s_namespace"] = pod.namespace
        d["k8s_pod"] = pod.name
        if pod.workload:
            d["k8s_workload"] = pod.workload
        if pod.workload_kind:
            d["k8s_workload_kind"] = pod.workload_kind
        if pod.labels:
            d["k8s_pod_labels"] = [f"{k}={v}" for k, v in sorted(pod.labels.items())]
        if pod.container is not None:
            if pod.container.name:
                d["k8s_container"] = pod.container.name
            if pod.container.image:
                d["container_image"] = pod.container.image


# Process images are immutable and shared (one image is the `process` of its exec and exit events and
# the `parent` of each of its children): their CIM fields are built once and copied into each event.
# id(process) -> (process, fields); the process is kept referenced so its id cannot be reused meanwhile.
_CACHE_MAX = 4096
_cache: dict[tuple[int, bool], tuple[Process, dict[str, Any]]] = {}


def _cached(p: Process, parent: bool) -> dict[str, Any]:
    """The fields of one image (read-only: shared by every event that names it)."""
    key = (id(p), parent)
    hit = _cache.get(key)
    if hit is not None and hit[0] is p:
        return hit[1]
    d: dict[str, Any] = {}
    if parent:
        _parent_image(p, d)
    else:
        _process_fields(p, d)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[key] = (p, d)
    return d


def _parent_fields(parent: Process | None, p: Process | None, d: dict[str, Any]) -> None:
    if parent is not None:
        d.update(_cached(parent, True))
    elif p is not None:
        if p.ppid is not None:
            d["parent_process_id"] = p.ppid
        if p.parent_exec_id is not None:
            d["parent_process_guid"] = p.parent_exec_id


def _parent_image(parent: Process, d: dict[str, Any]) -> None:
    d["parent_process_id"] = parent.pid
    d["parent_process_guid"] = parent.exec_id
    name = _name(parent)
    if name:
        d["parent_process_name"] = name
        d["parent_process_exec"] = name
    if parent.binary:
        d["parent_process_path"] = parent.binary
    cmd = _cmdline(parent)
    if cmd:
        d["parent_process"] = cmd
    if parent.euid is not None:
        d["parent_user"] = str(parent.euid)


def to_cim(event: Event) -> dict[str, Any]:
    """One canonical event -> one flat CIM object (a plain dict, ready for JSON)."""
    t = event.type
    d: dict[str, Any] = {
        "timestamp": event.time,
        "event_id": event.id,
        "siemhub_type": t,
        "vendor_product": VENDOR_PRODUCT,
        "severity": _SEVERITY.get(event.severity, event.severity),
        "dvc": event.node.name,
        "dest": event.node.name,  # the endpoint; network events replace it with the remote side below
        "os": "Linux",
        "schema_version": event.schema_version,
    }
    if event.node.labels:
        d["node_labels"] = dict(event.node.labels)
    if event.node.cluster:
        d["k8s_cluster"] = event.node.cluster
    if event.tags:
        d["siemhub_tags"] = list(event.tags)
    p = event.process
    if p is not None:
        d.update(_cached(p, False))
    _parent_fields(event.parent, p, d)

    if t in ("process_exec", "process_exit"):
        d["action"] = "allowed"
        d["siemhub_action"] = "exec" if t == "process_exec" else "exit"
    x = event.exit
    if x is not None:
        if x.code is not None:
            d["process_exit_code"] = x.code
        if x.signal:
            d["process_exit_signal"] = x.signal
        if x.core_dumped:
            d["process_core_dumped"] = True
        if x.duration_ns is not None:
            d["duration"] = x.duration_ns / 1e9
    _body(event, d)
    st = event.status
    if st is not None:
        c = st.counters
        d["counters"] = dict(c)
        d["lost_events"] = sum(v for k, v in c.items() if "_ringbuf_lost" in k)
        d["dropped_events"] = sum(v for k, v in c.items() if k.startswith("exporter_") and "_dropped" in k)
        d["decode_errors"] = sum(v for k, v in c.items() if k.endswith("_decode_errors"))
    return d


def _body(event: Event, d: dict[str, Any]) -> None:
    f = event.file
    if f is not None:
        d["action"] = "created" if f.operation.startswith("open") and "O_CREAT" in f.flags else \
            _FILE_ACTION.get(f.operation, "modified")
        d["file_path"] = f.path
        d["file_name"] = f.path.rpartition("/")[2]
        d["file_operation"] = f.operation
        if f.flags:
            d["file_flags"] = list(f.flags)
        if f.target is not None:
            d["file_target_path"] = f.target
        if f.inode is not None:
            d["file_inode"] = f.inode
        if f.mode is not None:
            d["file_mode"] = format(f.mode & 0o7777, "o")
        if f.uid is not None:
            d["file_owner_id"] = str(f.uid)
        if f.result is not None:
            d["file_result"] = f.result
            d["status"] = "failure" if f.result < 0 else "success"
    n = event.network
    if n is not None:
        d["action"] = _NET_ACTION.get(event.type, "allowed")
        d["transport"] = n.protocol
        d["protocol"] = "ip"
        d["protocol_version"] = n.family
        if n.direction:
            d["direction"] = n.direction
        if n.source_ip is not None:
            d["src"] = d["src_ip"] = n.source_ip
        if n.source_port is not None:
            d["src_port"] = n.source_port
        if n.destination_ip is not None:
            d["dest"] = d["dest_ip"] = n.destination_ip
        else:
            d.pop("dest", None)
        if n.destination_port is not None:
            d["dest_port"] = n.destination_port
        # bytes as the connection's source side sees them (the local side on an outbound connection)
        outbound = n.direction != "inbound"
        sent, recv = (n.bytes_sent, n.bytes_received) if outbound else (n.bytes_received, n.bytes_sent)
        if sent is not None:
            d["bytes_out"] = sent
        if recv is not None:
            d["bytes_in"] = recv
        if sent is not None or recv is not None:
            d["bytes"] = (sent or 0) + (recv or 0)
        if n.duration_ns is not None:
            d["duration"] = n.duration_ns / 1e9
        if n.datagrams_sent is not None:  # network_flow (UDP): datagrams each way, as the bytes are
            pout, pin = ((n.datagrams_sent, n.datagrams_received) if outbound
                         else (n.datagrams_received, n.datagrams_sent))
            d["packets_out"], d["packets_in"] = pout or 0, pin or 0
            d["packets"] = d["packets_out"] + d["packets_in"]
        if n.flow_end:
            d["flow_end"] = n.flow_end
        if n.dns_query:
            d["query"] = n.dns_query
        q = n.dns
        if q is not None:
            d["app"] = "dns"
            d["message_type"] = "Query"
            if q.type:
                d["record_type"] = q.type
            if q.id is not None:
                d["transaction_id"] = q.id
            if q.flags:
                d["dns_flags"] = list(q.flags)
    pv = event.privilege
    if pv is not None:
        d["action"] = "modified"
        d["change_type"] = "privilege"
        d["object_category"] = "user"
        d["privilege_operation"] = pv.operation
        if pv.old_uid is not None:
            d["src_user"] = d["src_user_id"] = str(pv.old_uid)
        if pv.new_uid is not None:
            d["user"] = d["user_id"] = str(pv.new_uid)
        if pv.old_gid is not None:
            d["src_group_id"] = str(pv.old_gid)
        if pv.new_gid is not None:
            d["group_id"] = str(pv.new_gid)
        if pv.new_caps:
            d["object_attrs"] = list(pv.new_caps)
        for k, v in (("target_pid", pv.target_pid), ("object", pv.name), ("mount_source", pv.source),
                     ("mount_target", pv.target)):
            if v is not None:
                d[k] = v
        if pv.result is not None:
            d["result"] = pv.result
            d["status"] = "failure" if pv.result < 0 else "success"
    pol = event.policy
    if pol is not None:
        d["action"] = "blocked" if pol.enforced or pol.action in _POLICY_ACTION else "allowed"
        d["signature"] = f"{pol.policy}/{pol.rule}" if pol.rule else pol.policy
        d["signature_id"] = pol.rule or pol.policy
        d["category"] = pol.policy
        d["policy_name"] = pol.policy
        if pol.rule:
            d["rule_name"] = pol.rule
        d["policy_action"] = pol.action
        d["policy_enforced"] = pol.enforced
        d["ids_type"] = "host"
        if pol.reason:
            d["reason"] = pol.reason


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


def encode_lines(batch: Sequence[Event]) -> bytes:
    return _encoder.encode_lines([to_cim(e) for e in batch])


def to_obj(event: Event) -> dict:
    return to_cim(event)


FORMAT = Format("cim", encode_lines, to_obj)
