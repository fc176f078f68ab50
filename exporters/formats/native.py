"""Native format: the canonical event exactly as docs/schema.md describes it."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from siemhub.collector.event import Event, encode_json_lines


def encode_lines(batch: Sequence[Event]) -> bytes:
    return encode_json_lines(batch)


def to_obj(event: Event) -> dict:
    return msgspec.to_builtins(event)


def _make():
    from siemhub.exporters.formats import Format

    return Format("native", encode_lines, to_obj)


FORMAT = _make()
