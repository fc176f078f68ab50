"""Output formats: pure functions of the canonical event. Each format turns a batch into JSON lines
(`encode_lines`) and one event into a JSON-ready value (`to_obj`). Exporters pick one by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from siemhub.collector.event import Event


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    encode_lines: Callable[[Sequence[Event]], bytes]
    to_obj: Callable[[Event], Any]
    # Optional: one JSON document per event, each exactly a line of encode_lines without its newline
    # (exporters that send one message per event, Kafka). Without it they split encode_lines' output.
    encode_each: Callable[[Sequence[Event]], list[bytes]] | None = None


def _registry() -> dict[str, Format]:
    from siemhub.exporters.formats import ecs, native, ocsf, tetragon

    found = {f.name: f for f in (native.FORMAT, ecs.FORMAT, ocsf.FORMAT, tetragon.FORMAT)}
    # Splunk CIM field names (issue 14: the Splunk exporter's default format)
    from siemhub.exporters.formats import cim
    found[cim.FORMAT.name] = cim.FORMAT
    return found


FORMATS: dict[str, Format] = _registry()


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r} (known: {', '.join(sorted(FORMATS))})") from None
