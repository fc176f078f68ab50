"""Sigkill rules beyond file paths (issue 18): what a policy rule asks, checked and compiled into the
enforce sensor's kernel tables (bpf/enforce/enforce.bpf.c, collector/sensors/enforce.py); the policy
engine hands them over in KernelFilters.enforce (collector/core/kernel_settings.py).

Three forms, selected as detection selects (docs/policies.md, "Enforcement"):
  exec     match {types: [process_exec], binaries: [...]}                   kill the exec itself
  open     match {binaries: [...], paths: [...], operations: [open_read|open_write|open]}
  connect  match {types: [network_connect], cidrs: [...], ports: [...], binaries: [...]}  (binaries optional)
`binaries`: an exact path, `dir/*` (everything below dir), or a name (the executable's file name, at most
15 characters: the kernel's task comm). Exact paths and directories are resolved to (device, inode) at
load (and re-resolved at every policy reload), so they must exist then. Anything else is refused with
the reason, as the agent cannot enforce it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

MAX_RULES = 64  # one bit each in the kernel's masks
_GLOB = re.compile(r"[*?\[]")


@dataclass
class EnforceRule:
    policy: str
    rule: str
    kind: str  # exec, open, connect
    binaries: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    read: bool = False  # open: reading is forbidden
    write: bool = False  # open: writing is forbidden
    cidrs: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    severity: str = "high"
    tags: list[str] = field(default_factory=list)


def from_rule(policy: str, name: str, match, types: tuple[str, ...], given: set[str], severity: str | None,
              tags: list[str]) -> EnforceRule:
    """The enforce rule of a sigkill policy rule (raises ValueError saying what cannot be enforced)."""
    sev = severity or "high"
    if "binaries" in given:
        check_binaries(match.binaries)
    if "process_exec" in types:
        extra = given - {"binaries"}
        if list(types) != ["process_exec"] or extra or not match.binaries:
            raise ValueError("sigkill on process_exec is enforced in the kernel by binaries only "
                             f"(types: [process_exec], binaries: [...]){_not(extra)}")
        return EnforceRule(policy, name, "exec", binaries=list(match.binaries), severity=sev, tags=tags)
    if "network_connect" in types:
        extra = given - {"binaries", "cidrs", "ports"}
        if list(types) != ["network_connect"] or extra or not (match.cidrs or match.ports):
            raise ValueError("sigkill on network_connect is enforced in the kernel by cidrs, ports and binaries "
                             f"(types: [network_connect], cidrs/ports: [...]){_not(extra)}")
        for c in match.cidrs or []:
            ipaddress.ip_network(c, strict=False)
        return EnforceRule(policy, name, "connect", binaries=list(match.binaries or []),
                           cidrs=list(match.cidrs or []), ports=list(match.ports or []), severity=sev, tags=tags)
    if "file_access" in types and "binaries" in given:
        extra = given - {"binaries", "paths", "operations"}
        ops = set(match.operations or ("open",))
        if extra or not match.paths or not ops <= {"open", "open_read", "open_write"}:
            raise ValueError("sigkill with binaries on file_access is enforced in the kernel on opens only "
                             "(paths, operations open/open_read/open_write)" + _not(extra))
        for p in match.paths:
            if _GLOB.search(p):
                raise ValueError(f"sigkill with binaries needs exact paths or directories ending in '/', not {p!r}")
            if not os.path.exists(p):
                raise ValueError(f"sigkill with binaries: {p} does not exist (paths are resolved to inodes at load)")
        return EnforceRule(policy, name, "open", binaries=list(match.binaries), paths=list(match.paths),
                           read=bool(ops & {"open", "open_read"}), write=bool(ops & {"open", "open_write"}),
                           severity=sev, tags=tags)
    raise ValueError("sigkill is enforced in the kernel on file_access paths, process_exec binaries and "
                     "network_connect destinations only")


def _not(extra: set[str]) -> str:
    return f"; not with {', '.join(sorted(extra))}" if extra else ""


def check_binaries(binaries: list[str]) -> None:
    for b in binaries:
        if "/" not in b:
            if _GLOB.search(b):
                raise ValueError(f"sigkill: binary name {b!r}: name globs cannot be enforced in the kernel")
            if len(b.encode()) > 15:
                raise ValueError(f"sigkill: binary name {b!r} is longer than 15 bytes (the kernel's task comm)")
        elif b.endswith("/*") and not _GLOB.search(b[:-2]):
            if not os.path.isdir(b[:-2]):
                raise ValueError(f"sigkill: {b[:-2]} is not a directory")
        elif _GLOB.search(b):
            raise ValueError(f"sigkill: binary {b!r}: only exact paths, 'dir/*' and names can be enforced")
        elif not os.path.exists(b):
            raise ValueError(f"sigkill: binary {b} does not exist (resolved to its inode at load)")
        elif os.path.isdir(b):
            raise ValueError(f"sigkill: binary {b} is a directory (everything below it: '{b.rstrip('/')}/*')")
