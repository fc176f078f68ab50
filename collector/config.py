"""Agent configuration: one YAML file, validated on load.

Errors name the file, the line and the field (`agent.yaml:7: exporters.out.path: Field required`).
Unknown keys are rejected everywhere. `${NAME}` (or `${NAME:-default}`) in a string is replaced by the
environment variable NAME, so secrets stay out of the file; their values are never logged or echoed.
Relative paths are relative to the working directory of the agent.

The plugins validate their own sections: `sensors.<name>` with the sensor's `config_model`, and
`exporters.<name>` with the exporter's, both found by name through entry points. The YAML with
positions, the `${...}` references and the shared models live in collector/core/.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from siemhub.collector.core import secrets, yamlpos
from siemhub.collector.core.event import EVENT_TYPES, SEVERITIES
from siemhub.collector.core.settings import Strict
from siemhub.collector.core.yamlpos import ConfigError
from siemhub.collector.otlp_metrics import OtlpMetricsConfig  # metrics.otlp (issue 15)
from siemhub.collector.policy import load_policy_set
from siemhub.collector.redact import RedactConfig
from siemhub.collector.sensors import Sensors, load_sensor_class
from siemhub.collector.sources.kafka import KafkaSourceConfig
from siemhub.exporters.base import Exporter, ExporterConfig, UnknownExporter, load_exporter_class


class NodeConfig(Strict):
    name: str = Field(default_factory=socket.gethostname)
    labels: dict[str, str] = {}
    cluster: str | None = Field(None, description="the cluster's name, on every event (node.cluster)")


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
    # siemhub's metrics pushed over OTLP too (collector/otlp_metrics.py), whether /metrics is on or not
    otlp: OtlpMetricsConfig | None = Field(None, description="push the same metrics to an OTLP collector")

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
    sensors: dict[str, Any] = Field({}, description="name -> that sensor's settings (its own config_model)")
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

    # Sensors, exporters and routes are checked even when other sections failed, so one run shows every problem.
    sensors = Sensors()
    raw_sensors = data.get("sensors")
    for name, raw in (raw_sensors.items() if isinstance(raw_sensors, dict) else ()):
        loc = ("sensors", name)
        if raw is None:  # `process:` with nothing after it: the sensor is off, as if absent
            continue
        try:
            sensor_cls = load_sensor_class(str(name))
        except LookupError as exc:
            problem(loc, str(exc))
            continue
        try:
            sensors[name] = sensor_cls.config_model.model_validate(raw)
        except ValidationError as err:
            problems.extend(yamlpos.pydantic_problems(err, loc, source, positions, expanded))
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
    agent.sensors = sensors
    policies = None
    if agent.policies is not None:
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
