"""The sensor contract and registry.

A sensor owns one BPF program file (bpf/<area>/<name>.bpf.c) and the Python that loads it and decodes
its messages. It never imports exporters: it hands canonical events to `emit`, a callable that takes
a list of events (the pipeline routes them). Sensors are found by name through the `siemhub.sensors`
entry-point group; a name registered twice is an error.

A sensor is a plugin: its class names its own config model (`config_model`, validated from its
section of `sensors:`), and takes what the policy engine asks of the kernel through its own hook
(`kernel_settings` / `check_kernel_settings` / `apply_kernel_settings`). Adding a sensor touches its
module and its entry point only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from siemhub.collector.core import registry
from siemhub.collector.core.event import Event
from siemhub.collector.core.kernel_settings import KernelFilters
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
    """Constructed as cls(config, ctx): its section of `sensors:` in the config (an instance of
    `config_model`), and a SensorContext."""

    name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]  # validates `sensors.<name>` (unknown keys rejected)
    poll_interval: float = 0.1  # seconds the agent's poll loop waits in poll() when idle
    enforces: ClassVar[bool] = False  # takes KernelFilters.file_enforce (sigkill rules of the policies)
    enforces_beyond_files: ClassVar[bool] = False  # takes KernelFilters.enforce (sigkill by binary, exec, connect)

    # --- the policy hook: what the engine asks of the kernel, merged with the sensor's own settings ---

    def kernel_settings(self, config: Any, k: KernelFilters) -> tuple | None:
        """The arguments of apply_kernel_settings for this sensor's section `config` merged with the
        engine's `k` (empty KernelFilters: the config's own settings, as load() applied them). None:
        the sensor has nothing the engine can change."""
        return None

    def check_kernel_settings(self, *args: Any) -> Any:
        """Raise ValueError when the settings could not be applied, without changing anything (a reload
        checks every sensor before it changes any)."""

    def apply_kernel_settings(self, *args: Any) -> None:
        """Put the settings into the kernel (start-up and reload). Raises leaving the old ones in force."""

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


class Sensors(dict):
    """`sensors:` of the config: name -> that sensor's validated settings (sections set to null are
    left out). `sensors.process` reads the section like an attribute (None when absent)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def enabled(self) -> list[str]:
        """The configured sensors in start order: the process sensor first (every other one names its
        processes through the shared cache), then by name."""
        return sorted(self, key=lambda n: (n != "process", n))
