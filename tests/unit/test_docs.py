"""The documentation matches the code: no dead relative links in README.md and docs/, every key in the
config tables of docs/exporters/<type>.md, docs/delivery.md and docs/configuration.md is accepted by
the config model it documents, and every YAML config snippet in README.md and docs/exporters/ passes
validation. Pages added later (docs/exporters/splunk.md, ...) are checked the same way.
"""
from __future__ import annotations

import os
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from siemhub.collector.config import AgentConfig, ConfigError, parse
from siemhub.collector.sensors import load_sensor_class
from siemhub.exporters.base import ExporterConfig, load_exporter_class

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
EXPORTER_PAGES = sorted((ROOT / "docs" / "exporters").glob("*.md"))
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
ROW_KEY = re.compile(r"^\|\s*`([^`]+)`\s*\|")
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("page", DOCS, ids=_rel)
def test_relative_links_point_at_files_that_exist(page):
    dead = []
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not in code blocks
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor in the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            dead.append(target)
    assert dead == [], f"{_rel(page)}: dead links"


def _field(model: type[BaseModel], name: str):
    for fname, f in model.model_fields.items():
        if (f.alias or fname) == name:
            return f
    return None


def _models_in(annotation) -> list[type[BaseModel]]:
    """The models an annotation holds: `M`, `M | None`, `list[M]`..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def accepts(model: type[BaseModel], key: str) -> bool:
    """Whether the dotted `key` (`tls.ca_file`, `routes[].match.types`) names a field of `model`."""
    parts = key.replace("[]", "").split(".")
    current: list[type[BaseModel]] = [model]
    for i, part in enumerate(parts):
        found = [f for m in current if (f := _field(m, part)) is not None]
        if not found:
            return False
        nested = [m for f in found for m in _models_in(f.annotation)]
        if not nested:
            # a leaf; only a free-form mapping (`properties`, `node.labels`) may have keys below it
            return i == len(parts) - 1 or any(typing.get_origin(f.annotation) is dict for f in found)
        current = nested
    return True


def table_keys(page: Path) -> list[str]:
    """The first key of each row of the page's config tables: the tables whose header's first column
    is `key` (other tables, metrics or guarantees, are not about settings)."""
    keys, in_config_table, previous = [], False, ""
    for line in page.read_text().splitlines():
        if not line.startswith("|"):
            in_config_table = False
        elif re.match(r"^\|\s*-", line):  # the separator row: the line before it was the header
            in_config_table = re.match(r"^\|\s*key\s*\|", previous) is not None
        elif in_config_table and (m := ROW_KEY.match(line)):
            keys.append(m.group(1))
        previous = line
    return keys


def test_the_key_check_rejects_what_models_do_not_accept():
    from siemhub.exporters.kafka import KafkaConfig

    assert accepts(KafkaConfig, "security.tls.ca_file") and accepts(KafkaConfig, "properties.linger.ms")
    assert not accepts(KafkaConfig, "security.tls.ca_certs") and not accepts(KafkaConfig, "topic.name")
    assert accepts(AgentConfig, "routes[].match.types") and not accepts(AgentConfig, "routes[].match.type")


def test_there_is_a_page_per_exporter_and_each_has_a_table():
    from siemhub.exporters.base import exporter_types

    pages = {p.stem for p in EXPORTER_PAGES}
    assert set(exporter_types()) <= pages | {"toy"}
    for page in EXPORTER_PAGES:
        assert table_keys(page), f"{_rel(page)}: no config table"


@pytest.mark.parametrize("page", EXPORTER_PAGES, ids=_rel)
def test_exporter_page_keys_are_accepted_by_its_config_model(page):
    model = load_exporter_class(page.stem).config_model  # the page is named after the exporter type
    wrong = [k for k in table_keys(page) if not accepts(model, k)]
    assert wrong == [], f"{_rel(page)}: keys {model.__name__} does not accept"


def test_delivery_page_keys_are_accepted_by_every_exporter():
    wrong = [k for k in table_keys(ROOT / "docs" / "delivery.md") if not accepts(ExporterConfig, k)]
    assert wrong == []


def test_configuration_page_keys_are_accepted_by_the_agent_config():
    wrong = []
    for key in table_keys(ROOT / "docs" / "configuration.md"):
        if key.startswith("sensors."):
            _, name, *rest = key.split(".")
            model = load_sensor_class(name).config_model
            ok = not rest or accepts(model, ".".join(rest))
        else:
            ok = accepts(AgentConfig, key)
        if not ok:
            wrong.append(key)
    assert wrong == []


def _is_config(block: str) -> bool:
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return True  # a broken snippet is checked (and fails) below
    return isinstance(data, dict) and ("exporters" in data or "sensors" in data)


def _snippets() -> list[tuple[str, str]]:
    """The YAML blocks of the README and the docs that are configs (or a part of one: an exporter or a
    sensor section); other YAML (Kubernetes objects, Prometheus rules) is not siemhub's to check."""
    out = []
    for page in [ROOT / "README.md", *EXPORTER_PAGES, ROOT / "docs" / "configuration.md"]:
        out += [(f"{_rel(page)}#{i}", block) for i, block in enumerate(YAML_BLOCK.findall(page.read_text()))
                if _is_config(block)]
    return out


@pytest.mark.parametrize("where,block", _snippets(), ids=[w for w, _ in _snippets()])
def test_config_snippets_validate(where, block, monkeypatch):
    data = yaml.safe_load(block)
    monkeypatch.setenv("ES_API_KEY", "id:key")
    # every other ${NAME} a snippet references (secrets of the exporters' pages) gets a stand-in value
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", block):
        if name not in os.environ:
            monkeypatch.setenv(name, "secret")
    # a fragment (an exporter or a sensor section) is completed into a whole config
    full = dict(data)
    full.setdefault("exporters", {"out": {"type": "stdout"}})
    full.setdefault("routes", [{"name": "all", "to": list(full["exporters"])}])
    try:
        parse(yaml.safe_dump(full), where)
    except ConfigError as exc:
        pytest.fail(f"{where}: {exc}")
