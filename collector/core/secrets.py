"""`${NAME}`, `${NAME:-default}` (environment) and `${file:PATH}` (a file's content) in config values.

Secrets stay out of the config file; their values are never logged or echoed: `expanded` remembers
the text as written, which error messages show instead.
"""

from __future__ import annotations

import os
import re
from typing import Any

REFERENCE = re.compile(r"\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?)\}")


def expand(value: Any, path: tuple, problems: list[tuple[tuple, str]], expanded: dict[tuple, str]) -> Any:
    """Replace ${NAME} (environment) and ${file:PATH} (the file's content, trailing newline removed:
    Kubernetes secrets and systemd credentials are files) references; `expanded` maps each changed
    location to its text as written, which error messages show instead of the value (it may be a secret)."""
    if isinstance(value, str):
        if REFERENCE.search(value):
            expanded[path] = value

        def sub(m: re.Match) -> str:
            secret_file, name, default = m.group(1), m.group(2), m.group(3)
            if secret_file is not None:
                try:
                    with open(secret_file, encoding="utf-8") as f:
                        return f.read().rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    problems.append((path, f"cannot read secret file {secret_file}: {reason}"))
                    return ""
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""
        return REFERENCE.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand(v, path + (k,), problems, expanded) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, path + (i,), problems, expanded) for i, v in enumerate(value)]
    return value
