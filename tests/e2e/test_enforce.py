"""End-to-end, real kernel: sigkill beyond file paths (the enforce sensor). Each form stops its act with
nothing observable leaking, and a process the rule does not name is untouched:
  - exec of a binary (or a script) under a forbidden directory: killed before its first instruction (a
    copy of touch creates no file), by absolute or relative name;
  - `cat` opening the vault: killed before the read returns (nothing printed); another reader reads;
  - connect to a forbidden address and port: killed, and the listener accepts nothing (the cgroup hook
    refuses the connect before any packet); with `binaries: [curl]`, python connecting there is not."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import running_agent

pytestmark = pytest.mark.bpf


def _listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    return s


@pytest.fixture(scope="module")
def enforce_agent(tmp_path_factory):
    base = tmp_path_factory.mktemp("enforce")
    forbidden = base / "forbidden"
    forbidden.mkdir()
    shutil.copy("/usr/bin/touch", forbidden / "touch-copy")
    script = forbidden / "script.sh"
    script.write_text(f"#!/bin/sh\n/usr/bin/touch {base}/script-ran\n")
    script.chmod(0o755)
    vault = base / "vault"
    vault.mkdir()
    (vault / "secret").write_text("TOP-SECRET\n")
    imds, other, curl_only = _listener(), _listener(), _listener()
    pol = base / "pol"
    pol.mkdir()
    (pol / "enforce.yaml").write_text(f"""
name: enforce-test
rules:
  - name: no-exec-here
    match: {{types: [process_exec], binaries: ["{forbidden}/*"]}}
    action: sigkill
  - name: cat-vault
    match: {{binaries: [cat], paths: ["{vault}/"], operations: [open_read]}}
    action: sigkill
  - name: imds
    match: {{types: [network_connect], cidrs: [127.0.0.1/32], ports: [{imds.getsockname()[1]}]}}
    action: sigkill
  - name: curl-only
    match: {{types: [network_connect], cidrs: [127.0.0.0/8], ports: [{curl_only.getsockname()[1]}], binaries: [curl]}}
    action: sigkill
""")
    for running in running_agent(base, """  process: {poll_interval: 0.05}
  enforce: {poll_interval: 0.05}""", f'policies: {{library: false, paths: ["{pol}"]}}'):
        running.base, running.forbidden, running.vault = base, forbidden, vault
        running.imds, running.other, running.curl_only = imds, other, curl_only
        yield running
    for s in (imds, other, curl_only):
        s.close()


def _kill_of(agent, rule):
    return agent.wait_for(lambda e: e["type"] == "policy_action" and e["policy"]["policy"] == "enforce-test"
                          and e["policy"]["rule"] == rule, what=f"the {rule} kill")


def test_exec_under_a_forbidden_directory_runs_no_instruction(enforce_agent):
    a = enforce_agent
    marker = a.base / "by-absolute"
    p = subprocess.run([str(a.forbidden / "touch-copy"), str(marker)], capture_output=True)
    assert p.returncode == -9 and not marker.exists()
    rel = subprocess.run(["./touch-copy", str(a.base / "by-relative")], cwd=a.forbidden, capture_output=True)
    assert rel.returncode == -9 and not (a.base / "by-relative").exists()
    sh = subprocess.run([str(a.forbidden / "script.sh")], capture_output=True)  # the image is /bin/sh's
    assert sh.returncode == -9 and not (a.base / "script-ran").exists()
    sh_rel = subprocess.run(["./script.sh"], cwd=a.forbidden, capture_output=True)  # relative, under the cwd
    assert sh_rel.returncode == -9 and not (a.base / "script-ran").exists()
    ok = subprocess.run(["/usr/bin/touch", str(a.base / "allowed")], capture_output=True)
    assert ok.returncode == 0 and (a.base / "allowed").exists()  # the same program elsewhere is untouched
    kills = _kill_of(a, "no-exec-here")
    pa = kills[0]
    assert str(a.forbidden) in pa["policy"]["reason"] or "touch-copy" in pa["policy"]["reason"]
    assert pa["policy"]["action"] == "sigkill" and pa["policy"]["enforced"] is True and pa["severity"] == "high"
    time.sleep(0.5)
    assert len(_kill_of(a, "no-exec-here")) == 4


def test_cat_is_killed_before_reading_the_vault_and_others_read(enforce_agent):
    a = enforce_agent
    secret = a.vault / "secret"
    cat = subprocess.run(["/bin/cat", str(secret)], capture_output=True)
    assert cat.returncode == -9 and cat.stdout == b""
    head = subprocess.run(["/usr/bin/head", str(secret)], capture_output=True, check=True)
    assert head.stdout == b"TOP-SECRET\n"
    py = subprocess.run([sys.executable, "-c", f"print(open('{secret}').read(), end='')"], capture_output=True,
                        check=True)
    assert py.stdout == b"TOP-SECRET\n"
    pa = _kill_of(a, "cat-vault")[0]
    assert pa["file"]["path"] == str(secret) and pa["policy"]["enforced"] is True
    assert pa["process"]["binary"] == "/bin/cat"


CONNECT = "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print('connected')"


def _accepted(listener: socket.socket) -> bool:
    time.sleep(0.3)
    try:
        c, _ = listener.accept()
    except BlockingIOError:
        return False
    c.close()
    return True


def test_connect_to_a_forbidden_destination_is_killed_and_nothing_is_accepted(enforce_agent):
    a = enforce_agent
    port = a.imds.getsockname()[1]
    p = subprocess.run([sys.executable, "-c", CONNECT, str(port)], capture_output=True)
    assert p.returncode == -9 and b"connected" not in p.stdout
    assert not _accepted(a.imds)
    ok = subprocess.run([sys.executable, "-c", CONNECT, str(a.other.getsockname()[1])], capture_output=True)
    assert ok.returncode == 0 and b"connected" in ok.stdout and _accepted(a.other)
    pa = _kill_of(a, "imds")[0]
    assert pa["network"]["destination_ip"] == "127.0.0.1" and pa["network"]["destination_port"] == port
    assert pa["policy"]["enforced"] is True


def test_connect_rule_with_binaries_kills_only_those(enforce_agent):
    a = enforce_agent
    port = a.curl_only.getsockname()[1]
    py = subprocess.run([sys.executable, "-c", CONNECT, str(port)], capture_output=True)
    assert py.returncode == 0 and _accepted(a.curl_only)  # python is not curl
    curl = subprocess.run(["/usr/bin/curl", "-s", "-m", "5", f"http://127.0.0.1:{port}/"], capture_output=True)
    assert curl.returncode == -9
    assert not _accepted(a.curl_only)
    assert _kill_of(a, "curl-only")[0]["process"]["binary"] == "/usr/bin/curl"
