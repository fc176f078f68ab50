"""The enforce sensor's user-space half: policy rules -> kernel tables (stand-in maps), and kill
messages -> policy_action events (enforced: true) named by their process."""

from __future__ import annotations

import ipaddress
import os
import struct
from types import SimpleNamespace

import pytest

from siemhub.collector import policy
from siemhub.collector.core.enforce_rules import EnforceRule
from siemhub.collector.sensors import Sensors, enforce
from siemhub.collector.sensors.enforce import EnforceSensorConfig
from siemhub.collector.sensors import messages as m
from siemhub.collector.sensors.process import SensorContext
from tests.unit.kmsg import Harness, exec_msg

S = 10**9


class FakeMap(dict):
    def update(self, k, v):  # noqa: D401 - the kernel.maps.Map call
        self[bytes(k)] = bytes(v)

    def clear(self):
        dict.clear(self)


class Loaded:
    def __init__(self):
        self.maps = {n: FakeMap() for n in enforce._MAPS}


@pytest.fixture
def h(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    h.enf = enforce.EnforceSensor(EnforceSensorConfig(settle=0, pending={"max_wait": 0}), SensorContext(
        h.node, h.clock, h.ids, h.metrics, h.cache, h.emitted.extend))
    h.enf._bpf = Loaded()
    monkeypatch.setattr(enforce.EnforceSensor, "_scan_procfs", lambda self, a, b: None)
    return h


def masks(h):
    return struct.unpack("<8Q", h.enf._bpf.maps["rule_masks"][(0).to_bytes(4, "little")])


def test_rules_become_bits_in_the_kernel_tables(h, tmp_path):
    (tmp_path / "bin").mkdir()
    vault = tmp_path / "vault"
    vault.mkdir()
    rules = [
        EnforceRule("p", "exec", "exec", binaries=[f"{tmp_path}/bin/*", "nc"]),
        EnforceRule("p", "vault", "open", binaries=["cat"], paths=[f"{vault}/"], read=True),
        EnforceRule("p", "imds", "connect", cidrs=["169.254.0.0/16", "169.254.169.254/32"], ports=[80]),
    ]
    h.enf.set_rules(rules)
    exec_, read, write, conn, any_cidr, any_port, any_binary, on = masks(h)
    assert (exec_, read, write, conn) == (0b001, 0b010, 0, 0b100)
    assert (any_cidr, any_port, any_binary, on) == (0, 0, 0b100, 1)
    maps = h.enf._bpf.maps
    st = os.stat(tmp_path / "bin")
    key = enforce._INO_KEY.pack(st.st_ino, enforce._kdev(st.st_dev))
    assert struct.unpack("<Q", maps["bin_ino"][key][:8])[0] == 0b001
    assert maps["name_rules"][b"nc".ljust(16, b"\0")] == (0b001).to_bytes(8, "little")
    assert maps["name_rules"][b"cat".ljust(16, b"\0")] == (0b010).to_bytes(8, "little")
    prefix = f"{tmp_path}/bin/".encode()
    assert (len(prefix) * 8).to_bytes(4, "little") + prefix.ljust(256, b"\0") in maps["path_rules"]
    # the /32 inside the /16: the LPM's longest match carries both rules' bits (same rule here)
    k32 = (128).to_bytes(4, "little") + ipaddress.ip_address("::ffff:169.254.169.254").packed
    assert maps["conn_cidrs"][k32] == (0b100).to_bytes(8, "little")
    assert maps["conn_ports"][(80).to_bytes(4, "little")] == (0b100).to_bytes(8, "little")


def test_lpm_union_gives_the_longest_match_every_containing_rule():
    keys = {(40, b"/tmp/"): 1, (72, b"/tmp/sub/"): 2, (88, b"/tmp/sub/x\0"): 4}
    out = enforce._lpm_union(keys, lambda a, b: a[0] < b[0] and b[1].startswith(a[1]))
    assert out == {(40, b"/tmp/"): 1, (72, b"/tmp/sub/"): 3, (88, b"/tmp/sub/x\0"): 7}
    a = (104, ipaddress.ip_address("::ffff:10.0.0.0").packed)
    b = (120, ipaddress.ip_address("::ffff:10.1.2.0").packed)
    assert enforce._cidr_contains(a, b) and not enforce._cidr_contains(b, a)


def test_too_many_rules_or_a_missing_path_is_refused_before_any_change(h, tmp_path):
    with pytest.raises(ValueError, match="at most 64"):
        h.enf.check_rules([EnforceRule("p", f"r{i}", "exec", binaries=["nc"]) for i in range(65)])
    with pytest.raises(ValueError, match="does not exist"):
        h.enf.check_rules([EnforceRule("p", "r", "open", binaries=["cat"], paths=[f"{tmp_path}/gone/"])])


def _kill_msg(kind, rules, *, pid=4242, entry=0, depth=0, family=0, port=0, acc=0, addr=b"", names=b""):
    return m.ENFORCE.pack(m.MSG_ENFORCE, m.ENFORCE.size, 6 * S, pid, pid, 3 * S, rules, entry, kind, depth, family,
                          port, acc, 0, addr.ljust(16, b"\0"), names.ljust(m.ENF_NAMES, b"\0"))


def test_kill_messages_become_enforced_policy_actions(h, tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    h.enf.set_rules([EnforceRule("p", "exec", "exec", binaries=["nc"]),
                     EnforceRule("p", "vault", "open", binaries=["cat"], paths=[f"{vault}/"], read=True,
                                 severity="critical", tags=["vault"]),
                     EnforceRule("p", "imds", "connect", cidrs=["169.254.169.254/32"])])
    h.decode(exec_msg(4242, ppid=1, ktime=3 * S, start=3 * S, filename=b"/bin/cat", args=[b"cat"]))
    names = b"key".ljust(32, b"\0") + b"db".ljust(32, b"\0")
    h.enf.decode([_kill_msg(m.ENF_OPEN, 0b010, depth=2, acc=1, names=names),
                  _kill_msg(m.ENF_CONNECT, 0b100, family=2, port=80, addr=bytes([169, 254, 169, 254])),
                  _kill_msg(m.ENF_EXEC, 0b001, names=b"/usr/bin/nc")])
    opened, conn, ex = h.enf.join.ready(force=True)
    assert opened.type == "policy_action" and opened.policy.enforced and opened.policy.rule == "vault"
    assert opened.file.path == f"{vault}/db/key" and opened.file.flags == ["O_RDONLY"]
    assert opened.severity == "critical" and opened.tags == ["policy:p", "vault"]
    assert opened.process.binary == "/bin/cat"
    assert (conn.network.destination_ip, conn.network.destination_port) == ("169.254.169.254", 80)
    assert "exec of /usr/bin/nc" in ex.policy.reason
    assert h.enf.kills == 3
    h.enf.decode([_kill_msg(m.ENF_EXEC, 1 << 9)])  # a rule the table does not have
    assert h.enf.decode_errors == 1


def test_the_policy_engine_hands_its_rules_over_through_the_sensor_hooks(h, tmp_path, caplog):
    """policy.install never names the sensor: KernelFilters.enforce reaches it through kernel_settings /
    check_kernel_settings / apply_kernel_settings; a reload the sensor refuses leaves the old rules."""
    def engine(text):
        (tmp_path / "p.yaml").write_text(text)
        return policy.PolicyEngine(policy.load_files([str(tmp_path / "p.yaml")]), block_support=lambda: (False, "x"))

    cfg = SimpleNamespace(sensors=Sensors(enforce=EnforceSensorConfig()))
    eng = engine("name: k\nrules:\n  - name: nc\n    match: {types: [process_exec], binaries: [nc]}\n"
                 "    action: sigkill\n")
    policy.install([h.enf], cfg, eng)
    assert [r.rule for r in h.enf.rules] == ["nc"] and masks(h)[0] == 1
    assert h.enf.kernel_settings(cfg.sensors.enforce, eng.kernel) == (eng.kernel.enforce,)

    (tmp_path / "vault").mkdir()
    bad = engine(f"name: k\nrules:\n  - name: v\n    match: {{binaries: [cat], paths: ['{tmp_path}/vault/']}}\n"
                 "    action: sigkill\n")
    (tmp_path / "vault").rmdir()  # gone between the engine's load and the install
    with pytest.raises(ValueError, match="sensor enforce: .*does not exist"):
        policy.install([h.enf], cfg, bad)
    assert [r.rule for r in h.enf.rules] == ["nc"] and masks(h)[0] == 1

    with caplog.at_level("WARNING", logger="siemhub.policy"):
        policy.install([], cfg, eng)  # no enforce sensor running: said, not silently dropped
    assert "need the enforce sensor" in caplog.text
