"""Output formats: pure functions of the canonical event. Each format turns a batch into JSON lines
(`encode_lines`) and one event into a JSON-ready value (`to_obj`). Exporters pick one by name.
`Format` (formats/base.py) is re-exported here."""

from __future__ import annotations

from siemhub.exporters.formats import cim, ecs, native, ocsf, tetragon
from siemhub.exporters.formats.base import Format


FORMATS: dict[str, Format] = {f.name: f for f in (native.FORMAT, ecs.FORMAT, ocsf.FORMAT, tetragon.FORMAT, cim.FORMAT)}


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r} (known: {', '.join(sorted(FORMATS))})") from None
