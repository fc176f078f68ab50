"""File exporter: JSON lines, size-based rotation with N backups, a chosen fsync policy.

Files are created 0600: events can carry command lines and paths an attacker must not read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from siemhub.collector.core.event import Event
from siemhub.exporters.base import DONE, Exporter, ExporterConfig, SendResult, outcome_for_exception
from siemhub.exporters.formats import FORMATS, get_format


class FileConfig(ExporterConfig):
    path: str
    rotate_bytes: int = Field(100 * 1024 * 1024, ge=4096, description="rotate when the file would exceed this")
    backups: int = Field(5, ge=0, description="rotated files kept: path.1 (newest) .. path.N")
    fsync: Literal["never", "batch", "interval"] = "interval"
    fsync_interval: float = Field(1.0, gt=0, description="seconds between fsyncs when fsync is 'interval'")


class FileExporter(Exporter):
    config_model = FileConfig
    formats = tuple(FORMATS)

    def __init__(self, name: str, config: FileConfig) -> None:
        super().__init__(name, config)
        self._format = get_format(config.format)
        self._fd = -1
        self._size = 0
        self._last_sync = time.monotonic()
        self._dirty = False

    def start(self) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.config.path)), exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.config.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        fd, self._fd = self._fd, -1  # if a rename below fails, the next send reopens instead of
        os.close(fd)                 # writing to a closed (or reused) descriptor number
        path, n = self.config.path, self.config.backups
        if n == 0:
            os.unlink(path)
        else:
            for i in range(n - 1, 0, -1):
                if os.path.exists(f"{path}.{i}"):
                    os.replace(f"{path}.{i}", f"{path}.{i + 1}")
            os.replace(path, f"{path}.1")
        self._open()

    def encode(self, batch: Sequence[Event]) -> bytes:
        return self._format.encode_lines(batch)

    def send(self, payload: bytes) -> SendResult:
        try:
            if self._fd < 0:
                self._open()
            if self._size and self._size + len(payload) > self.config.rotate_bytes:
                self._rotate()
            view = memoryview(payload)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._size += n
            self._dirty = True
            policy = self.config.fsync
            if policy == "batch" or (
                policy == "interval" and time.monotonic() - self._last_sync >= self.config.fsync_interval
            ):
                self._sync()
        except OSError as exc:
            # A partial write leaves a torn last line; readers skip it (replay counts it).
            return outcome_for_exception(exc)
        return DONE

    def _sync(self) -> None:
        os.fsync(self._fd)
        self._dirty = False
        self._last_sync = time.monotonic()

    def flush(self, timeout: float = 5.0) -> None:
        if self._fd >= 0 and self._dirty and self.config.fsync != "never":
            self._sync()

    def close(self) -> None:
        if self._fd >= 0:
            fd = self._fd
            try:
                self.flush()
            finally:  # a failed fsync must not leak the descriptor (nor fail again on a second close)
                self._fd = -1
                os.close(fd)
