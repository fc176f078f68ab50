"""What the policy engine hands the sensors, and the file vocabulary both sides share.

The engine (collector/policy.py) compiles its rules into one `KernelFilters`: binaries and network
ranges to ignore in the kernel, paths to watch, paths to enforce, and the sigkill rules beyond file
paths (by binary, on exec, open and connect: collector/core/enforce_rules.py). Each sensor takes what concerns it
through its own hook (`Sensor.kernel_settings`, collector/sensors/__init__.py); the engine never
names a sensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator

from siemhub.collector.core.enforce_rules import EnforceRule
from siemhub.collector.core.settings import Strict

# file operations the kernel can enforce (SIGKILL before the syscall returns)
FILE_OPERATIONS = ("open_read", "open_write", "write", "unlink", "rename", "chmod", "chown", "truncate")


def watch_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r}: must be an absolute path")
    if len(v.encode()) > 254:
        raise ValueError(f"{v!r}: longer than 254 bytes")
    return v


class FileEnforceRule(Strict):
    path: str = Field(description="file, or directory with a trailing '/' (everything below it)")
    action: Literal["sigkill"] = Field("sigkill", description="sigkill from the kernel (block needs BPF LSM)")
    operations: list[Literal[FILE_OPERATIONS]] = Field(min_length=1)  # type: ignore[valid-type]

    _path = field_validator("path")(classmethod(lambda cls, v: watch_path(v)))


@dataclass
class KernelFilters:
    """What the engine pushes down into the sensors."""
    process_binaries: list[str] = field(default_factory=list)
    network_ports: list[int] = field(default_factory=list)
    network_cidrs: list[str] = field(default_factory=list)
    file_enforce: list[FileEnforceRule] = field(default_factory=list)
    file_watch: list[str] = field(default_factory=list)
    file_watch_writes: list[str] = field(default_factory=list)  # reported only when changed
    enforce: list[EnforceRule] = field(default_factory=list)  # sigkill beyond file paths (the enforce sensor)
