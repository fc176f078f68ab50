"""Retry timing: exponential backoff with jitter (settings: `retry:` of an exporter)."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter in [interval/2, interval], capped, with a total budget."""

    def __init__(self, initial: float, maximum: float, multiplier: float, max_elapsed: float) -> None:
        self.initial, self.maximum, self.multiplier, self.max_elapsed = initial, maximum, multiplier, max_elapsed

    def delays(self):
        interval = min(self.initial, self.maximum)
        while True:
            yield random.uniform(interval / 2, interval)
            interval = min(interval * self.multiplier, self.maximum)
