"""Fixtures of the delivery tests: a temporary working directory, and runners stopped after each test."""
from __future__ import annotations

import time

import pytest

from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.metrics import Metrics
from tests.unit.delivery.fakes import FakeExporter


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Default dead-letter files and disk buffers live under var/ of the working directory."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def make_runner():
    """Build and start runners; stop whatever a test left running."""
    made: list[ExporterRunner] = []

    def make(exporter: FakeExporter, metrics: Metrics | None = None, start: bool = True) -> ExporterRunner:
        r = ExporterRunner(exporter, metrics or Metrics())
        if start:
            r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        if r._thread.is_alive():
            r.stop(time.monotonic() + 0.2)
