"""OpenTelemetry format: the canonical event as an OTLP LogRecord (docs/otel-mapping.md).

Two pure steps:
- `to_otel(event, observed_ns)` maps one event to a LogRecord in plain Python (times in Unix
  nanoseconds, severity number and text, the record's event name `siemhub.<type>`, a short human body,
  attributes named by the OpenTelemetry semantic conventions plus `siemhub.*` for the rest).
  `resource_attributes(node, ...)` gives the Resource of the node the events come from.
- `LogsEncoder.encode(events, observed_ns)` writes the ExportLogsServiceRequest of a batch as
  protobuf bytes: one ResourceLogs per node in the batch, its Resource and InstrumentationScope
  serialized once (from the opentelemetry-proto messages) and the LogRecords written straight in the
  protobuf wire format. Attributes that repeat from event to event (executable, working directory,
  user ids, container, pod...) are encoded once and their bytes reused. bench/otlp_throughput.py
  measures this against building the same request from opentelemetry-proto messages (the figures are
  in docs/benchmarks.md); tests/unit/exporters/formats/test_otel_format.py parses every encoding back with
  opentelemetry-proto and compares it with the message-built request.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from siemhub.collector.core.event import Event, Node, Process

SCOPE_NAME = "siemhub"

# siemhub severity -> (OpenTelemetry SeverityNumber, its short name). The text of the record is
# siemhub's own word (the spec's "severity as known at the source"); the number orders it.
SEVERITY: dict[str, tuple[int, str]] = {
    "info": (9, "INFO"),
    "low": (10, "INFO2"),
    "medium": (13, "WARN"),
    "high": (17, "ERROR"),
    "critical": (21, "FATAL"),
}

# Kubernetes workload kinds with a semantic-convention name attribute (k8s.<kind>.name).
_WORKLOAD_ATTR = {
    "Deployment": "k8s.deployment.name", "DaemonSet": "k8s.daemonset.name",
    "StatefulSet": "k8s.statefulset.name", "ReplicaSet": "k8s.replicaset.name", "Job": "k8s.job.name",
    "CronJob": "k8s.cronjob.name",
}

BODY_MAX = 512  # characters of the human-readable body (the attributes carry the full values)


def siemhub_version() -> str:
    try:
        return version("siemhub")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


# --- time --------------------------------------------------------------------------------------

_EPOCH_CACHE: dict[str, int] = {}


def unix_nanos(rfc3339: str) -> int:
    """`2023-11-14T22:13:27.000000123Z` (the canonical event's UTC time) -> Unix nanoseconds. The
    seconds part is cached (events of one second share it); a missing fraction is 0; an offset other
    than Z is honoured."""
    head = rfc3339[:19]
    secs = _EPOCH_CACHE.get(head)
    if secs is None:
        y, mo, d = int(head[0:4]), int(head[5:7]), int(head[8:10])
        h, mi, s = int(head[11:13]), int(head[14:16]), int(head[17:19])
        secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
        if len(_EPOCH_CACHE) > 4096:
            _EPOCH_CACHE.clear()
        _EPOCH_CACHE[head] = secs
    rest = rfc3339[19:]
    frac = 0
    if rest.startswith("."):
        digits = 0
        while 1 + digits < len(rest) and rest[1 + digits].isdigit():
            digits += 1
        frac = int((rest[1 : 1 + digits] + "000000000")[:9]) if digits else 0
        rest = rest[1 + digits :]
    if rest and rest not in ("Z", "z"):
        sign = -1 if rest[0] == "-" else 1
        oh, om = int(rest[1:3]), int(rest[4:6])
        secs -= sign * (oh * 3600 + om * 60)
    return secs * 1_000_000_000 + frac


# --- the mapping ---------------------------------------------------------------------------------


def _name(p: Process) -> str:
    if p.binary:
        return p.binary.rsplit("/", 1)[-1]
    return p.comm or ""


def _split_image(image: str) -> tuple[str, str | None]:
    slash, colon = image.rfind("/"), image.rfind(":")
    if colon > slash and "@" not in image:
        return image[:colon], image[colon + 1 :]
    return image, None


def _process_attrs(p: Process, a: dict[str, Any]) -> None:
    a["process.pid"] = p.pid
    if p.ppid is not None:
        a["process.parent_pid"] = p.ppid
    if p.tid is not None:
        a["thread.id"] = p.tid
    if p.binary:
        a["process.executable.path"] = p.binary
    name = _name(p)
    if name:
        a["process.executable.name"] = name
    if p.args:
        a["process.command_args"] = list(p.args)
    if p.cwd is not None:
        a["process.working_directory"] = p.cwd
    if p.euid is not None:
        a["process.user.id"] = p.euid
    if p.uid is not None:
        a["process.real_user.id"] = p.uid
    if p.egid is not None:
        a["process.group.id"] = p.egid
    if p.gid is not None:
        a["process.real_group.id"] = p.gid
    if p.start_time is not None:
        a["process.creation.time"] = p.start_time
    a["siemhub.process.exec_id"] = p.exec_id
    if p.parent_exec_id is not None:
        a["siemhub.process.parent_exec_id"] = p.parent_exec_id
    if p.comm is not None:
        a["siemhub.process.comm"] = p.comm
    if p.auid is not None:
        a["siemhub.process.auid"] = p.auid
    if p.flags:
        a["siemhub.process.flags"] = list(p.flags)
    if p.cgroup_id is not None:
        a["siemhub.process.cgroup_id"] = p.cgroup_id
    caps = p.caps
    if caps is not None:
        if caps.effective:
            a["siemhub.process.caps.effective"] = list(caps.effective)
        if caps.permitted:
            a["siemhub.process.caps.permitted"] = list(caps.permitted)
    if p.entered_namespaces:
        a["siemhub.process.entered_namespaces"] = list(p.entered_namespaces)
    bp = p.binary_properties
    if bp is not None:
        if bp.setuid is not None:
            a["siemhub.process.binary.setuid"] = bp.setuid
        if bp.setgid is not None:
            a["siemhub.process.binary.setgid"] = bp.setgid
    if p.container is not None:
        a["container.id"] = p.container.id
        if p.container.runtime:
            a["container.runtime.name"] = p.container.runtime
    pod = p.pod
    if pod is not None:
        a["k8s.namespace.name"] = pod.namespace
        a["k8s.pod.name"] = pod.name
        if pod.uid:
            a["k8s.pod.uid"] = pod.uid
        if pod.container is not None:
            if pod.container.name:
                a["k8s.container.name"] = pod.container.name
            if pod.container.image:
                img, tag = _split_image(pod.container.image)
                a["container.image.name"] = img
                if tag:
                    a["container.image.tags"] = [tag]
            if pod.container.image_id and "@" in pod.container.image_id:  # <repository>@sha256:<digest>
                a["container.image.repo_digests"] = [pod.container.image_id]
        if pod.workload:
            # the owning workload from the API server: its name, and its kind in workload_kind
            attr = _WORKLOAD_ATTR.get(pod.workload_kind or "")
            if attr:
                a[attr] = pod.workload
            a["siemhub.k8s.workload"] = pod.workload
            if pod.workload_kind:
                a["siemhub.k8s.workload_kind"] = pod.workload_kind
        if pod.qos_class:
            a["siemhub.k8s.pod.qos_class"] = pod.qos_class
        for k, v in sorted(pod.annotations.items()):
            a[f"k8s.pod.annotation.{k}"] = v
        for k, v in sorted(pod.labels.items()):
            a[f"k8s.pod.label.{k}"] = v


def _parent_attrs(pp: Process, a: dict[str, Any]) -> None:
    a["siemhub.parent.exec_id"] = pp.exec_id
    if pp.binary:
        a["siemhub.parent.executable.path"] = pp.binary
    name = _name(pp)
    if name:
        a["siemhub.parent.executable.name"] = name
    if pp.args:
        a["siemhub.parent.command_args"] = list(pp.args)


def _endpoint(ip: str | None, port: int | None) -> str:
    if ip is None:
        return "?"
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}" if port is not None else host


def _body_attrs(e: Event, a: dict[str, Any]) -> None:
    x = e.exit
    if x is not None:
        if x.code is not None:
            a["process.exit.code"] = x.code
        if e.type == "process_exit":
            a["process.exit.time"] = e.time
        if x.signal is not None:
            a["siemhub.exit.signal"] = x.signal
        if x.core_dumped:
            a["siemhub.exit.core_dumped"] = True
        if x.duration_ns is not None:
            a["siemhub.exit.duration_ns"] = x.duration_ns
    f = e.file
    if f is not None:
        a["file.path"] = f.path
        head, _, tail = f.path.rpartition("/")
        a["file.name"] = tail
        if head or f.path.startswith("/"):
            a["file.directory"] = head or "/"
        if f.inode is not None:
            a["file.inode"] = str(f.inode)
        if f.mode is not None:
            a["file.mode"] = format(f.mode & 0o7777, "04o")
        if f.uid is not None:
            a["file.owner.id"] = str(f.uid)
        if f.gid is not None:
            a["file.group.id"] = str(f.gid)
        a["siemhub.file.operation"] = f.operation
        if f.flags:
            a["siemhub.file.flags"] = list(f.flags)
        if f.target is not None:
            a["siemhub.file.target"] = f.target
        if f.result is not None:
            a["siemhub.file.result"] = f.result
    n = e.network
    if n is not None:
        a["network.transport"] = n.protocol
        a["network.type"] = n.family
        if n.source_ip is not None:
            a["source.address"] = n.source_ip
        if n.source_port is not None:
            a["source.port"] = n.source_port
        if n.destination_ip is not None:
            a["destination.address"] = n.destination_ip
        if n.destination_port is not None:
            a["destination.port"] = n.destination_port
        # The connection's server is its destination (connect, dns) or this host (accept); the peer
        # is the other end as this host sees it.
        inbound = n.direction == "inbound"
        srv_ip, srv_port = n.destination_ip, n.destination_port
        peer_ip, peer_port = (n.source_ip, n.source_port) if inbound else (n.destination_ip, n.destination_port)
        local_ip, local_port = (n.destination_ip, n.destination_port) if inbound else (n.source_ip, n.source_port)
        if srv_ip is not None:
            a["server.address"] = srv_ip
        if srv_port is not None:
            a["server.port"] = srv_port
        if peer_ip is not None:
            a["network.peer.address"] = peer_ip
        if peer_port is not None:
            a["network.peer.port"] = peer_port
        if local_ip is not None:
            a["network.local.address"] = local_ip
        if local_port is not None:
            a["network.local.port"] = local_port
        if n.direction is not None:
            a["siemhub.network.direction"] = n.direction
        if n.bytes_sent is not None:
            a["siemhub.network.bytes_sent"] = n.bytes_sent
        if n.bytes_received is not None:
            a["siemhub.network.bytes_received"] = n.bytes_received
        if n.duration_ns is not None:
            a["siemhub.network.duration_ns"] = n.duration_ns
        if n.datagrams_sent is not None:  # network_flow (UDP)
            a["siemhub.network.datagrams_sent"] = n.datagrams_sent
        if n.datagrams_received is not None:
            a["siemhub.network.datagrams_received"] = n.datagrams_received
        if n.flow_end is not None:
            a["siemhub.network.flow_end"] = n.flow_end
        if n.dns_query is not None:
            a["dns.question.name"] = n.dns_query
        d = n.dns
        if d is not None:
            if d.id is not None:
                a["siemhub.dns.id"] = d.id
            if d.type is not None:
                a["siemhub.dns.type"] = d.type
            if d.flags:
                a["siemhub.dns.flags"] = list(d.flags)
    pv = e.privilege
    if pv is not None:
        for k in ("operation", "old_uid", "new_uid", "old_gid", "new_gid", "target_pid", "name", "source",
                  "target", "result"):
            v = getattr(pv, k)
            if v is not None:
                a[f"siemhub.privilege.{k}"] = v
        if pv.new_caps:
            a["siemhub.privilege.new_caps"] = list(pv.new_caps)
    pol = e.policy
    if pol is not None:
        a["siemhub.policy.name"] = pol.policy
        if pol.rule is not None:
            a["siemhub.policy.rule"] = pol.rule
        a["siemhub.policy.action"] = pol.action
        a["siemhub.policy.enforced"] = pol.enforced
        if pol.reason is not None:
            a["siemhub.policy.reason"] = pol.reason
    st = e.status
    if st is not None:
        for k, v in sorted(st.counters.items()):
            a[f"siemhub.status.{k}"] = v


def body(e: Event) -> str:
    """A short sentence for people reading the log line: 'bash executed /usr/bin/curl -s https://...'."""
    p = e.process
    who = _name(p) if p is not None else "?"
    who = who or (p.binary if p is not None else "?") or "?"
    t = e.type
    if t == "process_exec" and p is not None:
        parent = _name(e.parent) if e.parent is not None else ""
        what = " ".join([p.binary or who, *p.args[1:]])
        text = f"{parent} executed {what}" if parent else f"executed {what}"
    elif t == "process_exit" and p is not None:
        x = e.exit
        if x is not None and x.signal:
            text = f"{who} killed by {x.signal}"
        elif x is not None and x.code is not None:
            text = f"{who} exited with code {x.code}"
        else:
            text = f"{who} exited"
    elif e.file is not None:
        f = e.file
        text = f"{who} {f.operation} {f.path}" + (f" -> {f.target}" if f.target else "")
    elif t == "dns_query" and e.network is not None:
        n = e.network
        text = f"{who} queried {n.dns_query or '?'}" + (f" ({n.dns.type})" if n.dns and n.dns.type else "")
    elif e.network is not None:
        n = e.network
        src, dst = _endpoint(n.source_ip, n.source_port), _endpoint(n.destination_ip, n.destination_port)
        verb = {"network_connect": "connected to", "network_accept": "accepted a connection from",
                "network_close": "closed"}.get(t, t)
        if t == "network_accept":
            text = f"{who} {verb} {src} ({n.protocol})"
        elif t == "network_close":
            text = f"{who} {verb} {n.protocol} {src} -> {dst}"
        elif t == "network_flow":
            text = (f"{who} {n.protocol} flow {src} -> {dst}: {n.datagrams_sent or 0} datagrams sent, "
                    f"{n.datagrams_received or 0} received" + (f" ({n.flow_end})" if n.flow_end else ""))
        else:
            text = f"{who} {verb} {dst} ({n.protocol})"
    elif e.privilege is not None:
        pv = e.privilege
        text = f"{who} {pv.operation}"
        if pv.new_uid is not None:
            text += f" uid {pv.old_uid if pv.old_uid is not None else '?'} -> {pv.new_uid}"
        elif pv.name or pv.target:
            text += f" {pv.name or pv.target}"
    elif e.policy is not None:
        pol = e.policy
        rule = f"/{pol.rule}" if pol.rule else ""
        text = f"policy {pol.policy}{rule}: {pol.action} {who}" + (f" ({pol.reason})" if pol.reason else "")
    elif e.status is not None:
        text = f"agent status of {e.node.name}: {len(e.status.counters)} counters"
    else:
        text = f"{t} {who}" if p is not None else t
    return text if len(text) <= BODY_MAX else text[: BODY_MAX - 3] + "..."


def attributes(e: Event) -> dict[str, Any]:
    """The LogRecord attributes of one event (values: str, int, bool, list of str)."""
    a: dict[str, Any] = {"log.record.uid": e.id}
    p = e.process
    if p is not None:
        _process_attrs(p, a)
    if e.parent is not None:
        _parent_attrs(e.parent, a)
    _body_attrs(e, a)
    a["siemhub.schema_version"] = e.schema_version
    if e.tags:
        a["siemhub.tags"] = list(e.tags)
    return a


def event_name(e: Event) -> str:
    return f"siemhub.{e.type}"


def to_otel(e: Event, observed_ns: int) -> dict[str, Any]:
    """One event -> the fields of its LogRecord (pure; observed_ns is when the exporter took it)."""
    number, _ = SEVERITY.get(e.severity, (0, ""))
    return {
        "time_unix_nano": unix_nanos(e.time),
        "observed_time_unix_nano": observed_ns,
        "severity_number": number,
        "severity_text": e.severity,
        "event_name": event_name(e),
        "body": body(e),
        "attributes": attributes(e),
    }


def resource_attributes(node: Node, kubernetes: bool = False, extra: Mapping[str, Any] | None = None,
                        service_version: str | None = None) -> dict[str, Any]:
    """The Resource of the events of one node: service.name/version, host.name, k8s.node.name (when the
    agent runs on Kubernetes), k8s.cluster.name (node.cluster), the node's labels as siemhub.node.label.<key>; `extra` (the exporter's
    `resource` setting) is applied last and wins."""
    a: dict[str, Any] = {"service.name": "siemhub",
                         "service.version": service_version or siemhub_version(),
                         "host.name": node.name}
    if kubernetes:
        a["k8s.node.name"] = node.name
    if node.cluster:
        a["k8s.cluster.name"] = node.cluster
    for k, v in sorted(node.labels.items()):
        a[f"siemhub.node.label.{k}"] = v
    if extra:
        a.update(extra)
    return a


# --- protobuf wire encoding -----------------------------------------------------------------------
#
# Field numbers from opentelemetry-proto (logs/v1, common/v1, resource/v1, collector/logs/v1):
#   ExportLogsServiceRequest.resource_logs = 1; ResourceLogs.resource = 1, .scope_logs = 2;
#   ScopeLogs.scope = 1, .log_records = 2; LogRecord.time_unix_nano = 1 (fixed64), .severity_number
#   = 2, .severity_text = 3, .body = 5, .attributes = 6, .observed_time_unix_nano = 11 (fixed64),
#   .event_name = 12; KeyValue.key = 1, .value = 2; AnyValue.string_value = 1, .bool_value = 2,
#   .int_value = 3, .double_value = 4, .array_value = 5; ArrayValue.values = 1.

_BYTE = [bytes((i,)) for i in range(256)]
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # int64: two's complement, ten bytes
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_BYTE[n] if n < 0x80 else _varint(n)) + payload


def any_value(v: Any) -> bytes:
    """The serialized AnyValue of a Python value (str, bool, int, float, list/tuple of those, bytes)."""
    if type(v) is str:
        return _ld(b"\x0a", v.encode("utf-8", "surrogatepass"))
    if v is True or v is False:
        return b"\x10\x01" if v else b"\x10\x00"
    if type(v) is int:
        return b"\x18" + _varint(v)
    if type(v) is float:
        return b"\x21" + _DOUBLE(v)
    if isinstance(v, list | tuple):
        if all(type(x) is str for x in v):  # string arrays (arguments, flags): the common case, inline
            parts = []
            for x in v:
                b = x.encode("utf-8", "surrogatepass")
                n = len(b)
                b = b"\x0a" + (_BYTE[n] if n < 0x80 else _varint(n)) + b  # AnyValue.string_value
                n = len(b)
                parts.append(b"\x0a" + (_BYTE[n] if n < 0x80 else _varint(n)) + b)  # ArrayValue.values
            return _ld(b"\x2a", b"".join(parts))
        return _ld(b"\x2a", b"".join([_ld(b"\x0a", any_value(x)) for x in v]))
    if isinstance(v, bytes | bytearray):
        return _ld(b"\x3a", bytes(v))
    if isinstance(v, int):  # an int subclass (IntEnum)
        return b"\x18" + _varint(int(v))
    return _ld(b"\x0a", str(v).encode("utf-8", "surrogatepass"))


def key_value(key: str, v: Any) -> bytes:
    """A serialized KeyValue (the bytes of one attribute)."""
    return _ld(b"\x0a", key.encode()) + _ld(b"\x12", any_value(v))


def _resource_bytes(attrs: Mapping[str, Any]) -> bytes:
    """Resource and its attributes through the opentelemetry-proto message (once per node)."""
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    r = Resource()
    r.ParseFromString(b"".join(_ld(b"\x0a", key_value(k, v)) for k, v in attrs.items()))
    return r.SerializeToString()


def _scope_bytes(name: str, ver: str) -> bytes:
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

    return InstrumentationScope(name=name, version=ver).SerializeToString()


# Attributes that differ from event to event: caching their encodings would only churn the cache.
UNIQUE_ATTRIBUTES = ("log.record.uid", "siemhub.process.exec_id", "process.pid", "thread.id",
                     "process.command_args", "process.exit.time", "siemhub.exit.duration_ns",
                     "source.port", "network.local.port", "siemhub.network.duration_ns", "siemhub.dns.id",
                     "siemhub.network.bytes_sent", "siemhub.network.bytes_received", "file.inode",
                     "siemhub.network.datagrams_sent", "siemhub.network.datagrams_received")


class LogsEncoder:
    """Batches of events -> serialized ExportLogsServiceRequest.

    The output depends only on the events, observed_ns and the settings given here: the caches only
    remember encodings already made (attribute bytes by key and value, a Resource per node), bounded
    so a long run with ever new values does not grow them without end."""

    CACHE_MAX = 65_536  # attribute encodings remembered (each a few dozen bytes)

    def __init__(self, kubernetes: bool = False, resource: Mapping[str, Any] | None = None,
                 service_version: str | None = None) -> None:
        self.kubernetes = kubernetes
        self.extra = dict(resource or {})
        self.service_version = service_version or siemhub_version()
        self._scope = _ld(b"\x0a", _scope_bytes(SCOPE_NAME, self.service_version))
        self._resources: dict[tuple, bytes] = {}
        # attributes whose values rarely repeat (ids, pids, arguments): the key's bytes only
        self._once = {k: _ld(b"\x0a", k.encode()) for k in UNIQUE_ATTRIBUTES}
        self._kv: dict[tuple[str, Any], bytes] = {}
        self._names: dict[str, bytes] = {}
        self._sev: dict[str, tuple[bytes, bytes]] = {}

    def resource_for(self, node: Node) -> bytes:
        key = (node.name, node.cluster, tuple(sorted(node.labels.items())))
        r = self._resources.get(key)
        if r is None:
            if len(self._resources) > 1024:
                self._resources.clear()
            attrs = resource_attributes(node, self.kubernetes, self.extra, self.service_version)
            r = self._resources[key] = _ld(b"\x0a", _resource_bytes(attrs))
        return r

    def _attributes(self, attrs: dict[str, Any]) -> bytes:
        get = self._kv.get
        once = self._once
        parts = []
        add = parts.append
        for item in attrs.items():
            v = item[1]
            if item[0] in once:  # a value of this event alone: encode it, do not remember it
                if type(v) is str:
                    val = v.encode("utf-8", "surrogatepass")
                    n = len(val)
                    val = b"\x0a" + (_BYTE[n] if n < 0x80 else _varint(n)) + val
                elif type(v) is int:
                    val = b"\x18" + _varint(v)
                else:
                    val = any_value(v)
                body = once[item[0]] + _ld(b"\x12", val)
                n = len(body)
                add(b"\x32" + (_BYTE[n] if n < 0x80 else _varint(n)) + body)
                continue
            b = get(item) if type(v) is str or type(v) is int else None
            if b is None:
                b = self._attribute(item)
            add(b)
        return b"".join(parts)

    def _attribute(self, item: tuple[str, Any]) -> bytes:
        """The field bytes of one attribute not found by (key, value): lists by (key, tuple), other
        types by (key, value, type) (True == 1 == 1.0 must not share an entry); encoded on a miss."""
        key, v = item
        t = type(v)
        if t is str or t is int:
            ck: tuple = item
        elif t is list:
            ck = (key, tuple(v), list)
        else:
            ck = (key, v, t)
        cache = self._kv
        b = cache.get(ck)
        if b is None:
            if len(cache) >= self.CACHE_MAX:
                cache.clear()
            b = cache[ck] = _ld(b"\x32", key_value(key, v))
        return b

    def _head(self, e: Event) -> tuple[bytes, bytes]:
        """(severity_number + severity_text fields, event_name field), per (type, severity)."""
        key = e.type + "\0" + e.severity
        h = self._sev.get(key)
        if h is None:
            number, _ = SEVERITY.get(e.severity, (0, ""))
            h = ((b"\x10" + _varint(number) if number else b"") + _ld(b"\x1a", e.severity.encode()),
                 _ld(b"\x62", event_name(e).encode()))
            self._sev[key] = h
        return h

    def record(self, e: Event, observed: bytes) -> bytes:
        """One serialized LogRecord (observed: the 8 bytes of observed_time_unix_nano), its fields in
        field-number order as protobuf itself writes them."""
        sev, name = self._head(e)
        return b"".join((
            b"\x09", _FIXED64(unix_nanos(e.time)),
            sev,
            _ld(b"\x2a", _ld(b"\x0a", body(e).encode("utf-8", "surrogatepass"))),
            self._attributes(attributes(e)),
            b"\x59", observed,
            name,
        ))

    def encode(self, events: Sequence[Event], observed_ns: int) -> bytes:
        """The request for a batch: one ResourceLogs per node (in order of first appearance)."""
        observed = _FIXED64(observed_ns)
        by_node: dict[str, list[bytes]] = {}
        nodes: dict[str, Node] = {}
        for e in events:
            name = e.node.name
            recs = by_node.get(name)
            if recs is None:
                recs = by_node[name] = []
                nodes[name] = e.node
            recs.append(_ld(b"\x12", self.record(e, observed)))
        out = []
        for name, recs in by_node.items():
            scope_logs = _ld(b"\x12", self._scope + b"".join(recs))
            out.append(_ld(b"\x0a", self.resource_for(nodes[name]) + scope_logs))
        return b"".join(out)


def encode_request(events: Iterable[Event], observed_ns: int, kubernetes: bool = False,
                   resource: Mapping[str, Any] | None = None, service_version: str | None = None) -> bytes:
    """One-shot form of LogsEncoder.encode (tests, tools)."""
    return LogsEncoder(kubernetes, resource, service_version).encode(list(events), observed_ns)


# --- the same request built from opentelemetry-proto messages --------------------------------------


def _any_message(v: Any):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue

    if type(v) is str:
        return AnyValue(string_value=v)
    if type(v) is bool:
        return AnyValue(bool_value=v)
    if type(v) is int:
        return AnyValue(int_value=v)
    if type(v) is float:
        return AnyValue(double_value=v)
    if isinstance(v, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any_message(x) for x in v]))
    if isinstance(v, bytes | bytearray):
        return AnyValue(bytes_value=bytes(v))
    return AnyValue(string_value=str(v))


def request_message(events: Iterable[Event], observed_ns: int, kubernetes: bool = False,
                    resource: Mapping[str, Any] | None = None, service_version: str | None = None):
    """The ExportLogsServiceRequest of a batch built from opentelemetry-proto messages, one per event
    and attribute: the reference the wire encoder is tested against, and the "proto messages" variant
    of bench/otlp_throughput.py. Same content as LogsEncoder.encode."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    ver = service_version or siemhub_version()
    req = ExportLogsServiceRequest()
    by_node: dict[str, Any] = {}
    for e in events:
        scope_logs = by_node.get(e.node.name)
        if scope_logs is None:
            attrs = resource_attributes(e.node, kubernetes, resource, ver)
            rl = ResourceLogs(resource=Resource(attributes=[KeyValue(key=k, value=_any_message(v))
                                                            for k, v in attrs.items()]))
            rl.scope_logs.append(ScopeLogs(scope=InstrumentationScope(name=SCOPE_NAME, version=ver)))
            req.resource_logs.append(rl)
            scope_logs = by_node[e.node.name] = req.resource_logs[-1].scope_logs[0]
        r = to_otel(e, observed_ns)
        scope_logs.log_records.append(LogRecord(
            time_unix_nano=r["time_unix_nano"], observed_time_unix_nano=r["observed_time_unix_nano"],
            severity_number=r["severity_number"], severity_text=r["severity_text"],
            event_name=r["event_name"], body=_any_message(r["body"]),
            attributes=[KeyValue(key=k, value=_any_message(v)) for k, v in r["attributes"].items()]))
    return req
