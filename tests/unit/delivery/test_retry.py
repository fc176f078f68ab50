"""Tests for siemhub.collector.delivery.retry: backoff growth, cap and jitter."""
from __future__ import annotations

import itertools

import pytest

from siemhub.collector.delivery.retry import Backoff
from siemhub.collector.delivery import retry


# --- Backoff -------------------------------------------------------------------------------------


def test_backoff_grows_by_the_multiplier_and_is_capped(monkeypatch):
    picks: list[tuple[float, float]] = []

    def record(a, b):
        picks.append((a, b))
        return b

    monkeypatch.setattr(retry.random, "uniform", record)
    got = list(itertools.islice(Backoff(0.1, 1.0, 2.0, 0).delays(), 7))
    assert got == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    lows, highs = zip(*picks)
    assert lows == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    assert highs == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_delays_stay_in_half_to_full_interval():
    delays = Backoff(0.05, 2.0, 1.5, 0).delays()
    interval = 0.05
    seen = []
    for _ in range(40):
        d = next(delays)
        assert interval / 2 <= d <= interval
        seen.append(d / interval)
        interval = min(interval * 1.5, 2.0)
    assert max(seen) - min(seen) > 0.1  # jittered, not constant


def test_backoff_initial_above_maximum_is_capped():
    delays = list(itertools.islice(Backoff(5.0, 1.0, 1.5, 0).delays(), 5))
    assert all(0.5 <= d <= 1.0 for d in delays), delays
