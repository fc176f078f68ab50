"""Config building blocks shared by the agent's config, the policies and every plugin's own model."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of every config model: an unknown key is an error (`unknown field`), never ignored."""

    model_config = ConfigDict(extra="forbid")


def power_of_two(v: int) -> int:
    if v & (v - 1):
        raise ValueError("must be a power of two")
    return v


def check_cidrs(v: list[str] | None) -> list[str] | None:
    """Each entry a CIDR or a single address, IPv4 or IPv6."""
    for c in v or ():
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError as exc:
            raise ValueError(f"{c!r}: {exc}") from None
    return v


def check_ports(v: list[int] | None) -> list[int] | None:
    bad = [p for p in v or () if not 0 < p < 65536]
    if bad:
        raise ValueError(f"ports must be 1-65535 (got {bad})")
    return v


class PendingConfig(Strict):
    max_events: int = Field(4096, ge=1, description="events waiting for their process, at most")
    max_wait: float = Field(0.5, ge=0, le=10, description="seconds an event waits for its process")


def settle_field():
    """`settle:` of the sensors whose events wait for the process sensor (collector/sensors/attribution.py)."""
    return Field(1.0, ge=0, le=5, description="longest an event waits for the process sensor to have read "
                 "every exec before it (it goes as soon as that sensor caught up; collector/sensors/attribution.py)")
