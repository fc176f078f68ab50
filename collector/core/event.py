"""The canonical event: one versioned schema that every sensor produces and every format reads.

Structs are msgspec Structs: cheap to build (no validation on construction) and encoded to JSON by
msgspec's C encoder. Optional fields default to None / empty and are omitted from the JSON, so an
event carries only what is known. docs/schema.md documents every field; bump SCHEMA_VERSION on any
change a consumer could notice (tests/unit/exporters/formats/test_schema_golden.py makes such changes deliberate).
"""

from __future__ import annotations

import itertools
import os
import re
import time

import msgspec

SCHEMA_VERSION = "1.5"

EVENT_TYPES = (
    "process_exec",
    "process_exit",
    "file_access",
    "network_connect",
    "network_accept",
    "network_close",
    "network_flow",
    "dns_query",
    "privilege_change",
    "policy_action",
    "agent_status",
)

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


# Every struct is gc=False: events never form reference cycles, and leaving them out of the cyclic
# garbage collector's bookkeeping saves about 1 us per kernel message at exec-storm rates.


class Container(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    id: str
    runtime: str | None = None


class PodContainer(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    name: str | None = None
    image: str | None = None
    image_id: str | None = None  # the image's digest as the runtime pulled it (status.containerStatuses[].imageID)


class Pod(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    namespace: str
    name: str
    labels: dict[str, str] = {}
    container: PodContainer | None = None
    workload: str | None = None
    uid: str | None = None  # metadata.uid, from the cgroup path
    qos_class: str | None = None  # Guaranteed, Burstable, BestEffort (from the cgroup path)
    # from the API server (sensors.process.kubernetes.api); `workload` is the owning workload's name
    workload_kind: str | None = None  # Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet...
    annotations: dict[str, str] = {}  # the annotations selected by kubernetes.api.annotations


# A typed Struct, so msgspec's C decoder reads it with no Python hook. The sensors set it only where it
# tells something (collector/caps.py `telling`); one Caps object is shared by every process with the same
# sets (ProcessCache.caps): treat it as immutable once built.
class Caps(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """Capability names of the process image (`CAP_SYS_ADMIN`...), only when they differ from the
    default for its effective uid: every capability root can hold on the node for euid 0, none for
    any other euid."""

    effective: list[str] = []
    permitted: list[str] = []

    def to_builtins(self) -> dict[str, list[str]]:
        return msgspec.to_builtins(self)


# The hooks below were needed while Caps was a hand-written class; they stay so that code passing
# them to msgspec keeps working, and they now only refuse what msgspec cannot encode or decode.


def enc_hook(obj: object) -> object:
    raise NotImplementedError(f"objects of type {type(obj).__name__} cannot be encoded")


def builtins_hook(obj: object) -> object:
    raise NotImplementedError(f"objects of type {type(obj).__name__} cannot be encoded")


def dec_hook(tp: type, obj: object) -> object:
    raise NotImplementedError(f"type {tp!r} is not supported")


def schema_hook(tp: type) -> dict:
    raise NotImplementedError(f"type {tp!r} is not supported")


class Namespaces(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    # inode numbers, as in /proc/<pid>/ns/<name>
    mnt: int | None = None
    pid: int | None = None
    net: int | None = None
    user: int | None = None
    uts: int | None = None
    ipc: int | None = None
    cgroup: int | None = None


class BinaryProperties(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    setuid: int | None = None  # the owner's uid, when the executable has the setuid bit
    setgid: int | None = None  # the group's gid, when it has the setgid bit


class Process(msgspec.Struct, omit_defaults=True, gc=False):
    # Not kw_only: the process sensor builds one per exec with every field given positionally (in this
    # order; tests/unit/sensors/test_process_decode.py checks each field). Keyword calls work as before, but
    # past 15 keywords a msgspec constructor call costs ~6x more (0.7 vs 0.12 us measured here).
    exec_id: str
    pid: int
    tid: int | None = None
    ppid: int | None = None
    parent_exec_id: str | None = None
    uid: int | None = None
    euid: int | None = None
    gid: int | None = None
    egid: int | None = None
    auid: int | None = None
    binary: str = ""
    args: list[str] = []
    cwd: str | None = None
    comm: str | None = None
    start_time: str | None = None
    # procfs, truncated_args, truncated_binary, truncated_cwd, non_utf8_binary, non_utf8_args,
    # non_utf8_cwd, missing_parent, clone (forked, never exec'd while watched), namespace_entry...
    flags: list[str] = []
    caps: Caps | None = None
    ns: Namespaces | None = None
    # namespaces this exec joined that already existed (the kubectl exec / docker exec / nsenter
    # pattern): those that differ from the parent's and were already in use by another process
    entered_namespaces: list[str] = []
    binary_properties: BinaryProperties | None = None
    cgroup_id: int | None = None
    container: Container | None = None
    pod: Pod | None = None


class Node(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    name: str
    labels: dict[str, str] = {}
    cluster: str | None = None  # node.cluster: the cluster's name, set by configuration


class Exit(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    code: int | None = None  # exit status when the process exited normally
    signal: str | None = None  # name of the signal that ended it (SIGKILL...), if any
    core_dumped: bool = False
    duration_ns: int | None = None  # lifetime of this exec image, when its exec was seen


class File(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """file_access body (file sensor)."""
    operation: str  # open, write, unlink, rename, chmod, chown, truncate, ...
    path: str  # absolute, resolved in the kernel where possible
    flags: list[str] = []  # open flags (O_WRONLY, O_CREAT...), truncated_path, non_utf8_path, ...
    mode: int | None = None  # chmod mode / open mode
    uid: int | None = None  # chown owner
    gid: int | None = None
    target: str | None = None  # rename destination
    inode: int | None = None
    result: int | None = None  # syscall return value when known (negative errno)


class Dns(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """dns_query: the query in a UDP datagram sent to port 53 (the name is Network.dns_query)."""
    id: int | None = None  # the query's 16-bit id (matches the answer)
    type: str | None = None  # question type: A, AAAA, PTR, TXT, ... or TYPE<n> (RFC 3597)
    # truncated_name, escaped_name, malformed, response, no_question, multiple_questions, opcode_<n>,
    # class_<name>, truncated_payload, split_payload, unreadable_payload
    flags: list[str] = []


class Network(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """network_connect / network_accept / network_close / network_flow / dns_query body (network sensor)."""
    protocol: str  # tcp, udp
    family: str  # ipv4, ipv6
    direction: str | None = None  # outbound, inbound
    source_ip: str | None = None
    source_port: int | None = None
    destination_ip: str | None = None
    destination_port: int | None = None
    bytes_sent: int | None = None
    bytes_received: int | None = None
    duration_ns: int | None = None
    dns_query: str | None = None  # dns_query: the queried name, in DNS presentation form
    dns: Dns | None = None  # dns_query: the rest of the query
    # network_flow (UDP): datagrams each way and the flow's first and last datagram; counts are totals
    # since first_seen. flow_end: close, exit, idle or shutdown; absent on a report of a flow still open.
    datagrams_sent: int | None = None
    datagrams_received: int | None = None
    first_seen: str | None = None
    last_seen: str | None = None
    flow_end: str | None = None


class Privilege(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """privilege_change body (privilege sensor)."""
    operation: str  # setuid, setgid, setresuid, capset, ptrace, module_load, bpf_load, mount, memfd_exec...
    old_uid: int | None = None
    new_uid: int | None = None
    old_gid: int | None = None
    new_gid: int | None = None
    new_caps: list[str] = []
    target_pid: int | None = None  # ptrace
    name: str | None = None  # module, bpf program, memfd name
    source: str | None = None  # mount source
    target: str | None = None  # mount target
    result: int | None = None


class PolicyAction(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """policy_action body: what a policy matched and did."""
    policy: str
    rule: str | None = None
    action: str  # post, notify, sigkill, block, ignore
    enforced: bool = False  # the action took effect in the kernel (sigkill sent, syscall blocked)
    reason: str | None = None


class AgentStatus(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    counters: dict[str, int] = {}


class Event(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    # schema_version and severity have no defaults on purpose: omit_defaults would drop them from the
    # JSON, and every event must carry both. Build events with Event(..., **EVENT_BASE) or set them.
    id: str
    time: str
    type: str
    schema_version: str
    severity: str
    node: Node
    process: Process | None = None
    parent: Process | None = None
    # grandparent first, then further up (sensors.process.ancestors levels); parent is `parent`
    ancestors: list[Process] = []
    exit: Exit | None = None
    file: File | None = None
    network: Network | None = None
    privilege: Privilege | None = None
    policy: PolicyAction | None = None
    status: AgentStatus | None = None
    tags: list[str] = []


EVENT_BASE = {"schema_version": SCHEMA_VERSION, "severity": "info"}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)
_batch_decoder = msgspec.json.Decoder(list[Event])


def json_schema() -> dict:
    """The JSON Schema of the native event (docs/siemhub-event.schema.json)."""
    return msgspec.json.schema(Event)


def encode_json(event: Event) -> bytes:
    return _encoder.encode(event)


def encode_json_lines(events: list[Event]) -> bytes:
    return _encoder.encode_lines(events)


def decode_json(data: bytes | str) -> Event:
    """Parse one native JSON event (raises msgspec.ValidationError / DecodeError on bad input)."""
    return _decoder.decode(data)


def decode_json_many(items: list[bytes]) -> list[Event]:
    """Parse many native JSON events in one call of the decoder (one JSON array built from them):
    about a fifth cheaper per event than decode_json in a loop for ~1 KB events. Raises like
    decode_json when any item is bad (or not exactly one JSON value); callers that must skip bad
    items then decode one by one. A batch of items that are whole JSON values each (lines of a
    file, Kafka messages) is the intended input."""
    out = _batch_decoder.decode(b"[" + b",".join(items) + b"]")
    if len(out) != len(items):  # an item held several values (or a separator): not one event each
        raise msgspec.ValidationError(f"expected {len(items)} events, found {len(out)}")
    return out


# --- identifiers -----------------------------------------------------------------------------


class EventIds:
    """Event ids unique across nodes and restarts, cheap per event: a random 64-bit prefix drawn at
    start-up plus a counter. Ids are assigned once, when the event is built, so every retry of the
    same event carries the same id (Elasticsearch uses it as _id to deduplicate)."""

    __slots__ = ("_prefix", "_next")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex() + "-"
        # itertools.count: one atomic step, so the sensor threads and the status loop, which share one
        # EventIds, can never draw the same number (`+= 1` then a re-read could)
        self._next = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._next):x}"


# --- time --------------------------------------------------------------------------------------


class Clock:
    """Converts kernel boot-time nanoseconds (bpf_ktime_get_boot_ns) to RFC 3339 UTC strings with
    nanoseconds. The date part is formatted once per second, the rest is an integer format."""

    __slots__ = ("_offset", "_cached")

    def __init__(self) -> None:
        self.resync()
        # (second, "YYYY-MM-DDTHH:MM:SS.") in one tuple: sensor threads and the agent's status loop share
        # one Clock, and two separate attributes could be read half-updated (a time one second off).
        self._cached: tuple[int, str] = (-1, "")

    def resync(self) -> None:
        self._offset = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def wall_ns(self, boot_ns: int) -> int:
        return boot_ns + self._offset

    def rfc3339(self, wall_ns: int) -> str:
        sec, frac = divmod(wall_ns, 1_000_000_000)
        cached = self._cached
        if cached[0] != sec:
            cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
            self._cached = cached
        # str(10^9 + frac)[1:] is the 9-digit fraction, zero-padded: cheaper than a format spec
        return f"{cached[1]}{str(frac + 1_000_000_000)[1:]}Z"

    def from_boot(self, boot_ns: int) -> str:
        # rfc3339() inlined: two of these per exec (its exec and its exit)
        sec, frac = divmod(boot_ns + self._offset, 1_000_000_000)
        cached = self._cached
        if cached[0] != sec:
            cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
            self._cached = cached
        return f"{cached[1]}{str(frac + 1_000_000_000)[1:]}Z"

    def now(self) -> str:
        return self.rfc3339(time.time_ns())


# --- bytes that are not UTF-8 --------------------------------------------------------------------


def escape_bytes(raw: bytes) -> tuple[str, bool]:
    """Decode kernel bytes to text. Valid UTF-8 passes unchanged (second value False). Anything else
    becomes a reversible escaped form (second value True, the caller flags the field): backslashes
    are doubled and each undecodable byte becomes \\xHH, so unescape_bytes() restores the exact bytes.
    """
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return escape_always(raw), True


def escape_always(raw: bytes) -> str:
    """The escaped form, whatever the input (used for every element of a list once one is flagged,
    so the flag tells a reader to unescape all of them)."""
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


_UNESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def unescape_bytes(text: str) -> bytes:
    """Inverse of escape_bytes for a field that was flagged non-UTF-8."""
    out = bytearray()
    pos = 0
    for m in _UNESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        tok = m.group(1)
        out += b"\\" if tok == "\\" else bytes((int(tok[1:], 16),))
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)
