"""Tetragon-compatible JSON: the shape of Tetragon's JSON export (GetEventsResponse, protojson with
proto field names), so tools built on Tetragon's export read siemhub's process events unchanged.

    {"process_exec": {"process": {...}, "parent": {...}, "ancestors": [...]}, "node_name": "...", "time": "..."}
    {"process_exit": {"process": {...}, "parent": {...}, "signal": "SIGKILL", "status": 0, "time": "..."}, ...}

Field names follow Tetragon's published API (api/v1/tetragon/tetragon.proto: Process, ProcessExec,
ProcessExit, Capabilities, Namespaces, ProcessCredentials, BinaryProperties). File, network and
privilege events are `process_kprobe` events shaped as Tetragon's own policies write them
(exporters/formats/tetragon_kprobe.py). docs/tetragon-format.md lists what maps and what does not.
Event types Tetragon has no message for (agent_status, dns_query, network_flow...) are written
as {"siemhub_<type>": <native event>, "node_name":..., "time":...} so that nothing is dropped and a
Tetragon consumer can skip them like any unknown event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from siemhub.collector.core.event import Event, Process, builtins_hook, enc_hook
from siemhub.exporters.formats.base import Format
from siemhub.exporters.formats import tetragon_kprobe

NO_AUID = 4294967295

# siemhub flags -> Tetragon's process flags (a space-separated string in Tetragon)
_FLAG_MAP = {
    "procfs": "procFS",
    "clone": "clone",
    "truncated_args": "truncArgs",
    "truncated_binary": "truncFilename",
    "missing_parent": "miss",
    "args_unreadable": "errorArgs",
}
_NS_KINDS = ("uts", "ipc", "mnt", "pid", "net", "cgroup", "user")


def _arguments(args: list[str]) -> str:
    """Tetragon's `arguments`: argv without argv[0], space-joined; arguments holding spaces or quotes
    are double-quoted with inner quotes escaped, so the string splits back unambiguously."""
    out = []
    for a in args[1:]:
        if not a or any(c in a for c in ' \t\n"'):
            a = '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(a)
    return " ".join(out)


def _flags(p: Process) -> str:
    flags = [] if "clone" in p.flags or "procfs" in p.flags else ["execve"]
    flags += [_FLAG_MAP[f] for f in p.flags if f in _FLAG_MAP]
    if p.cwd == "/":
        flags.append("rootcwd")
    return " ".join(flags)


def process(p: Process) -> dict[str, Any]:
    out: dict[str, Any] = {
        "exec_id": p.exec_id,
        "pid": p.pid,
        "uid": p.uid,
        "cwd": p.cwd or "",
        "binary": p.binary,
        "arguments": _arguments(p.args),
        "flags": _flags(p),
        "start_time": p.start_time,
        "auid": NO_AUID if p.auid is None else p.auid,
        "parent_exec_id": p.parent_exec_id or "",
        "tid": p.tid if p.tid is not None else p.pid,
    }
    if p.container is not None:
        out["docker"] = p.container.id[:31]  # Tetragon's docker field holds the id's first 31 characters
    if p.pod is not None:
        pod: dict[str, Any] = {"namespace": p.pod.namespace, "name": p.pod.name, "pod_labels": dict(p.pod.labels)}
        if p.pod.uid:
            pod["uid"] = p.pod.uid  # Pod.uid, in Tetragon's API since v1.1
        if p.pod.container is not None or p.container is not None:
            c = p.pod.container
            pod["container"] = {"id": p.container.id if p.container else "", "name": (c.name if c else None) or "",
                                "image": {"name": (c.image if c else None) or ""}}
            if c is not None and c.image_id:
                pod["container"]["image"]["id"] = c.image_id  # Image.id
        if p.pod.workload:
            pod["workload"] = p.pod.workload
        if p.pod.workload_kind:
            pod["workload_kind"] = p.pod.workload_kind  # Pod.workload_kind
        if p.pod.annotations:
            pod["pod_annotations"] = dict(p.pod.annotations)  # Pod.pod_annotations
        out["pod"] = pod
    if p.caps is not None:
        out["cap"] = {"permitted": list(p.caps.permitted), "effective": list(p.caps.effective)}
    if p.ns is not None:
        host = _host_ns()
        out["ns"] = {k: {"inum": getattr(p.ns, k), "is_host": getattr(p.ns, k) == host.get(k)}
                     for k in _NS_KINDS if getattr(p.ns, k)}
    creds = {k: getattr(p, k) for k in ("uid", "gid", "euid", "egid") if getattr(p, k) is not None}
    if creds:
        out["process_credentials"] = creds
    if p.binary_properties is not None:
        bp = {k: v for k, v in (("setuid", p.binary_properties.setuid), ("setgid", p.binary_properties.setgid))
              if v is not None}
        if bp:
            out["binary_properties"] = bp
    return {k: v for k, v in out.items() if v is not None}


_HOST_NS: dict[str, int] | None = None


def _host_ns() -> dict[str, int]:
    """Namespaces of pid 1 (the host's), for Tetragon's is_host; read once."""
    global _HOST_NS
    if _HOST_NS is None:
        import os

        found: dict[str, int] = {}
        for kind in _NS_KINDS:
            try:
                link = os.readlink(f"/proc/1/ns/{kind}")
                found[kind] = int(link.split("[", 1)[1].rstrip("]"))
            except (OSError, IndexError, ValueError):
                pass
        _HOST_NS = found
    return _HOST_NS


def to_obj(e: Event) -> dict[str, Any]:
    if e.type == "process_exec" and e.process is not None:
        body: dict[str, Any] = {"process": process(e.process)}
        if e.parent is not None:
            body["parent"] = process(e.parent)
        if e.ancestors:
            body["ancestors"] = [process(a) for a in e.ancestors]
        key = "process_exec"
    elif e.type == "process_exit" and e.process is not None:
        body = {"process": process(e.process)}
        if e.parent is not None:
            body["parent"] = process(e.parent)
        x = e.exit
        if x is not None:
            if x.signal:
                body["signal"] = x.signal
            body["status"] = x.code if x.code is not None else 0
        body["time"] = e.time
        key = "process_exit"
    elif (kp := tetragon_kprobe.kprobe(e, process)) is not None:  # file, network, privilege events
        body, key = kp, "process_kprobe"
    else:
        body = msgspec.to_builtins(e, enc_hook=builtins_hook)
        key = f"siemhub_{e.type}"
    out = {key: body, "node_name": e.node.name, "time": e.time}
    if e.node.labels:
        out["node_labels"] = dict(e.node.labels)
    if e.node.cluster:
        out["cluster_name"] = e.node.cluster  # GetEventsResponse.cluster_name
    return out


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


def encode_lines(batch: Sequence[Event]) -> bytes:
    return _encoder.encode_lines([to_obj(e) for e in batch])


FORMAT = Format("tetragon", encode_lines, to_obj)
