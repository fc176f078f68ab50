"""The delivery settings of every exporter: `queue`, `batch`, `retry`, `buffer`, `dead_letter`,
`circuit_breaker` (composed into ExporterConfig, exporters/base.py). Only core imports here, so
exporters can use these models without importing the delivery machinery.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from siemhub.collector.core.settings import Strict




class QueueConfig(Strict):
    max_events: int = Field(20_000, ge=1, description="bound of the in-memory queue")


class BatchConfig(Strict):
    max_events: int = Field(512, ge=1, description="flush when this many events are waiting")
    max_wait: float = Field(1.0, gt=0, description="flush at least this often (seconds)")


class RetryConfig(Strict):
    # Defaults follow the OpenTelemetry Collector's exporterhelper retry settings.
    initial_interval: float = Field(5.0, gt=0)
    max_interval: float = Field(30.0, gt=0)
    multiplier: float = Field(1.5, ge=1)
    max_elapsed: float = Field(300.0, ge=0, description="give up after this long (0: never)")


class BufferConfig(Strict):
    """Where accepted events wait (buffers.py, diskqueue.py)."""
    type: Literal["memory", "disk"] = "memory"
    path: str | None = Field(None, description="disk: directory of segment files (var/buffer/<exporter>)")
    max_bytes: int = Field(1 << 30, ge=8192, description="disk: bound of the segment files")
    segment_bytes: int = Field(16 << 20, ge=4096, description="disk: size of one segment file")
    fsync: Literal["never", "batch", "always"] = "batch"
    when_full: Literal["block", "drop_newest", "drop_oldest"] = "drop_newest"

    @model_validator(mode="after")
    def _two_segments(self) -> BufferConfig:
        if self.type == "disk" and self.max_bytes < 2 * self.segment_bytes:
            raise ValueError("max_bytes must hold at least two segments (2 x segment_bytes)")
        return self


class DeadLetterConfig(Strict):
    """Where events this exporter gives up on go (deadletter.py)."""
    enabled: bool = True
    path: str | None = Field(None, description="JSON-lines file (var/dead-letter/<exporter>.jsonl)")
    exporter: str | None = Field(None, description="send them to this exporter instead of a file")
    max_bytes: int = Field(100 << 20, ge=4096, description="file: beyond this, dead letters are counted only")

    @model_validator(mode="after")
    def _one_destination(self) -> DeadLetterConfig:
        if self.path is not None and self.exporter is not None:
            raise ValueError("give either path or exporter, not both")
        return self


class CircuitBreakerConfig(Strict):
    failure_threshold: int = Field(5, ge=0, description="open after this many failed sends in a row (0: off)")
    cooldown: float = Field(30.0, gt=0, description="seconds open before one probe batch is tried")
