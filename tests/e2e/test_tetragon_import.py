"""End-to-end, real kernel: a Tetragon FIM TracingPolicy converted by `siemhub policies import-tetragon`
fires in a running agent: a read of the watched file gives the policy's policy_action; a read of a file
beside it, and a read where the Tetragon selector asked for writes (MAY_WRITE), do not."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import running_agent

pytestmark = pytest.mark.bpf

TRACING_POLICY = """
apiVersion: cilium.io/v1alpha1
kind: TracingPolicy
metadata:
  name: "fim-test-secrets"
spec:
  kprobes:
  - call: "security_file_permission"
    syscall: false
    return: true
    args:
    - index: 0
      type: "file"
    - index: 1
      type: "int"
    selectors:
    - matchArgs:
      - index: 0
        operator: "Prefix"
        values:
        - "{base}/secrets/"
      - index: 1
        operator: "Equal"
        values:
        - "4"
    - matchArgs:
      - index: 0
        operator: "Equal"
        values:
        - "{base}/config"
      - index: 1
        operator: "Equal"
        values:
        - "2"
  - call: "security_mmap_file"
    syscall: false
    args:
    - index: 0
      type: "file"
"""


@pytest.fixture(scope="module")
def fim_agent(tmp_path_factory):
    base = tmp_path_factory.mktemp("tetragon-fim")
    (base / "secrets").mkdir()
    (base / "secrets" / "db-password").write_text("hunter2\n")
    (base / "config").write_text("a=1\n")
    (base / "public").write_text("hello\n")
    tp = base / "tracingpolicy.yaml"
    tp.write_text(TRACING_POLICY.format(base=base))
    out = base / "converted"
    siemhub = Path(sys.executable).with_name("siemhub")
    r = subprocess.run([str(siemhub), "policies", "import-tetragon", str(tp), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "security_mmap_file: not carried over" in r.stderr
    assert (out / "fim-test-secrets.yaml").exists()
    for running in running_agent(base, f"""  process: {{poll_interval: 0.05}}
  file: {{poll_interval: 0.05, watch: ["{base}/public"]}}""", f'policies: {{library: false, paths: ["{out}"]}}'):
        running.base = base
        yield running


def _actions(agent):
    return [e for e in agent.events() if e["type"] == "policy_action" and e["policy"]["policy"] == "fim-test-secrets"]


def test_converted_fim_policy_fires_on_a_read(fim_agent):
    base = fim_agent.base
    cat = subprocess.run(["/bin/cat", str(base / "secrets" / "db-password")], capture_output=True, check=True)
    assert cat.stdout == b"hunter2\n"
    pa = fim_agent.wait_for(lambda e: e in _actions(fim_agent), what="the converted policy's action")[0]
    assert pa["policy"]["rule"] == "security_file_permission-0" and pa["policy"]["action"] == "post"
    assert pa["file"]["path"] == str(base / "secrets" / "db-password")
    assert pa["process"]["binary"] == "/bin/cat" and pa["process"]["pid"] > 0


def test_converted_fim_policy_keeps_its_selectors(fim_agent):
    base = fim_agent.base
    before = len(_actions(fim_agent))
    subprocess.run(["/bin/cat", str(base / "public")], capture_output=True, check=True)  # watched, not selected
    subprocess.run(["/bin/cat", str(base / "config")], capture_output=True, check=True)  # a read: MAY_WRITE only
    fim_agent.wait_for(lambda e: e["type"] == "file_access" and e["file"]["path"] == str(base / "public"),
                       what="the public file's read")
    time.sleep(0.5)
    assert len(_actions(fim_agent)) == before
    with open(base / "config", "a") as f:  # a write: the second selector
        f.write("b=2\n")
    pa = fim_agent.wait_for(lambda e: e in _actions(fim_agent) and e["policy"]["rule"] == "security_file_permission-1",
                            what="the write selector's action")[0]
    assert pa["file"]["path"] == str(base / "config")
