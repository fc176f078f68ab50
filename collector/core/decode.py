"""Native JSON -> Event for the sources that read events back (replay, the Kafka aggregator), as cheap
as msgspec allows.

A stream of agent-written events repeats most of its bytes: an exec and its exit carry the same
`process` object, the children of a shell the same `parent`, every event the same `node`. The
decoder reads an event's envelope with `process`, `parent` and `node` left as raw JSON (msgspec
skips them without building anything), then decodes each distinct raw object once and shares the
result among the events that carry the same bytes. Sharing is safe because events' processes are
immutable once built (the agent's process cache shares them the same way, and redaction replaces
rather than edits them), and it lets the redactor's per-object memo answer repeated processes with
one dictionary look-up. Batches (a chunk of lines, one consume() of Kafka messages) are parsed in
one call of the decoder.

The result is exactly what `decode_json` gives and the checks are as strict (tests/unit/core/
test_decode.py compares them, on good and bad input).
"""

from __future__ import annotations

import msgspec

from siemhub.collector.core.event import (
    AgentStatus, Event, Exit, File, Network, Node, PolicyAction, Privilege, Process,
)


class _Envelope(msgspec.Struct, kw_only=True, gc=False):
    """Event with its bulky, repeated members left as raw JSON (same fields and order as Event)."""
    id: str
    time: str
    type: str
    schema_version: str
    severity: str
    node: msgspec.Raw
    # absent: None; present (even `null`): its raw JSON (msgspec takes no union of Raw and None)
    process: msgspec.Raw = None  # type: ignore[assignment]
    parent: msgspec.Raw = None  # type: ignore[assignment]
    ancestors: list[Process] = []
    exit: Exit | None = None
    file: File | None = None
    network: Network | None = None
    privilege: Privilege | None = None
    policy: PolicyAction | None = None
    status: AgentStatus | None = None
    tags: list[str] = []


_one = msgspec.json.Decoder(_Envelope)
_many = msgspec.json.Decoder(list[_Envelope])

# Events are built by copying this template and setting their members: a copy and ten attribute stores
# cost about a third of the keyword constructor (whose keywords msgspec matches by name). Every field is
# set on each copy (the list defaults too), so no event shares anything with the template.
_TEMPLATE = Event(id="", time="", type="", schema_version="", severity="", node=Node(name=""))
_new_event = _TEMPLATE.__copy__
_lines = _one  # decode_lines: JSON lines of envelopes
_process = msgspec.json.Decoder(Process | None)
_node = msgspec.json.Decoder(Node)


def _located(exc: msgspec.ValidationError, where: str) -> msgspec.ValidationError:
    """The error of a member decoded on its own, with its place in the event (as decode_json says it)."""
    text = str(exc)
    if " - at `$" in text:
        text = text.replace(" - at `$", f" - at `$.{where}", 1)
    else:
        text = f"{text} - at `$.{where}`"
    return msgspec.ValidationError(text)


class EventDecoder:
    """Decodes native JSON events, sharing the objects of repeated `process`/`parent`/`node` JSON.

    Not thread-safe: one per reading thread. The memo holds at most `max_cached` distinct objects
    (it is emptied when full: the next events refill it with what is current)."""

    __slots__ = ("_procs", "_nodes", "max_cached")

    def __init__(self, max_cached: int = 8192) -> None:
        self._procs: dict[bytes, Process | None] = {}
        self._nodes: dict[bytes, Node] = {}
        self.max_cached = max_cached

    def decode(self, data: bytes | str) -> Event:
        """One event; raises msgspec.ValidationError / DecodeError like decode_json."""
        if isinstance(data, str):
            data = data.encode()
        try:
            return self._build(_one.decode(data))
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None

    def decode_many(self, items: list[bytes]) -> list[Event]:
        """Many events (each item one JSON object: a line, a message) in one parse. Raises when any
        item is bad: then decode them one by one to tell which (see `decode_each`)."""
        if not items:
            return []
        try:
            envs = _many.decode(b"[" + b",".join(items) + b"]")
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
        if len(envs) != len(items):  # an item held several values: not one event each
            raise msgspec.DecodeError(f"expected {len(items)} events, found {len(envs)}")
        build = self._build
        try:
            return [build(e) for e in envs]
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None

    def decode_lines(self, block: bytes, count: int) -> list[Event]:
        """The events of `count` newline-separated lines (a chunk of a JSON-lines file, without its
        last newline) in one parse, with no split into lines. Raises when any line is bad, and when
        the lines do not hold exactly one event each (blank lines, or two values on one line: the
        caller splits the chunk and decodes it line by line instead)."""
        try:
            envs = _lines.decode_lines(block)
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None
        if len(envs) != count:
            raise msgspec.DecodeError(f"expected {count} events, found {len(envs)}")
        build = self._build
        try:
            return [build(e) for e in envs]
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None

    def decode_each(self, items: list[bytes]) -> list[Event | msgspec.MsgspecError]:
        """Like decode_many, but a bad item gives its error in its place instead of failing the batch
        (one parse when all are good, one per item otherwise)."""
        try:
            return self.decode_many(items)
        except msgspec.MsgspecError:
            pass
        out: list[Event | msgspec.MsgspecError] = []
        for item in items:
            try:
                out.append(self.decode(item))
            except msgspec.MsgspecError as exc:
                out.append(exc)
        return out

    def _build(self, env: _Envelope) -> Event:
        procs = self._procs
        raw = env.process
        proc = None
        if raw is not None:
            key = bytes(raw)
            try:
                proc = procs[key]
            except KeyError:
                proc = self._decode_process(key, "process")
        raw = env.parent
        parent = None
        if raw is not None:
            key = bytes(raw)
            try:
                parent = procs[key]
            except KeyError:
                parent = self._decode_process(key, "parent")
        key = bytes(env.node)
        try:
            node = self._nodes[key]
        except KeyError:
            try:
                node = _node.decode(key)
            except msgspec.ValidationError as exc:
                raise _located(exc, "node") from None
            if len(self._nodes) >= 64:
                self._nodes.clear()
            self._nodes[key] = node
        e = _new_event()
        e.id = env.id
        e.time = env.time
        e.type = env.type
        e.schema_version = env.schema_version
        e.severity = env.severity
        e.node = node
        e.process = proc
        e.parent = parent
        e.ancestors = env.ancestors  # the envelope's own lists: never the template's
        e.tags = env.tags
        e.exit = env.exit
        e.file = env.file
        e.network = env.network
        e.privilege = env.privilege
        e.policy = env.policy
        e.status = env.status
        return e

    def _decode_process(self, key: bytes, where: str) -> Process | None:
        try:
            proc = _process.decode(key)
        except msgspec.ValidationError as exc:
            raise _located(exc, where) from None
        procs = self._procs
        if len(procs) >= self.max_cached:
            procs.clear()
        procs[key] = proc
        return proc
