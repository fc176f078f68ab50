"""Agent configuration: one YAML file, validated on load.

Errors name the file, the line and the field (`agent.yaml:7: exporters.out.path: Field required`).
Unknown keys are rejected everywhere. `${NAME}` (or `${NAME:-default}`) in a string is replaced by the
environment variable NAME, so secrets stay out of the file; their values are never logged or echoed.
Relative paths are relative to the working directory of the agent.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from siemhub.collector.core import secrets, yamlpos
from siemhub.collector.core.event import EVENT_TYPES, SEVERITIES
from siemhub.collector.core.settings import PendingConfig, Strict, check_cidrs, check_ports, settle_field
from siemhub.collector.core.settings import power_of_two as _power_of_two
from siemhub.collector.core.yamlpos import ConfigError
from siemhub.collector.redact import RedactConfig
from siemhub.exporters.base import Exporter, ExporterConfig, UnknownExporter, load_exporter_class
from siemhub.collector.sources.kafka import KafkaSourceConfig


class NodeConfig(Strict):
    name: str = Field(default_factory=socket.gethostname)
    labels: dict[str, str] = {}


class ProcessCacheConfig(Strict):
    max_entries: int = Field(65_536, ge=1024)
    exit_delay: float = Field(30.0, ge=0, description="seconds an exited process stays resolvable")


class IgnoreConfig(Strict):
    binaries: list[str] = Field([], description="executables whose execs are dropped in the kernel (by inode)")
    cgroups: list[str] = Field([], description="cgroup v2 directories whose execs are dropped in the kernel")


class KubernetesConfig(Strict):
    """Pod enrichment from the kubelet's directories on the node (no API server access needed)."""
    enabled: bool = True
    log_pods_dir: str = Field("/var/log/pods", description="<namespace>_<pod>_<uid>/<container>/ per pod")
    log_containers_dir: str = Field("/var/log/containers", description="<pod>_<namespace>_<container>-<id>.log")
    kubelet_pods_dir: str = Field("/var/lib/kubelet/pods", description="<uid>/containers/<name>/ per pod")
    cgroup_roots: list[str] = Field(["/sys/fs/cgroup", "/sys/fs/cgroup/unified"],
                                    description="cgroup v2 mounts, for the QoS class of cgroupfs-layout pods")
    negative_ttl: float = Field(10.0, ge=0, le=3600, description="seconds before a pod not found is looked up again")
    runtime_dirs: list[str] = Field(
        ["/run/containerd/io.containerd.runtime.v2.task/k8s.io", "/run/containers/storage/overlay-containers"],
        description="container runtimes' OCI bundle directories (<id>/config.json, <id>/userdata/config.json): "
                    "the image, and the pod when the log directories are not mounted; [] to skip")


class ProcessSensorConfig(Strict):
    args_max_bytes: int = Field(8192, ge=256, le=16384, description="argv bytes copied (power of two)")
    filename_max_bytes: int = Field(1024, ge=256, le=4096, description="binary path bytes (power of two)")
    cwd_depth: int = Field(24, ge=1, le=48, description="path components walked for cwd")
    procfs_scan: bool = True
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    # Large batches keep user space cheap (a batch of ~1,000 messages costs ~25% less CPU per message
    # than one of ~250: the workload evicts the agent's caches between polls; bench/exec_storm.py), so
    # the kernel wakes the reader rarely and the latency bound is poll_interval.
    wakeup_every: int = Field(4096, ge=1, le=65536, description="force a wake-up every N messages per CPU "
                              "(power of two); a quarter of the ring unread also wakes the reader")
    poll_interval: float = Field(0.5, gt=0, le=5, description="seconds between ring buffer polls: the latency "
                                 "bound of process events")
    ancestors: int = Field(0, ge=0, le=32, description="ancestors above the parent listed on process_exec")
    ignore: IgnoreConfig = IgnoreConfig()
    pending: PendingConfig = PendingConfig()
    cache: ProcessCacheConfig = ProcessCacheConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()

    _p2 = field_validator("args_max_bytes", "filename_max_bytes", "ringbuf_pages", "wakeup_every")(
        classmethod(lambda cls, v: _power_of_two(v)))


class NetworkIgnoreConfig(Strict):
    cidrs: list[str] = Field([], description="remote addresses (CIDR or address, IPv4 or IPv6) never reported")
    ports: list[int] = Field([], description="destination ports never reported (the remote port of an "
                                             "outbound connection, the local port of an inbound one)")
    loopback: bool = Field(False, description="drop connections to 127.0.0.0/8 and ::1 in the kernel")

    _cidrs = field_validator("cidrs")(classmethod(lambda cls, v: check_cidrs(v)))
    _ports = field_validator("ports")(classmethod(lambda cls, v: check_ports(v)))


class NetworkSensorConfig(Strict):
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    wakeup_every: int = Field(64, ge=1, le=4096, description="force a wake-up every N messages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    max_connections: int = Field(65536, ge=1024, description="open connections tracked for their close")
    settle: float = settle_field()
    ignore: NetworkIgnoreConfig = NetworkIgnoreConfig()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))


class PrivilegeSensorConfig(Strict):
    ringbuf_pages: int = Field(64, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    module_loads: bool = Field(True, description="report init_module/finit_module attempts; on kernels "
                               "without module support this watches every syscall exit (see docs)")
    settle: float = settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages")(classmethod(lambda cls, v: _power_of_two(v)))


DEFAULT_FILE_WATCH = [
    "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/",
    "/etc/ssh/", "/root/.ssh/", "/etc/cron.d/", "/etc/crontab", "/var/spool/cron/", "/etc/ld.so.preload",
    "/etc/systemd/system/", "/lib/systemd/system/", "/etc/kubernetes/", "/var/lib/kubelet/config.yaml",
    "/etc/containerd/", "/etc/docker/daemon.json",
]
FILE_OPERATIONS = ("open_read", "open_write", "write", "unlink", "rename", "chmod", "chown", "truncate")


def _watch_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"{v!r}: must be an absolute path")
    if len(v.encode()) > 254:
        raise ValueError(f"{v!r}: longer than 254 bytes")
    return v


class FileEnforceRule(Strict):
    path: str = Field(description="file, or directory with a trailing '/' (everything below it)")
    action: Literal["sigkill"] = Field("sigkill", description="sigkill from the kernel (block needs BPF LSM)")
    operations: list[Literal[FILE_OPERATIONS]] = Field(min_length=1)  # type: ignore[valid-type]

    _path = field_validator("path")(classmethod(lambda cls, v: _watch_path(v)))


class FileSensorConfig(Strict):
    watch: list[str] = Field(default_factory=lambda: list(DEFAULT_FILE_WATCH),
                             description="absolute paths; a trailing '/' (or an existing directory) watches "
                                         "everything below it")
    watch_writes: list[str] = Field([], description="paths reported only when changed: opened for writing, "
                                                    "written, unlinked, renamed, chmod/chown, truncated (reads are "
                                                    "not reported); e.g. /proc/sys/")
    enforce: list[FileEnforceRule] = Field([], description="paths whose operations get SIGKILL in the kernel")
    path_depth: int = Field(32, ge=4, le=64, description="path components walked in the kernel")
    ringbuf_pages: int = Field(256, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    wakeup_every: int = Field(16, ge=1, le=4096, description="force a wake-up every N messages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    settle: float = settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))

    @field_validator("watch", "watch_writes")
    @classmethod
    def _watch(cls, v: list[str]) -> list[str]:
        return [_watch_path(p) for p in v]


class SensorsConfig(Strict):
    process: ProcessSensorConfig | None = None
    file: FileSensorConfig | None = None
    network: NetworkSensorConfig | None = None
    privilege: PrivilegeSensorConfig | None = None


class MatchConfig(Strict):
    types: list[Literal[EVENT_TYPES]] | None = None  # type: ignore[valid-type]
    min_severity: Literal[SEVERITIES] = "info"  # type: ignore[valid-type]
    binaries: list[str] | None = Field(None, description="glob patterns on process.binary")
    namespaces: list[str] | None = Field(None, description="glob patterns on process.pod.namespace")
    tags: list[str] | None = None


class RouteConfig(Strict):
    name: str
    match: MatchConfig = MatchConfig()
    to: list[str] = Field(min_length=1)
    final: bool = False


class MetricsAuth(Strict):
    username: str
    password: str = Field(description="use ${ENV} or ${file:PATH}; never logged")


class MetricsConfig(Strict):
    enabled: bool = True
    listen: str = Field("127.0.0.1:9464", description="host:port of /metrics (127.0.0.1 unless you mean it)")
    auth: MetricsAuth | None = Field(None, description="require HTTP basic auth on /metrics")

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError("expected host:port")
        return v


class SourcesConfig(Strict):
    """Sources besides the sensors; `siemhub aggregate` reads `kafka`."""

    kafka: KafkaSourceConfig | None = None


class PoliciesConfig(Strict):
    """`policies:` (docs/policies.md). Absent: no policies. `{}`: the shipped library."""

    library: bool = Field(True, description="load the policy library shipped with siemhub (policies/)")
    paths: list[str] = Field([], description="policy files (.yaml/.yml) and directories of them")
    disabled: list[str] = Field([], description="names of policies not to load")


class AgentConfig(Strict):
    node: NodeConfig = NodeConfig()
    sensors: SensorsConfig = SensorsConfig()
    exporters: dict[str, dict[str, Any]] = Field(min_length=1)
    routes: list[RouteConfig] = Field(min_length=1)
    metrics: MetricsConfig = MetricsConfig()
    sources: SourcesConfig = SourcesConfig()
    redact: RedactConfig = RedactConfig()
    policies: PoliciesConfig | None = None
    status_interval: float = Field(60.0, ge=0, description="seconds between agent_status events (0: off)")
    shutdown_deadline: float = Field(10.0, ge=0, description="seconds to drain queues on SIGTERM")


@dataclass
class LoadedConfig:
    agent: AgentConfig
    exporters: dict[str, tuple[type[Exporter], ExporterConfig]]
    source: str
    policies: Any = None  # policy.PolicyEngine when the config has a `policies:` section


def parse(text: str, source: str = "<config>") -> LoadedConfig:
    data, positions = yamlpos.parse(text, source)
    env_problems: list[tuple[tuple, str]] = []
    expanded: dict[tuple, str] = {}
    data = secrets.expand(data, (), env_problems, expanded)
    if env_problems:
        raise ConfigError([yamlpos.problem_at(p, m, source, positions)[1] for p, m in env_problems])
    problems: list[tuple[int, str]] = []

    def problem(loc: tuple, msg: str) -> None:
        problems.append(yamlpos.problem_at(loc, msg, source, positions))

    agent = None
    try:
        agent = AgentConfig.model_validate(data)
    except ValidationError as err:
        problems.extend(yamlpos.pydantic_problems(err, (), source, positions, expanded))

    # Exporters and routes are checked even when other sections failed, so one run shows every problem.
    exporters: dict[str, tuple[type[Exporter], ExporterConfig]] = {}
    raw_exporters = data.get("exporters")
    for name, raw in (raw_exporters.items() if isinstance(raw_exporters, dict) else ()):
        loc = ("exporters", name)
        if not isinstance(raw, dict) or "type" not in raw:
            problem(loc, "needs a 'type'")
            continue
        try:
            cls = load_exporter_class(str(raw["type"]))
        except UnknownExporter as exc:
            msg = str(exc)
            if loc + ("type",) in expanded:
                msg = msg.replace(repr(str(raw["type"])), repr(expanded[loc + ("type",)]), 1)
            problem(loc + ("type",), msg)
            continue
        try:
            cfg = cls.config_model.model_validate(raw)
        except ValidationError as err:
            problems.extend(yamlpos.pydantic_problems(err, loc, source, positions, expanded))
            continue
        if cfg.format not in cls.formats:
            shown = expanded.get(loc + ("format",), cfg.format)
            problem(loc + ("format",), f"format {shown!r} is not supported by {raw['type']} "
                                       f"(supported: {', '.join(cls.formats)})")
            continue
        exporters[name] = (cls, cfg)
    routes = data.get("routes")
    for i, r in enumerate(routes if isinstance(routes, list) else ()):
        targets = r.get("to") if isinstance(r, dict) else None
        for j, name in enumerate(targets if isinstance(targets, list) else ()):
            if isinstance(raw_exporters, dict) and isinstance(name, str) and name not in raw_exporters:
                problem(("routes", i, "to", j), f"unknown exporter {expanded.get(('routes', i, 'to', j), name)!r}")
    for name, (_, cfg) in exporters.items():
        target = cfg.dead_letter.exporter
        if target is not None and (target == name or target not in exporters):
            problem(("exporters", name, "dead_letter", "exporter"),
                    "an exporter cannot take its own dead letters" if target == name
                    else f"unknown exporter {target!r}")
    if problems or agent is None:
        raise ConfigError([text for _, text in sorted(problems, key=lambda p: p[0])])
    policies = None
    if agent.policies is not None:
        from siemhub.collector.policy import load_policy_set

        policies = load_policy_set(agent.policies)  # PolicyError (a ConfigError): file:line: field
    return LoadedConfig(agent, exporters, source, policies)


def load(path: str | None) -> LoadedConfig:
    """Load a config file, or the embedded default when path is None."""
    if path is None:
        text = resources.files("siemhub.collector").joinpath("default.yaml").read_text()
        return parse(text, "<embedded default.yaml>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}:0: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}:0: not UTF-8 text"]) from None
    return parse(text, path)
