"""YAML with positions: every key keeps its line, so a problem is reported as `file:line: field: reason`.

Used by the agent's config (collector/config.py) and the policy files (collector/policy.py).
"""

from __future__ import annotations

import yaml
from pydantic import ValidationError


class ConfigError(Exception):
    """A config problem. Each line of str(error) is `file:line: field: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Loader(yaml.SafeLoader):
    pass


Positions = dict[tuple, int]


def compose_positions(node: yaml.Node, path: tuple, out: Positions) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # A key that is itself a mapping or list (`{{}}: x`) is not a setting name: place it by
            # its text so the validator can report it at its line (found by fuzzing).
            key = k.value if isinstance(k, yaml.ScalarNode) else yaml.serialize(k).strip()
            compose_positions(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1  # the key's line, not the first line of its value
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            compose_positions(v, path + (i,), out)


def parse(text: str, source: str, error: type[ConfigError] = ConfigError,
          not_a_mapping: str = "expected a mapping of settings") -> tuple[dict, Positions]:
    """The top-level mapping of a YAML document and the line of every key in it. Raises `error` with
    one `file:line: ...` problem for a syntax error, an empty file or a top level that is no mapping."""
    try:
        node = yaml.compose(text, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise error([f"{source}:{line}: YAML syntax error: {reason}"]) from None
    if node is None:
        raise error([f"{source}:1: (top level): the file is empty"])
    positions: Positions = {}
    compose_positions(node, (), positions)
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:  # e.g. a mapping used as a key: one line, at the problem's line
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error([f"{source}:{mark.line + 1 if mark else 1}: YAML error: {reason}"]) from None
    if not isinstance(data, dict):
        raise error([f"{source}:1: (top level): {not_a_mapping}"])
    return data, positions


def line_for(loc: tuple, positions: Positions) -> int:
    loc = tuple(loc)
    while loc and loc not in positions:
        loc = loc[:-1]
    return positions.get(loc, 1)


def dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def pydantic_problems(err: ValidationError, prefix: tuple, source: str, positions: Positions,
                      expanded: dict[tuple, str]) -> list[tuple[int, str]]:
    """(line, `file:line: field: reason`) for each error; `expanded` maps locations whose value came
    from a ${...} reference to the text as written, shown instead of the value (it may be a secret)."""
    problems = []
    for e in err.errors():
        loc = prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] in ("literal_error", "enum") and isinstance(e.get("input"), str | int):
            msg = f"{msg} (got {expanded.get(loc, e['input'])!r})"
        line = line_for(loc, positions)
        problems.append((line, f"{source}:{line}: {dotted(loc)}: {msg}"))
    return problems


def problem_at(loc: tuple, msg: str, source: str, positions: Positions) -> tuple[int, str]:
    line = line_for(loc, positions)
    return line, f"{source}:{line}: {dotted(loc)}: {msg}"
