"""Liveness and readiness of the agent, served next to /metrics as /healthz and /readyz.

/readyz answers 200 once every component the agent was configured with is up: each exporter started
and each sensor attached (its programs loaded into the kernel), and, after that, the policies
installed. Until then, and again from the moment the agent starts shutting down, it answers 503 and
names what it still waits for. Kubernetes routes nothing to the agent, so readiness is what the
startup and readiness probes and a rolling update (`maxUnavailable`) wait on.

/healthz answers 200 while the agent is alive: every sensor's reader loop has come round within
`stall_after` seconds (a loop stuck in the kernel or in a deadlock makes it 503, and the kubelet's
liveness probe then restarts the container). Both endpoints answer without the /metrics basic auth:
they reveal no data, and the kubelet's probes carry no credentials.
"""

from __future__ import annotations

import json
import threading
import time


class Health:
    def __init__(self, stall_after: float = 60.0) -> None:
        self.stall_after = stall_after
        self._lock = threading.Lock()
        self._expected: list[str] = []  # components, in start order ("exporter out", "sensor process"...)
        self._up: set[str] = set()
        self._beats: dict[str, float] = {}  # sensor reader loops: monotonic time of their last round
        self._stopping = False

    # --- what the agent reports ---

    def expect(self, *components: str) -> None:
        with self._lock:
            for c in components:
                if c not in self._expected:
                    self._expected.append(c)

    def up(self, component: str) -> None:
        with self._lock:
            if component not in self._expected:
                self._expected.append(component)
            self._up.add(component)

    def beat(self, loop: str) -> None:
        self._beats[loop] = time.monotonic()  # a dict store: atomic, no lock on the reader's path

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    # --- what the probes read ---

    def waiting(self) -> list[str]:
        with self._lock:
            return [c for c in self._expected if c not in self._up]

    def ready(self) -> tuple[bool, dict]:
        waiting = self.waiting()
        ok = not waiting and not self._stopping and bool(self._expected)
        body: dict = {"status": "ready" if ok else "not ready"}
        if waiting:
            body["waiting_for"] = waiting
        if self._stopping:
            body["stopping"] = True
        return ok, body

    def live(self) -> tuple[bool, dict]:
        now = time.monotonic()
        stalled = sorted(name for name, t in list(self._beats.items()) if now - t > self.stall_after)
        body: dict = {"status": "stalled" if stalled else "alive"}
        if stalled:
            body["stalled"] = stalled
        return not stalled, body


def wsgi_routes(health: Health):
    """{path: WSGI app} for /healthz and /readyz (JSON bodies, 200 or 503)."""

    def endpoint(check):
        def app(environ, start_response):
            ok, body = check()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
            return [json.dumps(body).encode() + b"\n"]
        return app

    return {"/healthz": endpoint(health.live), "/readyz": endpoint(health.ready)}
