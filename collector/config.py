"""Agent configuration: one YAML file, validated on load.

Errors name the file, the line and the field (`agent.yaml:7: exporters.out.path: Field required`).
Unknown keys are rejected everywhere. `${NAME}` (or `${NAME:-default}`) in a string is replaced by the
environment variable NAME, so secrets stay out of the file; their values are never logged or echoed.
Relative paths are relative to the working directory of the agent.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from siemhub.collector.event import EVENT_TYPES, SEVERITIES
from siemhub.collector.k8s.config import KubernetesApiConfig
from siemhub.collector.redact import RedactConfig
from siemhub.exporters.base import Exporter, ExporterConfig, UnknownExporter, load_exporter_class
from siemhub.collector.sources.kafka import KafkaSourceConfig


class ConfigError(Exception):
    """A config problem. Each line of str(error) is `file:line: field: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeConfig(_Strict):
    name: str = Field(default_factory=socket.gethostname)
    labels: dict[str, str] = {}
    cluster: str | None = Field(None, description="the cluster's name, on every event (node.cluster)")


def _power_of_two(v: int) -> int:
    if v & (v - 1):
        raise ValueError("must be a power of two")
    return v


class ProcessCacheConfig(_Strict):
    max_entries: int = Field(65_536, ge=1024)
    exit_delay: float = Field(30.0, ge=0, description="seconds an exited process stays resolvable")


class IgnoreConfig(_Strict):
    binaries: list[str] = Field([], description="executables whose execs are dropped in the kernel (by inode)")
    cgroups: list[str] = Field([], description="cgroup v2 directories whose execs are dropped in the kernel")


class PendingConfig(_Strict):
    max_events: int = Field(4096, ge=1, description="events waiting for their process, at most")
    max_wait: float = Field(0.5, ge=0, le=10, description="seconds an event waits for its process")


class KubernetesConfig(_Strict):
    """Pod enrichment from the kubelet's directories on the node (no API server access needed), and
    from the API server when one is reachable (`api`, collector/k8s/)."""
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
    api: KubernetesApiConfig = Field(KubernetesApiConfig(), description="pod labels, annotations, images and "
                                     "owning workloads from the API server (docs/kubernetes.md)")


class ProcessSensorConfig(_Strict):
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


class NetworkIgnoreConfig(_Strict):
    cidrs: list[str] = Field([], description="remote addresses (CIDR or address, IPv4 or IPv6) never reported")
    ports: list[int] = Field([], description="destination ports never reported (the remote port of an "
                                             "outbound connection, the local port of an inbound one)")
    loopback: bool = Field(False, description="drop connections to 127.0.0.0/8 and ::1 in the kernel")

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError as exc:
                raise ValueError(f"{c!r}: {exc}") from None
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        bad = [p for p in v if not 0 < p < 65536]
        if bad:
            raise ValueError(f"ports must be 1-65535 (got {bad})")
        return v


def _settle_field():
    return Field(1.0, ge=0, le=5, description="longest an event waits for the process sensor to have read "
                 "every exec before it (it goes as soon as that sensor caught up; collector/sensors/attribution.py)")


class NetworkSensorConfig(_Strict):
    ringbuf_pages: int = Field(1024, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    wakeup_every: int = Field(64, ge=1, le=4096, description="force a wake-up every N messages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    max_connections: int = Field(65536, ge=1024, description="open connections tracked for their close")
    settle: float = _settle_field()
    ignore: NetworkIgnoreConfig = NetworkIgnoreConfig()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))


class PrivilegeSensorConfig(_Strict):
    ringbuf_pages: int = Field(64, ge=16, description="ring buffer size in 4 KiB pages (power of two)")
    poll_interval: float = Field(0.1, gt=0, le=5, description="seconds between ring buffer polls")
    module_loads: bool = Field(True, description="report init_module/finit_module attempts; on kernels "
                               "without module support this watches every syscall exit (see docs)")
    settle: float = _settle_field()
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


class FileEnforceRule(_Strict):
    path: str = Field(description="file, or directory with a trailing '/' (everything below it)")
    action: Literal["sigkill"] = Field("sigkill", description="sigkill from the kernel (block needs BPF LSM)")
    operations: list[Literal[FILE_OPERATIONS]] = Field(min_length=1)  # type: ignore[valid-type]

    _path = field_validator("path")(classmethod(lambda cls, v: _watch_path(v)))


class FileSensorConfig(_Strict):
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
    settle: float = _settle_field()
    pending: PendingConfig = PendingConfig()

    _p2 = field_validator("ringbuf_pages", "wakeup_every")(classmethod(lambda cls, v: _power_of_two(v)))

    @field_validator("watch", "watch_writes")
    @classmethod
    def _watch(cls, v: list[str]) -> list[str]:
        return [_watch_path(p) for p in v]


class SensorsConfig(_Strict):
    process: ProcessSensorConfig | None = None
    file: FileSensorConfig | None = None
    network: NetworkSensorConfig | None = None
    privilege: PrivilegeSensorConfig | None = None


class MatchConfig(_Strict):
    types: list[Literal[EVENT_TYPES]] | None = None  # type: ignore[valid-type]
    min_severity: Literal[SEVERITIES] = "info"  # type: ignore[valid-type]
    binaries: list[str] | None = Field(None, description="glob patterns on process.binary")
    namespaces: list[str] | None = Field(None, description="glob patterns on process.pod.namespace")
    tags: list[str] | None = None


class RouteConfig(_Strict):
    name: str
    match: MatchConfig = MatchConfig()
    to: list[str] = Field(min_length=1)
    final: bool = False


class MetricsAuth(_Strict):
    username: str
    password: str = Field(description="use ${ENV} or ${file:PATH}; never logged")


class MetricsConfig(_Strict):
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


class SourcesConfig(_Strict):
    """Sources besides the sensors; `siemhub aggregate` reads `kafka`."""

    kafka: KafkaSourceConfig | None = None


class PoliciesConfig(_Strict):
    """`policies:` (docs/policies.md). Absent: no policies. `{}`: the shipped library."""

    library: bool = Field(True, description="load the policy library shipped with siemhub (policies/)")
    paths: list[str] = Field([], description="policy files (.yaml/.yml) and directories of them")
    disabled: list[str] = Field([], description="names of policies not to load")


class AgentConfig(_Strict):
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


# --- YAML with positions -------------------------------------------------------------------------

_ENV = re.compile(r"\$\{(?:file:([^}]+)|([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?)\}")


class _Loader(yaml.SafeLoader):
    pass


def _compose_positions(node: yaml.Node, path: tuple, out: dict[tuple, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # A key that is itself a mapping or list (`{{}}: x`) is not a setting name: place it by
            # its text so the validator can report it at its line (found by fuzzing).
            key = k.value if isinstance(k, yaml.ScalarNode) else yaml.serialize(k).strip()
            _compose_positions(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1  # the key's line, not the first line of its value
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _compose_positions(v, path + (i,), out)


def _expand_env(value: Any, path: tuple, problems: list[tuple[tuple, str]],
                expanded: dict[tuple, str]) -> Any:
    """Replace ${NAME} (environment) and ${file:PATH} (the file's content, trailing newline removed:
    Kubernetes secrets and systemd credentials are files) references; `expanded` maps each changed
    location to its text as written, which error messages show instead of the value (it may be a secret)."""
    if isinstance(value, str):
        if _ENV.search(value):
            expanded[path] = value

        def sub(m: re.Match) -> str:
            secret_file, name, default = m.group(1), m.group(2), m.group(3)
            if secret_file is not None:
                try:
                    with open(secret_file, encoding="utf-8") as f:
                        return f.read().rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                    problems.append((path, f"cannot read secret file {secret_file}: {reason}"))
                    return ""
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            problems.append((path, f"environment variable {name} is not set"))
            return ""
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, path + (k,), problems, expanded) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, path + (i,), problems, expanded) for i, v in enumerate(value)]
    return value


def _line_for(loc: tuple, positions: dict[tuple, int]) -> int:
    loc = tuple(loc)
    while loc and loc not in positions:
        loc = loc[:-1]
    return positions.get(loc, 1)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pydantic_problems(err: ValidationError, prefix: tuple, source: str, positions: dict,
                       expanded: dict[tuple, str]) -> list[tuple[int, str]]:
    problems = []
    for e in err.errors():
        loc = prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] in ("literal_error", "enum") and isinstance(e.get("input"), str | int):
            msg = f"{msg} (got {expanded.get(loc, e['input'])!r})"
        line = _line_for(loc, positions)
        problems.append((line, f"{source}:{line}: {_dotted(loc)}: {msg}"))
    return problems


def parse(text: str, source: str = "<config>") -> LoadedConfig:
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{source}:{line}: YAML syntax error: {reason}"]) from None
    if node is None:
        raise ConfigError([f"{source}:1: (top level): the file is empty"])
    positions: dict[tuple, int] = {}
    _compose_positions(node, (), positions)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:  # e.g. a mapping used as a key: one line, at the problem's line
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}:{mark.line + 1 if mark else 1}: YAML error: {reason}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: (top level): expected a mapping of settings"])
    env_problems: list[tuple[tuple, str]] = []
    expanded: dict[tuple, str] = {}
    data = _expand_env(data, (), env_problems, expanded)
    if env_problems:
        raise ConfigError([f"{source}:{_line_for(p, positions)}: {_dotted(p)}: {m}" for p, m in env_problems])
    problems: list[tuple[int, str]] = []

    def problem(loc: tuple, msg: str) -> None:
        line = _line_for(loc, positions)
        problems.append((line, f"{source}:{line}: {_dotted(loc)}: {msg}"))

    agent = None
    try:
        agent = AgentConfig.model_validate(data)
    except ValidationError as err:
        problems.extend(_pydantic_problems(err, (), source, positions, expanded))

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
            problems.extend(_pydantic_problems(err, loc, source, positions, expanded))
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
