"""The agent: sensors -> process cache -> events -> router -> per-exporter delivery.

`Pipeline` is everything after the sensors (exporters, router, metrics); `siemhub replay` uses it alone.
`Agent` adds the sensors, the signal handling and the periodic agent_status event.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import gc

from siemhub.collector import config as config_mod, policy
from siemhub.collector.config import LoadedConfig
from siemhub.collector.container import PodResolver
from siemhub.collector.core.event import SCHEMA_VERSION, AgentStatus, Clock, Event, EventIds, Node
from siemhub.collector.delivery.runner import ExporterRunner
from siemhub.collector.health import Health
from siemhub.collector.k8s.enrich import KubernetesEnrichment
from siemhub.collector.metrics import Metrics
from siemhub.collector.otlp_metrics import OtlpMetricsPusher
from siemhub.collector.process_cache import ProcessCache
from siemhub.collector.redact import Redactor
from siemhub.collector.router import Match, Route, Router
from siemhub.collector.sensors import Sensor, SensorContext, load_sensor_class

log = logging.getLogger("siemhub.agent")


def _pod_resolver(k) -> PodResolver:
    if k is None:
        return PodResolver()
    return PodResolver(k.log_pods_dir, k.log_containers_dir, k.kubelet_pods_dir, tuple(k.cgroup_roots),
                       k.negative_ttl, enabled=k.enabled, runtime_dirs=tuple(k.runtime_dirs))


class StartupError(RuntimeError):
    """The agent cannot start as configured (a port in use, an exporter that cannot open...)."""


def tune_gc() -> None:
    """The cyclic garbage collector's settings for a process that moves events (the agent, `siemhub
    aggregate`, `siemhub replay`), called once start-up is done: what exists by then lives as long as
    the process, so it leaves the collector's scans (gc.freeze), and young objects are collected less
    often. Event structs are untracked (gc=False); what stays tracked per event is short-lived lists,
    which the default threshold (700) scanned every few events: -25% CPU per event in the aggregator
    (bench/aggregator_scaling.py), -20% in replay (bench/replay_cost.py)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


class Pipeline:
    def __init__(self, cfg: LoadedConfig, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.runners = {name: ExporterRunner(cls(name, ecfg), self.metrics)
                        for name, (cls, ecfg) in cfg.exporters.items()}
        for runner in self.runners.values():
            runner.link(self.runners)  # dead_letter: {exporter: other}
        routes = [Route(r.name, Match.build(**r.match.model_dump()), tuple(r.to), r.final) for r in cfg.agent.routes]
        self.router = Router(routes, self.runners, self.metrics)
        self._lock = threading.Lock()  # sensors emit from their own threads
        self._started: list[ExporterRunner] = []
        self.redactor = Redactor.from_config(getattr(cfg.agent, "redact", None))
        self.policies = None  # policy.PolicyEngine: set by Agent (replay does not re-run policies)
        self.kubernetes = None  # k8s.enrich.KubernetesEnrichment: set by Agent (holds events for their pod)

    def start(self) -> None:
        for runner in self.runners.values():
            # An exporter that cannot start is a start-up error, never silently disabled.
            try:
                runner.start()
            except Exception as exc:  # noqa: BLE001 - reported with the exporter's name, then fatal
                raise StartupError(f"exporter {runner.name!r} cannot start: {exc}") from exc
            self._started.append(runner)

    def emit(self, events: list[Event], wait: bool = False, to: str | None = None) -> dict[str, int]:
        """Route events to their exporters (or only to exporter `to`: replayed dead letters); returns
        acknowledgement marks (see `delivered`). Redaction happens here, the one place every event
        passes before any exporter sees it."""
        if self.redactor is not None and events:
            n = self.redactor.apply(events)
            if n:
                self.metrics.redacted.inc(n)
        k8s = self.kubernetes
        if k8s is not None and events and to is None:
            events = k8s.filter(events)  # events of a pod the API has not shown yet wait for it (briefly)
        return self._dispatch(events, wait, to)

    def _dispatch(self, events: list[Event], wait: bool = False, to: str | None = None) -> dict[str, int]:
        engine = self.policies
        if engine is not None and events and to is None:
            events = engine.apply(events)  # after redaction: policy_action events carry redacted args
        with self._lock:
            if to is not None:
                return {to: self.runners[to].put_many(list(events), wait)}
            return self.router.route(events, wait)

    def delivered(self, marks: dict[str, int]) -> bool:
        """True once every exporter named in `marks` has finished the events up to its mark: sent,
        or accounted for with a counted reason. Sources that commit offsets use this."""
        return all(self.runners[name].finished >= seq for name, seq in marks.items())

    def stop(self, deadline_s: float) -> dict[str, dict]:
        deadline = time.monotonic() + deadline_s
        threads = [threading.Thread(target=r.stop, args=(deadline,)) for r in self._started]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {name: {"sent": r.sent, "dropped": dict(r.dropped), "dead_lettered": dict(r.dead_lettered),
                       "buffered": r.buffered}  # left in a disk buffer for the next start
                for name, r in self.runners.items()}


class Agent:
    def __init__(self, cfg: LoadedConfig, metrics: Metrics | None = None) -> None:
        a = cfg.agent
        self.cfg = cfg
        self.pipeline = Pipeline(cfg, metrics)
        self.metrics = self.pipeline.metrics
        self.node = Node(name=a.node.name, labels=dict(a.node.labels), cluster=a.node.cluster)
        self.clock = Clock()
        self.ids = EventIds()
        self.sensors: list[Sensor] = []
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self.metrics_server = None
        self.metrics_pusher = None  # metrics.otlp
        self.health = Health()  # /healthz, /readyz next to /metrics
        pcfg = a.sensors.process
        cache_cfg = pcfg.cache if pcfg else None
        self.cache = ProcessCache(
            self.node.name, self.clock, self.metrics,
            max_entries=cache_cfg.max_entries if cache_cfg else 65536,
            exit_delay=cache_cfg.exit_delay if cache_cfg else 30.0,
            pods=None,
        )
        # pods: the kubelet's directories, and the API server's watch when there is one (collector/k8s/)
        k = pcfg.kubernetes if pcfg else None
        self.kubernetes = KubernetesEnrichment(k, self.node.name, self.metrics.registry, node=_pod_resolver(k))
        self.cache.pods = self.kubernetes.resolver
        self.metrics.watch_policies(lambda: self.pipeline.policies)
        engine = getattr(cfg, "policies", None)
        if engine is not None:
            engine.cache = self.cache  # follow_children walks the cache above the event's ancestors
            self.pipeline.policies = engine

    def _build_sensors(self) -> None:
        """One sensor per section of `sensors:` that is set, found by name (entry points); the process
        sensor first, since every other sensor names its processes through the shared cache."""
        ctx = SensorContext(self.node, self.clock, self.ids, self.metrics, self.cache, self.pipeline.emit)
        sections = self.cfg.agent.sensors
        for name in sections.enabled():
            self.sensors.append(load_sensor_class(name)(sections[name], ctx))

    def start(self) -> None:
        a = self.cfg.agent
        if a.metrics.enabled:
            host, _, port = a.metrics.listen.rpartition(":")
            try:
                auth = a.metrics.auth
                self.metrics_server = self.metrics.serve(host.strip("[]"), int(port),
                                                         auth.username if auth else None,
                                                         auth.password if auth else None, health=self.health)
            except OSError as exc:
                raise StartupError(f"cannot serve /metrics on {a.metrics.listen}: {exc.strerror} "
                                   "(change metrics.listen or set metrics.enabled: false)") from None
            log.info("metrics on http://%s/metrics, health on /healthz and /readyz", a.metrics.listen)
        if a.metrics.otlp is not None:  # metrics.otlp: the same registry pushed to an OTLP collector
            self.metrics_pusher = OtlpMetricsPusher(a.metrics.otlp, self.metrics.registry, self.node.name).start()
        h = self.health
        h.expect(*(f"exporter {n}" for n in self.pipeline.runners),
                 *(f"sensor {n}" for n in a.sensors.enabled()),
                 "policies")
        self.pipeline.start()
        for n in self.pipeline.runners:
            h.up(f"exporter {n}")
        self.kubernetes.start(self.pipeline._dispatch, self.node)  # the first list of this node's pods, before the sensors
        self.pipeline.kubernetes = self.kubernetes
        self._build_sensors()
        for s in self.sensors:
            try:
                s.load()
            except ValueError as exc:  # a setting the kernel side cannot apply (e.g. an ignore path)
                raise StartupError(f"sensor {s.name}: {exc}") from None
            log.info("sensor %s loaded", s.name)
        try:
            policy.install(self.sensors, a, self.pipeline.policies)
        except ValueError as exc:
            raise StartupError(f"policies: {exc}") from None
        for s in self.sensors:
            h.up(f"sensor {s.name}")  # attached, with the policies' kernel filters in force
        h.up("policies")
        tune_gc()  # everything built so far (compiled programs, the /proc scan) lives as long as the agent
        for s in self.sensors:
            t = threading.Thread(target=self._poll_loop, args=(s,), name=f"sensor-{s.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _poll_loop(self, sensor: Sensor) -> None:
        interval = sensor.poll_interval
        beat = f"sensor {sensor.name}"
        while not self._stop.is_set():
            self.health.beat(beat)  # /healthz: this reader loop came round
            try:
                sensor.poll(interval)
            except Exception:  # noqa: BLE001 - keep reading; the error is logged and counted
                log.exception("sensor %s: poll failed", sensor.name)
                self.metrics.decode_errors.labels(sensor.name, "poll_failed").inc()
                time.sleep(interval)

    def status_event(self) -> Event:
        counters: dict[str, int] = {"process_cache_entries": len(self.cache), "process_cache_evicted": self.cache.evicted}
        pods = getattr(self.cache, "pods", None)
        if pods is not None and (pods.resolved or pods.unresolved):
            # pod look-ups in the kubelet's directories: many misses mean they are not mounted or moved
            counters["kubernetes_pods_found"] = pods.resolved
            counters["kubernetes_pods_not_found"] = pods.unresolved
        kube = getattr(self, "kubernetes", None)
        if kube is not None and kube.watcher is not None:  # pods from the API server; events that waited for theirs, by outcome
            counters["kubernetes_api_pods"] = len(kube.store)
            if kube.hold is not None:
                for k, v in kube.hold.counts.items():
                    counters[f"kubernetes_held_{k}"] = v
        for s in self.sensors:
            for k, v in s.counters().items():
                counters[f"{s.name}_{k}"] = v
        for name, r in self.pipeline.runners.items():
            counters[f"exporter_{name}_sent"] = r.sent
            for reason, n in r.dropped.items():
                counters[f"exporter_{name}_dropped_{reason}"] = n
        engine = getattr(self.pipeline, "policies", None)
        if engine is not None:
            for k, v in engine.counters().items():
                counters[f"policy_{k}"] = v  # policy_ignored, policy_rate_limited... (not losses)
        lost = sum(v for k, v in counters.items() if "lost" in k or "dropped" in k or "decode_errors" in k)
        return Event(id=self.ids.new(), time=self.clock.now(), type="agent_status", schema_version=SCHEMA_VERSION,
                     severity="medium" if lost else "info", node=self.node, status=AgentStatus(counters=counters))

    def run(self, duration: float | None = None) -> dict:
        """Run until SIGINT/SIGTERM or `duration` seconds; then drain and return delivery counts."""
        self._install_signals()
        self.start()
        end = time.monotonic() + duration if duration else float("inf")
        interval = self.cfg.agent.status_interval
        next_status = time.monotonic() + interval if interval else float("inf")
        next_housekeeping = time.monotonic() + 1.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_housekeeping:
                self.cache.evict()
                self.cache.sync_metrics()
                next_housekeeping = now + 1.0
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if now >= next_status:
                self.pipeline.emit([self.status_event()])
                next_status = now + interval
            self._stop.wait(min(0.5, max(0.0, end - now)))
        return self.shutdown()

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def reload(self) -> bool:
        """Re-read the config file and apply what can change at run time (the sensors' in-kernel filters
        and watch lists, the policies). A bad file, or settings a sensor refuses, is reported and the
        running settings stay in force in every sensor."""
        source = self.cfg.source
        if source.startswith("<"):
            log.warning("reload: the agent runs an embedded config; nothing to re-read")
            return False
        try:
            new = config_mod.load(source)
        except config_mod.ConfigError as exc:
            for line in exc.problems:
                log.error("reload rejected: %s", line)
            return False
        # install() applies the new config's kernel filters with the policies', all sensors or none
        try:
            policy.install(self.sensors, new.agent, new.policies)
        except ValueError as exc:
            log.error("reload rejected: policies: %s", exc)
            return False
        if new.policies is not None:
            new.policies.cache = self.cache
        self.pipeline.policies = new.policies
        log.info("reload: applied %s", source)
        return True

    def shutdown(self) -> dict:
        self.health.stopping()  # /readyz 503 from now on
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for s in self.sensors:
            try:
                s.unload()  # takes what is still in the ring buffer
            except Exception:  # noqa: BLE001
                log.exception("sensor %s: unload failed", s.name)
        self.kubernetes.stop()  # sends what waits for its pod (tagged)
        if self.cfg.agent.status_interval:
            self.pipeline.emit([self.status_event()])
        counts = self.pipeline.stop(self.cfg.agent.shutdown_deadline)
        if self.metrics_pusher is not None:
            self.metrics_pusher.stop()  # pushes the final counts
        if self.metrics_server is not None:
            server, _thread = self.metrics_server
            server.shutdown()
        return counts
