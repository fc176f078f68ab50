"""Plugins found by name through entry points (`siemhub.sensors`, `siemhub.exporters`).

A name registered twice with different targets is an error; an unknown name is an error that lists
the known ones. A new plugin is one module plus one entry point in its distribution's metadata.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points


def registered(group: str, what: str) -> dict[str, EntryPoint]:
    """name -> entry point of `group`; `what` names the kind in the error ("sensor", "exporter type")."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        if ep.name in found and found[ep.name].value != ep.value:
            raise RuntimeError(f"{what} {ep.name!r} is registered twice: {found[ep.name].value} and {ep.value}")
        found[ep.name] = ep
    return found


def load(group: str, name: str, what: str, unknown: type[LookupError] = LookupError):
    """The object registered as `name`; raises `unknown` listing the known names."""
    eps = registered(group, what)
    if name not in eps:
        raise unknown(f"unknown {what} {name!r} (known: {', '.join(sorted(eps)) or 'none'})")
    return eps[name].load()
