"""Imports run one way: core <- kernel plumbing and shared services <- plugins (sensors, exporters,
formats, sources) <- the agent and CLI.

Every module of the package is read with ast (new modules are covered without touching this file),
and every `siemhub.*` import is checked against the layer of the importing module. A module that no
rule below names belongs to the agent layer, the top: a plugin cannot import it until someone decides
it belongs lower.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the package directories of the siemhub distribution (pyproject.toml, [tool.setuptools.package-dir])
PACKAGE_DIRS = {"collector": "siemhub.collector", "exporters": "siemhub.exporters", "bpf": "siemhub.bpf",
                "policies": "siemhub.policies", "dashboards": "siemhub.dashboards"}

CORE = ("siemhub.collector.core",)
KERNEL = ("siemhub.collector.kernel",)
# services sensors share (process cache, /proc, pending events, containers, capabilities, metrics),
# and the delivery pieces plugins may name: the settings models and the dead-letter record
SHARED = ("siemhub.collector.caps", "siemhub.collector.container", "siemhub.collector.metrics",
          "siemhub.collector.pending", "siemhub.collector.procfs", "siemhub.collector.process_cache",
          "siemhub.collector.redact", "siemhub.collector.delivery.settings", "siemhub.collector.delivery.deadletter",
          "siemhub.collector.delivery.diskqueue",
          # Kubernetes enrichment (collector/k8s/) serves the process cache as its pod resolver, like
          # collector/container.py, and the process sensor's config model names its `api` settings
          # (k8s/config.py): a sensor must be able to import it. It imports only core and container.
          "siemhub.collector.k8s",
          # /healthz and /readyz: the metrics endpoint serves them (health.py imports nothing of siemhub)
          "siemhub.collector.health")
SENSORS = ("siemhub.collector.sensors",)
SOURCES = ("siemhub.collector.sources",)
EXPORTERS = ("siemhub.exporters",)  # formats included
DATA = ("siemhub.bpf", "siemhub.policies")
# siemhub.dashboards is not data: its renderers read what the agent emits (the formats' field names,
# the shipped policy library for one detection search per policy) and only the CLI calls them, so they
# sit at the top with the agent and the CLI.

# layer -> what its modules may import (besides their own layer)
MAY_IMPORT = {
    "core": (),
    "kernel": CORE,
    "shared": CORE + KERNEL,
    "sensors": CORE + KERNEL + SHARED,
    "sources": CORE + SHARED,
    "exporters": CORE + SHARED,
    "data": CORE,
}
LAYERS = [("core", CORE), ("kernel", KERNEL), ("shared", SHARED), ("sensors", SENSORS), ("sources", SOURCES),
          ("exporters", EXPORTERS), ("data", DATA)]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_of(module: str) -> str:
    for layer, prefixes in LAYERS:
        if _within(module, prefixes):
            return layer
    return "agent"


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _resolved(node: ast.Import | ast.ImportFrom, module: str, path: Path, known: dict) -> list[tuple[int, str]]:
    """(line, module) of the siemhub imports of one statement; `from pkg import name` counts as
    pkg.name when that is a module (a submodule import), else as pkg."""
    if isinstance(node, ast.Import):
        return [(node.lineno, a.name) for a in node.names if a.name.startswith("siemhub")]
    if not node.module:
        return []
    base = node.module
    if node.level:  # relative: resolve against the importing module's package
        pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{node.module}"
    if not base.startswith("siemhub"):
        return []
    return [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base) for a in node.names]


def imports_of(path: Path, module: str, top_level_only: bool = False) -> list[tuple[int, str]]:
    """Every siemhub import of a module (anywhere in it, or only those run when it is imported: the
    top-level statements outside `if TYPE_CHECKING:`)."""
    known = modules()
    tree = ast.parse(path.read_text(), str(path))
    if top_level_only:
        nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    return [imp for n in nodes for imp in _resolved(n, module, path, known)]


def violations() -> list[str]:
    problems = []
    for module, path in modules().items():
        layer = layer_of(module)
        if layer == "agent":
            continue  # the top may import anything
        own = dict(LAYERS)[layer]
        allowed = own + MAY_IMPORT[layer]
        for line, target in imports_of(path, module):
            if not _within(target, allowed):
                rel = path.relative_to(ROOT)
                problems.append(f"{rel}:{line}: {module} ({layer}) imports {target} ({layer_of(target)})")
    return problems


def test_imports_run_one_way():
    assert violations() == []


def test_every_module_is_seen():
    found = modules()
    for name in ("siemhub.collector.core.event", "siemhub.collector.config", "siemhub.exporters.base",
                 "siemhub.collector.sensors.process", "siemhub.exporters.formats.ecs"):
        assert name in found
    assert layer_of("siemhub.collector.agent") == layer_of("siemhub.collector.cli") == "agent"
    assert layer_of("siemhub.collector.something_new") == "agent"  # new modules start at the top


@pytest.mark.parametrize("module,source,wrong", [
    ("siemhub.exporters.toy", "from siemhub.collector.agent import Pipeline\n", "siemhub.collector.agent"),
    ("siemhub.exporters.toy", "from siemhub.collector import config\n", "siemhub.collector.config"),
    ("siemhub.collector.sensors.toy", "import siemhub.collector.cli\n", "siemhub.collector.cli"),
    ("siemhub.collector.sensors.toy", "from siemhub.exporters.base import Exporter\n", "siemhub.exporters.base"),
    ("siemhub.collector.core.toy", "from siemhub.collector.sensors import Sensor\n", "siemhub.collector.sensors"),
    ("siemhub.collector.core.toy", "from siemhub.exporters import kafka\n", "siemhub.exporters.kafka"),
    ("siemhub.collector.sources.toy", "from siemhub.collector.policy import PolicyEngine\n", "siemhub.collector.policy"),
])
def test_the_check_catches_an_upward_import(tmp_path, module, source, wrong):
    """The rule itself: an exporter, sensor or source importing the agent layer, or the core importing a
    plugin, is reported."""
    path = tmp_path / "toy.py"
    path.write_text(source)
    (line, target), = imports_of(path, module)
    layer = layer_of(module)
    assert target == wrong
    assert not _within(target, dict(LAYERS)[layer] + MAY_IMPORT[layer])


def _module_level_graph() -> dict[str, set[str]]:
    known = modules()
    return {m: {t for _, t in imports_of(path, m, top_level_only=True) if t in known and t != m}
            for m, path in known.items()}


def test_no_import_cycles_at_module_level():
    """No cycle among the modules' top-level imports: no module needs a function-local import to load."""
    graph = _module_level_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


# The CLI imports the agent and the heavier sources only in the commands that need them, so that
# `siemhub validate` and `siemhub dashboards` start quickly; nothing else may import siemhub late.
LATE_IMPORTS_ALLOWED = ("siemhub.collector.cli",)


def test_no_function_local_imports_of_siemhub_modules():
    """A siemhub import inside a function is how an import cycle gets hidden: only the CLI may."""
    late = []
    for module, path in modules().items():
        if module in LATE_IMPORTS_ALLOWED:
            continue
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
                if getattr(node, "level", 0) or any(t.startswith("siemhub") for _, t in _resolved(node, module, path, modules())):
                    late.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert late == []
