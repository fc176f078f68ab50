"""Native format: the canonical event exactly as docs/schema.md describes it.

Events are encoded directly by msgspec (about 1 us per event with a full process, capabilities and
parent: bench/user_path.py). Process objects are immutable and shared: one exec image appears as
`process` in its exec and exit events and as `parent` of every child it starts. When an image has a
long argument list (a 10,000-argument exec is 100 KB of JSON), re-encoding it for every event that
names it costs more than splicing its bytes, encoded once, into each event (msgspec.Raw); below that
size building the splice costs more than it saves (measured: 4.1 vs 2.2 us per exec + exit pair), so
only single events (encode_one) that carry such an image take that path; batches are encoded directly.
The output is byte-for-byte what encoding the Event directly gives (tests/unit/exporters/formats/test_native_format.py
checks it).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import msgspec

from siemhub.collector.core.event import (
    AgentStatus, Event, Exit, File, Network, Node, PolicyAction, Privilege, Process, builtins_hook, enc_hook,
)
from siemhub.exporters.formats.base import Format


class _Wire(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    # Field names and order must stay those of Event.
    id: str
    time: str
    type: str
    schema_version: str
    severity: str
    node: Node
    process: msgspec.Raw | None = None
    parent: msgspec.Raw | None = None
    ancestors: list[msgspec.Raw] = []
    exit: Exit | None = None
    file: File | None = None
    network: Network | None = None
    privilege: Privilege | None = None
    policy: PolicyAction | None = None
    status: AgentStatus | None = None
    tags: list[str] = []


_encoder = msgspec.json.Encoder(enc_hook=enc_hook)  # Caps: its JSON, encoded once
_BIG_ARGS = 64  # images with more arguments than this are encoded once and spliced
_CACHE_MAX = 4096  # recent images are the ones reused as parents
# id(process) -> (process, its JSON). The process is kept referenced so that its id cannot be reused
# by another object while the entry lives.
_cache: dict[int, tuple[Process, msgspec.Raw]] = {}
_lock = threading.Lock()


def _raw(p: Process) -> msgspec.Raw:
    hit = _cache.get(id(p))
    if hit is not None and hit[0] is p:
        return hit[1]
    raw = msgspec.Raw(_encoder.encode(p))
    with _lock:
        if len(_cache) >= _CACHE_MAX:
            # Oldest half out (dict order is insertion order): recent images are the ones reused.
            for key in list(_cache)[: _CACHE_MAX // 2]:
                del _cache[key]
        _cache[id(p)] = (p, raw)
    return raw


def _wire(e: Event) -> _Wire:
    return _Wire(
        id=e.id, time=e.time, type=e.type, schema_version=e.schema_version, severity=e.severity, node=e.node,
        process=_raw(e.process) if e.process is not None else None,
        parent=_raw(e.parent) if e.parent is not None else None,
        ancestors=[_raw(a) for a in e.ancestors] if e.ancestors else [],
        exit=e.exit, file=e.file, network=e.network, privilege=e.privilege, policy=e.policy, status=e.status,
        tags=e.tags,
    )


def _big(e: Event) -> bool:
    p = e.process
    if p is not None and len(p.args) > _BIG_ARGS:
        return True
    p = e.parent
    return (p is not None and len(p.args) > _BIG_ARGS) or bool(e.ancestors)


def encode_lines(batch: Sequence[Event]) -> bytes:
    # Batches are encoded directly, even with long argument lists: the per-event test and the splice
    # cost every event more than re-encoding the rare huge image saves (bench/kafka_throughput.py,
    # bench/user_path.py); encode_one, used one event at a time, keeps the splice.
    return _encoder.encode_lines(batch)


def encode_each(batch: Sequence[Event]) -> list[bytes]:
    # One document per event (Kafka messages), encoded directly as encode_lines does: cheaper than
    # encoding the lines and splitting them, which builds a batch-sized buffer and then copies every
    # line out of it (bench/kafka_throughput.py).
    return list(map(_encoder.encode, batch))


def encode_one(event: Event) -> bytes:
    return _encoder.encode(_wire(event) if _big(event) else event)


def to_obj(event: Event) -> dict:
    return msgspec.to_builtins(event, enc_hook=builtins_hook)


FORMAT = Format("native", encode_lines, to_obj, encode_each)
