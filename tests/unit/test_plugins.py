"""Sensors and exporters are plugins: a toy sensor and a toy exporter, each one module in a throwaway
distribution (a dist-info with entry points, put on sys.path for the test), work end to end without
a line changed anywhere in siemhub: the config validates their sections with their own models
(errors with file, line and field), the policy engine hands the sensor its kernel settings through the
sensor's hook, and the agent runs the sensor and delivers its events through the exporter.
"""
from __future__ import annotations

import sys
import textwrap

import pytest

from siemhub.collector import config, policy
from siemhub.collector.agent import Agent
from siemhub.collector.config import ConfigError
from siemhub.collector.core.kernel_settings import KernelFilters
from siemhub.collector.sensors import load_sensor_class, sensor_types
from siemhub.exporters.base import load_exporter_class

TOY_SENSOR = '''
"""A sensor in its own module: settings, hook and events; nothing else in siemhub names it."""
from pydantic import Field

from siemhub.collector.core.event import SCHEMA_VERSION, Event, Process
from siemhub.collector.core.settings import Strict
from siemhub.collector.sensors import Sensor


class ToySensorConfig(Strict):
    events: int = Field(5, ge=1, description="events to emit, then stay quiet")
    ignore: list[str] = []


class ToySensor(Sensor):
    name = "toy"
    config_model = ToySensorConfig
    poll_interval = 0.01

    def __init__(self, config, ctx):
        self.config, self.ctx, self.sent, self.ignored = config, ctx, 0, []

    def load(self):
        pass

    def kernel_settings(self, config, k):
        return (sorted({*config.ignore, *k.process_binaries}),)

    def apply_kernel_settings(self, ignored):
        self.ignored = ignored

    def poll(self, timeout):
        if self.sent >= self.config.events:
            return 0
        self.sent += 1
        self.ctx.emit([Event(id=self.ctx.ids.new(), time=self.ctx.clock.now(), type="process_exec",
                             schema_version=SCHEMA_VERSION, severity="info", node=self.ctx.node,
                             process=Process(exec_id=f"toy-{self.sent}", pid=self.sent, binary="/toy"))])
        return 1

    def counters(self):
        return {"sent": self.sent}

    def unload(self):
        pass
'''

TOY_EXPORTER = '''
"""An exporter in its own module: config model, pure encode, I/O in send."""
from siemhub.exporters.base import DONE, Exporter, ExporterConfig

RECEIVED = []


class ToyConfig(ExporterConfig):
    label: str = "toy"


class ToyExporter(Exporter):
    config_model = ToyConfig

    def encode(self, batch):
        return [(self.config.label, e.process.exec_id) for e in batch]

    def send(self, payload):
        RECEIVED.extend(payload)
        return DONE
'''


@pytest.fixture
def toy_dist(tmp_path, monkeypatch):
    """A distribution that exists only for this test: two modules and their entry points."""
    (tmp_path / "toy_sensor.py").write_text(TOY_SENSOR)
    (tmp_path / "toy_exporter.py").write_text(TOY_EXPORTER)
    info = tmp_path / "siemhub_toys-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: siemhub-toys\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [siemhub.sensors]
        toy = toy_sensor:ToySensor

        [siemhub.exporters]
        toy = toy_exporter:ToyExporter
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in ("toy_sensor", "toy_exporter"):
        sys.modules.pop(mod, None)


CONFIG = """\
sensors:
  toy:
    events: 5
    ignore: [/usr/bin/yes]
exporters:
  out: {type: toy, label: demo, batch: {max_events: 10, max_wait: 0.05}}
routes:
  - name: all
    to: [out]
metrics: {enabled: false}
status_interval: 0
"""


def test_toy_plugins_are_found_by_their_entry_points(toy_dist):
    assert "toy" in sensor_types()
    assert load_sensor_class("toy").__module__ == "toy_sensor"
    assert load_exporter_class("toy").__module__ == "toy_exporter"


def test_toy_sensor_section_is_validated_by_its_own_model(toy_dist):
    cfg = config.parse(CONFIG, "agent.yaml")
    assert cfg.agent.sensors.toy.events == 5 and cfg.agent.sensors.enabled() == ["toy"]
    with pytest.raises(ConfigError) as err:
        config.parse(CONFIG.replace("events: 5", "events: 0").replace("ignore:", "ignroe:"), "agent.yaml")
    assert err.value.problems == ["agent.yaml:3: sensors.toy.events: Input should be greater than or equal to 1",
                                  "agent.yaml:4: sensors.toy.ignroe: unknown field"]


def test_unknown_sensor_names_the_known_ones_at_its_line(toy_dist):
    with pytest.raises(ConfigError) as err:
        config.parse(CONFIG.replace("  toy:", "  tyo:"), "agent.yaml")
    (line,) = err.value.problems
    assert line.startswith("agent.yaml:2: sensors.tyo: unknown sensor 'tyo' (known: ")
    assert "toy" in line and "process" in line


def test_policy_engine_hands_the_toy_sensor_its_settings_through_the_hook(toy_dist):
    cfg = config.parse(CONFIG, "agent.yaml")
    sensor = load_sensor_class("toy")(cfg.agent.sensors.toy, ctx=None)
    engine = policy.PolicyEngine(block_support=lambda: (False, "test"))
    engine.kernel = KernelFilters(process_binaries=["/usr/bin/nc"])
    policy.install([sensor], cfg.agent, engine)
    assert sensor.ignored == ["/usr/bin/nc", "/usr/bin/yes"]


def test_agent_runs_the_toy_sensor_into_the_toy_exporter(toy_dist):
    cfg = config.parse(CONFIG, "agent.yaml")
    agent = Agent(cfg)
    counts = agent.run(duration=1.0)
    received = sys.modules["toy_exporter"].RECEIVED
    assert received == [("demo", f"toy-{i}") for i in range(1, 6)]
    assert counts["out"]["sent"] == 5
    assert agent.status_event().status.counters["toy_sent"] == 5
