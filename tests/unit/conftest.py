"""Fixtures shared by the unit tests of the process cache and the process sensor's decoder."""
from __future__ import annotations

import pytest

from tests.unit.kmsg import Harness, proc_with_init


@pytest.fixture
def proc_root(tmp_path):
    """A fake /proc under tmp_path holding pid 1."""
    return proc_with_init(tmp_path)


@pytest.fixture
def h(proc_root) -> Harness:
    """The process sensor decoding crafted kernel messages against proc_root (a test file may define
    its own `h` for another sensor)."""
    return Harness(proc_root)
