"""The circuit breaker of one exporter (settings: `circuit_breaker:`).

After `failure_threshold` retryable failures in a row it opens: nothing is sent for `cooldown`
seconds, then one probe batch is tried (half open); a success closes it, a failure opens it again.
"""

from __future__ import annotations


class CircuitBreaker:
    CLOSED, OPEN, HALF_OPEN = 0, 1, 2

    def __init__(self, threshold: int, cooldown: float, gauge=None) -> None:
        self.threshold, self.cooldown, self._gauge = threshold, cooldown, gauge
        self.state = self.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.opened = 0  # times it opened

    def _set(self, state: int) -> None:
        self.state = state
        if self._gauge is not None:
            self._gauge.set(state)

    def wait_time(self, now: float) -> float:
        """Seconds before a send may be tried (0: now; the first one after a cool-down is the probe)."""
        if self.state != self.OPEN:
            return 0.0
        left = self.opened_at + self.cooldown - now
        if left > 0:
            return left
        self._set(self.HALF_OPEN)
        return 0.0

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.failures = 0
            if self.state != self.CLOSED:
                self._set(self.CLOSED)
            return
        self.failures += 1
        if self.threshold and (self.state == self.HALF_OPEN or self.failures >= self.threshold):
            if self.state != self.OPEN:
                self.opened += 1
            self.opened_at = now
            self._set(self.OPEN)
