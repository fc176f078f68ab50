"""`siemhub validate -c FILE`: in-process through click's CliRunner, and as the installed command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from siemhub.collector.cli import main

GOOD = """\
sensors:
  process: {}
exporters:
  out: {type: file, path: events.jsonl, format: native}
routes:
  - {name: everything, to: [out]}
"""

# name -> (config text, line of the problem, start of the reason after `file:line: `)
BROKEN = {
    "yaml_syntax": (GOOD.replace("format: native}", "format: native"), 5, "YAML syntax error: "),
    "unknown_key": (GOOD + "colour: red\n", 7, "colour: unknown field"),
    "missing_path": (GOOD.replace(" path: events.jsonl,", ""), 4, "exporters.out.path: Field required"),
    "unknown_type": (GOOD.replace("type: file", "type: pigeon"), 4,
                     "exporters.out.type: unknown exporter type 'pigeon'"),
    "route_to_missing_exporter": (GOOD.replace("to: [out]", "to: [archive]"), 6,
                                  "routes[0].to[0]: unknown exporter 'archive'"),
}

SIEMHUB = shutil.which("siemhub", path=os.path.dirname(sys.executable))


def run_clirunner(path: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["validate", "-c", path])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_subprocess(path: str) -> tuple[int, str, str]:
    assert SIEMHUB, f"no siemhub command next to {sys.executable}"
    p = subprocess.run([SIEMHUB, "validate", "-c", path], capture_output=True, text=True, timeout=30,
                       cwd=os.path.dirname(path))
    return p.returncode, p.stdout, p.stderr


RUNNERS = {"clirunner": run_clirunner, "subprocess": run_subprocess}


@pytest.mark.parametrize("runner", list(RUNNERS))
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_config_one_line_and_exit_2(tmp_path, runner, case):
    text, line, reason = BROKEN[case]
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    code, out, err = RUNNERS[runner](str(path))
    assert code == 2, (out, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{path}:{line}: {reason}"), lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_good_config_prints_ok_and_exits_0(tmp_path, runner):
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD)
    code, out, err = RUNNERS[runner](str(path))
    assert code == 0, err
    assert out == f"{path}: OK (1 exporters, 1 routes, sensors: process)\n"
    assert err == ""


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_missing_file_is_reported_not_a_traceback(tmp_path, runner):
    path = tmp_path / "absent.yaml"
    code, out, err = RUNNERS[runner](str(path))
    assert code == 2
    assert err.splitlines() == [f"{path}:0: cannot read: No such file or directory"]


def test_secret_from_environment_not_printed(tmp_path, monkeypatch):
    secret = "tok-9f8e7d6c5b4a"
    monkeypatch.setenv("SIEMHUB_T_CLI_SECRET", secret)
    path = tmp_path / "agent.yaml"
    path.write_text(GOOD.replace("format: native}", "format: native, fsync: \"${SIEMHUB_T_CLI_SECRET}\"}"))
    code, out, err = run_clirunner(str(path))
    assert code == 2
    assert err.startswith(f"{path}:4: exporters.out.fsync: ")
    assert secret not in out + err
