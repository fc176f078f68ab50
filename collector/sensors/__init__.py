"""The sensor contract and registry.

A sensor owns one BPF program file (bpf/<area>/<name>.bpf.c) and the Python that loads it and decodes
its messages. It never imports exporters: it hands canonical events to `emit`, a callable that takes
a list of events (the pipeline routes them). Sensors are found by name through the `siemhub.sensors`
entry-point group; a name registered twice is an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from siemhub.collector.core import registry
from siemhub.collector.core.event import Event
from siemhub.collector.kernel.build import BPFUnavailable  # noqa: F401 - part of the sensor contract (load raises it)

Emit = Callable[[list[Event]], None]


@dataclass
class SensorContext:
    """What every sensor gets: who we are, the clock and ids, metrics, the shared process cache (to
    name the process of every event), and `emit` (hand events to the router)."""

    node: Any  # event.Node
    clock: Any  # event.Clock
    ids: Any  # event.EventIds
    metrics: Any  # metrics.Metrics
    cache: Any  # process_cache.ProcessCache
    emit: Emit


def bpf_required() -> bool:
    """CI sets SIEMHUB_REQUIRE_BPF=1: then a missing BPF capability is a failure, never a skip."""
    return os.environ.get("SIEMHUB_REQUIRE_BPF", "") not in ("", "0")


class Sensor:
    """Constructed as cls(config, ctx): its section of `sensors:` in the config, and a SensorContext."""

    name: ClassVar[str]
    poll_interval: float = 0.1  # seconds the agent's poll loop waits in poll() when idle

    def load(self) -> None:
        """Compile and attach the BPF programs. Raises BPFUnavailable when the kernel cannot."""
        raise NotImplementedError

    def poll(self, timeout: float) -> int:
        """Read what the kernel sent, emit events; returns the number of kernel messages handled."""
        raise NotImplementedError

    def counters(self) -> dict[str, int]:
        """Loss and error counters for the agent_status event (ringbuf_lost, decode_errors...)."""
        return {}

    def unload(self) -> None:
        raise NotImplementedError


def sensor_types() -> dict[str, Any]:
    return registry.registered("siemhub.sensors", "sensor")


def load_sensor_class(name: str) -> type[Sensor]:
    return registry.load("siemhub.sensors", name, "sensor")
