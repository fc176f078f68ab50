"""What a format is: a name and pure functions of the canonical event (collector/core/event.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from siemhub.collector.core.event import Event


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    encode_lines: Callable[[Sequence[Event]], bytes]
    to_obj: Callable[[Event], Any]
    # Optional: one JSON document per event, each exactly a line of encode_lines without its newline
    # (exporters that send one message per event, Kafka). Without it they split encode_lines' output.
    encode_each: Callable[[Sequence[Event]], list[bytes]] | None = None
