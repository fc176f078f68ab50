"""Prometheus metrics. One registry per agent (tests build their own), served on 127.0.0.1 by default.

Hot paths count per batch or per poll, not per event: a counter increment takes a lock.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from siemhub.collector.health import wsgi_routes


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sensor_events = Counter("siemhub_sensor_events", "Events received from the kernel, per sensor",
                                     ["sensor"], registry=r)
        self.ringbuf_lost = Counter("siemhub_ringbuf_lost_events", "Messages the kernel could not put in the ring buffer",
                                    ["sensor", "kind"], registry=r)
        self.kernel_filtered = Counter("siemhub_kernel_filtered_events", "Events dropped in the kernel by ignore filters",
                                       ["sensor"], registry=r)
        self.decode_errors = Counter("siemhub_decode_errors", "Kernel messages that could not be decoded",
                                     ["sensor", "reason"], registry=r)
        self.events_routed = Counter("siemhub_events_routed", "Events queued for an exporter", ["exporter"], registry=r)
        self.events_unrouted = Counter("siemhub_events_unrouted", "Events that matched no route", registry=r)
        self.events_sent = Counter("siemhub_exporter_events_sent", "Events the backend acknowledged", ["exporter"], registry=r)
        self.events_dropped = Counter("siemhub_exporter_events_dropped", "Events not delivered, by reason",
                                      ["exporter", "reason"], registry=r)
        self.send_retries = Counter("siemhub_exporter_retries", "Send attempts that will be retried, by reason",
                                    ["exporter", "reason"], registry=r)
        self.queue_depth = Gauge("siemhub_exporter_queue_depth", "Events waiting in the exporter's queue",
                                 ["exporter"], registry=r)
        self.batch_seconds = Histogram("siemhub_exporter_batch_seconds", "Time to encode and send one batch",
                                       ["exporter"], registry=r,
                                       buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.dead_lettered = Counter("siemhub_exporter_dead_lettered", "Events written to the dead-letter destination",
                                     ["exporter", "reason"], registry=r)
        self.circuit_state = Gauge("siemhub_exporter_circuit_state", "Circuit breaker: 0 closed, 1 open, 2 half-open",
                                   ["exporter"], registry=r)
        self.buffer_bytes = Gauge("siemhub_exporter_buffer_bytes", "Bytes of the exporter's disk buffer",
                                  ["exporter"], registry=r)
        self.buffer_corrupt = Counter("siemhub_exporter_buffer_corrupt_records",
                                      "Torn or corrupt records found in the disk buffer", ["exporter"], registry=r)
        self.redacted = Counter("siemhub_redacted_events", "Events in which a secret was redacted", registry=r)
        self.cache_size = Gauge("siemhub_process_cache_entries", "Processes in the process cache", registry=r)
        self.cache_lookups = Counter("siemhub_process_cache_lookups", "Parent lookups in the process cache",
                                     ["result"], registry=r)
        self.process_missing = Counter("siemhub_process_missing", "process_exit events that name no process, by "
                                       "cause (before_attach, parent_unknown, not_seen)", ["cause"], registry=r)

    def watch_policies(self, engine_of) -> None:
        """Expose the policy engine's counters (read at scrape time; `engine_of()` returns the engine in
        force, which a reload replaces, or None)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        class _Policies:
            def collect(self):
                engine = engine_of()
                if engine is None:
                    return
                c = engine.counters()
                yield GaugeMetricFamily("siemhub_policy_rules", "Policy rules in force", value=c.get("rules", 0))
                for key, doc in (("matched", "Events a policy rule matched"),
                                 ("actions", "policy_action events emitted"),
                                 ("ignored", "Events dropped by ignore rules in user space"),
                                 ("rate_limited", "Matches suppressed by a rule's rate limit")):
                    yield CounterMetricFamily(f"siemhub_policy_{key}", doc, value=c.get(key, 0))

        self.registry.register(_Policies())

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests and the agent_status event read counters through this)."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v

    def serve(self, host: str, port: int, username: str | None = None, password: str | None = None,
              health=None):
        """Start the /metrics endpoint; returns (server, thread). Port 0 picks a free port. With a
        username and password, every request needs HTTP basic auth (401 otherwise). With `health`
        (collector.health.Health), /healthz and /readyz are served too, without auth (probes)."""
        if username is None and health is None:
            return start_http_server(port, addr=host, registry=self.registry)
        return _serve_with_auth(self.registry, host, port, username, password or "", health)


def _serve_with_auth(registry, host: str, port: int, username: str | None, password: str, health=None):
    import base64
    import hmac
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    inner = make_wsgi_app(registry)
    want = b"Basic " + base64.b64encode(f"{username}:{password}".encode()) if username is not None else None
    routes = {}
    if health is not None:
        routes = wsgi_routes(health)

    def app(environ, start_response):
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is not None:
            return route(environ, start_response)
        got = environ.get("HTTP_AUTHORIZATION", "").encode()
        if want is not None and not hmac.compare_digest(got, want):  # constant time: no timing hint about the secret
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="siemhub"'),
                                                ("Content-Type", "text/plain")])
            return [b"authentication required\n"]
        return inner(environ, start_response)

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args):  # requests are not logged (no credentials in logs)
            pass

    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
