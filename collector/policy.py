"""Policies: YAML files of rules that match canonical events and act on them (docs/policies.md).

A policy file holds one policy: `name`, `description` (optional), `enabled` and `rules`. A rule has `match` (and
optionally `except`) selectors and an `action`:

- `post`: raise the event's severity to the rule's and emit a `policy_action` event (rate-limited per
  rule when `rate_limit` is set; what the limit suppressed is counted);
- `notify`: add `tags` (routes match them) and emit a `policy_action` event;
- `ignore`: drop the event. Pushed down into the kernel where the sensor can filter (process binaries
  by exact path, network ports or CIDRs); otherwise dropped here, counted;
- `sigkill`: file paths become an enforce rule of the file sensor (SIGKILL from the kernel before the
  syscall returns); with binaries, on exec and on connect, a rule of the enforce sensor
  (collector/core/enforce_rules.py). What the kernel cannot enforce is rejected at load;
- `block`: needs BPF LSM; where the kernel refuses it (lockdown) a file-path rule falls back to sigkill.

Every matching rule tags the event `policy:<name>`; severity is raised, never lowered.

The engine runs in Pipeline.emit, after redaction. Rules are indexed by event type, and each compiled
rule is a tuple of checks ordered cheapest first, so an event that matches nothing costs a dict lookup
and a few set lookups (docs/benchmarks.md, "Policies", for the measured cost).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from siemhub.collector.core import enforce_rules, yamlpos  # enforce_rules: sigkill beyond file paths (issue 18)
from siemhub.collector.core.event import (EVENT_TYPES, SCHEMA_VERSION, SEVERITIES, SEVERITY_RANK, Event, EventIds,
                                     PolicyAction, Process)
from siemhub.collector.core.kernel_settings import FILE_OPERATIONS, FileEnforceRule, KernelFilters
from siemhub.collector.core.settings import Strict, check_cidrs, check_ports
from siemhub.collector.core.yamlpos import ConfigError
from siemhub.collector.k8s.selectors import LabelSelector, WorkloadSelector, label_predicate, workload_predicate
from siemhub.collector.kernel.build import block_support as kernel_block_support

log = logging.getLogger("siemhub.policy")

ACTIONS = ("post", "notify", "ignore", "sigkill", "block")
NETWORK_TYPES = ("network_connect", "network_accept", "network_close", "network_flow", "dns_query")
PROCESS_TYPES = ("process_exec", "process_exit")
PRIVILEGE_OPERATIONS = ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
                        "setfsgid", "capset", "ptrace", "module_load", "bpf_load", "mount", "memfd_exec")
# operations a rule can name on file_access events: the sensor's operations, and open split by mode
FILE_RULE_OPERATIONS = ("open", "write", "unlink", "rename", "chmod", "chown", "truncate", "open_read", "open_write")
# event types a rule without `types` (and without selectors that imply one) applies to
_REAL_TYPES = tuple(t for t in EVENT_TYPES if t not in ("agent_status", "policy_action"))
_GLOB = re.compile(r"[*?\[]")


# --- the file format ------------------------------------------------------------------------------


class _Strict(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Selector(_Strict):
    """All the selectors given must match (AND); each one matches when any of its values does (OR)."""

    types: list[Literal[_REAL_TYPES]] | None = None  # type: ignore[valid-type]
    binaries: list[str] | None = Field(None, description="executable: exact path, glob ('/tmp/*'), or a "
                                       "name without '/' matched against the basename ('bash', 'xmrig*')")
    follow_children: bool = Field(False, description="binaries: the process or any ancestor matches")
    parent_binaries: list[str] | None = Field(None, description="as binaries, on the parent process")
    args: list[str] | None = Field(None, description="substrings of the command line (args joined by spaces)")
    args_regex: list[str] | None = Field(None, description="regexes searched in the command line")
    paths: list[str] | None = Field(None, description="file paths: exact, directory prefix ending in '/', or glob")
    operations: list[str] | None = Field(None, description="file or privilege operations")
    ports: list[int] | None = Field(None, description="network destination ports")
    cidrs: list[str] | None = Field(None, description="network destination addresses (CIDR or address)")
    dns_names: list[str] | None = Field(None, description="dns_query names: the name or any name below it "
                                        "('example.com' matches example.com and a.example.com), any case")
    uids: list[int] | None = Field(None, description="the process' real uid")
    old_uids: list[int] | None = Field(None, description="privilege_change: uid before")
    new_uids: list[int] | None = Field(None, description="privilege_change: uid after")
    namespaces: list[str] | None = Field(None, description="glob patterns on process.pod.namespace")
    pod_labels: dict[str, str] | LabelSelector | None = Field(
        None, description="labels the pod must have (all of them), or a Kubernetes label selector "
                          "(matchLabels, matchExpressions: In/NotIn/Exists/DoesNotExist)")
    workloads: list[WorkloadSelector] | None = Field(None, description="owning workloads ({kind, name}: "
                                                     "Deployment/checkout...; name a glob), any of them")
    container: bool | None = Field(None, description="true: only in containers; false: only on the host")
    flags: list[str] | None = Field(None, description="any of these in process.flags or file.flags")

    @field_validator("args_regex")
    @classmethod
    def _regex(cls, v):
        for p in v or ():
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r}: not a valid regex: {exc}") from None
        return v

    _cidrs = field_validator("cidrs")(classmethod(lambda cls, v: check_cidrs(v)))

    @field_validator("dns_names")
    @classmethod
    def _dns_names(cls, v):
        out = []
        for name in v or ():
            n = name.strip().rstrip(".").lower()
            if not n or n.startswith(".") or ".." in n or "*" in n:
                raise ValueError(f"{name!r}: a DNS name like 'example.com' (its subdomains match too; no wildcards)")
            out.append(n)
        return out if v is not None else v

    _ports = field_validator("ports")(classmethod(lambda cls, v: check_ports(v)))

    @field_validator("operations")
    @classmethod
    def _operations(cls, v):
        known = set(FILE_RULE_OPERATIONS) | set(PRIVILEGE_OPERATIONS)
        bad = [o for o in v or () if o not in known]
        if bad:
            raise ValueError(f"unknown operations {bad} (known: {', '.join(sorted(known))})")
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v):
        for p in v or ():
            if not p.startswith("/") and not p.startswith("*"):
                raise ValueError(f"{p!r}: paths must be absolute (or a glob starting with '*')")
        return v

    @model_validator(mode="after")
    def _follow(self):
        if self.follow_children and not self.binaries:
            raise ValueError("follow_children needs binaries")
        return self

    def given(self) -> set[str]:
        return {k for k, v in self if v not in (None, False) and k != "types"}

    def implied_types(self) -> tuple[str, ...]:
        if self.types:
            return tuple(dict.fromkeys(self.types))
        implied: list[str] = []
        ops = set(self.operations or ())
        if self.paths or ops & set(FILE_RULE_OPERATIONS):
            implied.append("file_access")
        if self.dns_names:
            implied.append("dns_query")
        elif self.ports or self.cidrs:
            implied += NETWORK_TYPES
        if self.old_uids is not None or self.new_uids is not None or ops & set(PRIVILEGE_OPERATIONS):
            implied.append("privilege_change")
        return tuple(implied) or _REAL_TYPES


class RateLimit(_Strict):
    events: int = Field(ge=1)
    per_seconds: float = Field(gt=0)


class Rule(_Strict):
    name: str | None = None
    match: Selector
    except_: Selector | None = Field(None, alias="except", description="the rule does not fire when this matches")
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    severity: Literal[SEVERITIES] | None = None  # type: ignore[valid-type]
    tags: list[str] = []
    rate_limit: RateLimit | None = None


class Policy(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""  # optional: a one-line policy needs no ceremony (issue 18)
    enabled: bool = True
    rules: list[Rule] = Field(min_length=1)


# --- loading ---------------------------------------------------------------------------------------


class PolicyError(ConfigError):
    """Problems in policy files; each line is `file:line: field: reason`."""


def library_dir() -> str:
    """The shipped policy library (the `siemhub.policies` package: policies/ in the repository)."""
    return str(resources.files("siemhub.policies"))


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(path, n) for n in os.listdir(path)
                      if n.endswith((".yaml", ".yml")) and not n.startswith("."))
    return [path]


def parse_policy(text: str, source: str) -> tuple[Policy, dict[tuple, int]]:
    """One policy file; raises PolicyError naming file:line: field."""
    data, positions = yamlpos.parse(text, source, PolicyError, "expected a mapping (name, description, rules)")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        raise PolicyError([t for _, t in sorted(yamlpos.pydantic_problems(err, (), source, positions, {}))]) from None
    return policy, positions


@dataclass
class LoadedPolicy:
    policy: Policy
    source: str
    positions: dict[tuple, int]

    def where(self, *loc) -> str:
        return f"{self.source}:{yamlpos.line_for(loc, self.positions)}"


def load_files(paths: Iterable[str]) -> list[LoadedPolicy]:
    problems: list[str] = []
    out: list[LoadedPolicy] = []
    seen: dict[str, str] = {}
    for path in paths:
        for f in _files(path):
            try:
                with open(f, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                problems.append(f"{f}:0: cannot read: {exc.strerror}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{f}:0: not UTF-8 text")
                continue
            try:
                policy, positions = parse_policy(text, f)
            except PolicyError as exc:
                problems.extend(exc.problems)
                continue
            lp = LoadedPolicy(policy, f, positions)
            if policy.name in seen:
                problems.append(f"{lp.where('name')}: name: policy {policy.name!r} is also defined in {seen[policy.name]}")
                continue
            seen[policy.name] = f
            out.append(lp)
    if problems:
        raise PolicyError(problems)
    return out


def load_policy_set(cfg: Any, block_support: Callable[[], tuple[bool, str]] | None = None) -> PolicyEngine:
    """The `policies:` section of the config -> a PolicyEngine (raises PolicyError)."""
    paths = ([library_dir()] if cfg.library else []) + list(cfg.paths)
    loaded = [lp for lp in load_files(paths) if lp.policy.name not in set(cfg.disabled)]
    return PolicyEngine(loaded, block_support=block_support)


# --- compiled rules --------------------------------------------------------------------------------


def _binary_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    exact = {p for p in patterns if "/" in p and not _GLOB.search(p)}
    names = {p for p in patterns if "/" not in p and not _GLOB.search(p)}
    path_globs = [fnmatch.translate(p) for p in patterns if "/" in p and _GLOB.search(p)]
    name_globs = [fnmatch.translate(p) for p in patterns if "/" not in p and _GLOB.search(p)]
    path_rx = re.compile("|".join(path_globs)).match if path_globs else None
    name_rx = re.compile("|".join(name_globs)).match if name_globs else None

    def match(binary: str) -> bool:
        if binary in exact:
            return True
        if names or name_rx:
            base = binary.rpartition("/")[2]
            if base in names or (name_rx is not None and name_rx(base)):
                return True
        return path_rx is not None and path_rx(binary) is not None
    return match


def _path_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    exact = frozenset(p for p in patterns if not p.endswith("/") and not _GLOB.search(p))
    prefixes = tuple(p for p in patterns if p.endswith("/") and not _GLOB.search(p))
    globs = [fnmatch.translate(p) for p in patterns if _GLOB.search(p)]
    rx = re.compile("|".join(globs)).match if globs else None

    def match(path: str) -> bool:
        return path in exact or (bool(prefixes) and path.startswith(prefixes)) or (rx is not None and rx(path) is not None)
    return match


def _escaped_at(name: str, i: int) -> bool:
    """True when name[i] is escaped (`\\.`: a dot inside a label, in DNS presentation form)."""
    n = 0
    while i > n and name[i - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def _cmdline(p: Process | None) -> str:
    return " ".join(p.args) if p is not None and p.args else ""


class _Compiled:
    """A selector compiled to checks, cheapest first. `check(event, engine) -> bool`."""

    __slots__ = ("checks",)

    def __init__(self, s: Selector) -> None:
        checks: list[Callable[[Event, PolicyEngine], bool]] = []
        if s.operations:
            ops = frozenset(s.operations)

            def operations(e, _eng, ops=ops):
                f = e.file
                if f is not None:
                    if f.operation in ops:
                        return True
                    if f.operation == "open" and ops & {"open_read", "open_write"}:
                        w = "O_WRONLY" in f.flags or "O_RDWR" in f.flags
                        return ("open_write" if w else "open_read") in ops
                    return False
                p = e.privilege
                return p is not None and p.operation in ops
            checks.append(operations)
        if s.container is not None:
            want = s.container
            checks.append(lambda e, _eng: e.process is not None and (e.process.container is not None) is want)
        if s.uids is not None:
            uids = frozenset(s.uids)
            checks.append(lambda e, _eng: e.process is not None and e.process.uid in uids)
        if s.old_uids is not None:
            old = frozenset(s.old_uids)
            checks.append(lambda e, _eng: e.privilege is not None and e.privilege.old_uid in old)
        if s.new_uids is not None:
            new = frozenset(s.new_uids)
            checks.append(lambda e, _eng: e.privilege is not None and e.privilege.new_uid in new)
        if s.ports:
            ports = frozenset(s.ports)
            checks.append(lambda e, _eng: e.network is not None and e.network.destination_port in ports)
        if s.flags:
            flags = frozenset(s.flags)

            def has_flags(e, _eng):
                p = e.process
                if p is not None and p.flags and not flags.isdisjoint(p.flags):
                    return True
                return e.file is not None and not flags.isdisjoint(e.file.flags)
            checks.append(has_flags)
        if s.binaries:
            bm = _binary_matcher(s.binaries)
            if s.follow_children:
                checks.append(lambda e, eng: any(bm(p.binary) for p in eng.lineage(e)))
            else:
                checks.append(lambda e, _eng: e.process is not None and bm(e.process.binary))
        if s.parent_binaries:
            pm = _binary_matcher(s.parent_binaries)
            checks.append(lambda e, _eng: e.parent is not None and pm(e.parent.binary))
        if s.paths:
            path_ok = _path_matcher(s.paths)
            checks.append(lambda e, _eng: e.file is not None and (
                path_ok(e.file.path) or (e.file.target is not None and path_ok(e.file.target))))
        if s.cidrs:
            nets = [ipaddress.ip_network(c, strict=False) for c in s.cidrs]

            def in_cidrs(e, _eng):
                n = e.network
                if n is None or not n.destination_ip:
                    return False
                try:
                    ip = ipaddress.ip_address(n.destination_ip)
                except ValueError:
                    return False
                if ip.version == 6 and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                return any(ip in net for net in nets)
            checks.append(in_cidrs)
        if s.dns_names:
            suffixes = frozenset(s.dns_names)

            def dns_name(e, _eng):
                n = e.network
                name = n.dns_query if n is not None else None
                if not name:
                    return False
                name = name.lower()
                if name in suffixes:
                    return True
                dot = name.find(".")
                while dot >= 0:  # a.b.example.com -> b.example.com -> example.com -> com
                    if name[dot + 1:] in suffixes and not _escaped_at(name, dot):
                        return True
                    dot = name.find(".", dot + 1)
                return False
            checks.append(dns_name)
        if s.namespaces:
            nrx = re.compile("|".join(fnmatch.translate(p) for p in s.namespaces)).match
            checks.append(lambda e, _eng: e.process is not None and e.process.pod is not None
                          and nrx(e.process.pod.namespace) is not None)
        if s.pod_labels is not None and (s.pod_labels or isinstance(s.pod_labels, LabelSelector)):
            labels_match = label_predicate(s.pod_labels)  # collector/k8s/selectors.py
            checks.append(lambda e, _eng: e.process is not None and e.process.pod is not None
                          and labels_match(e.process.pod.labels))
        if s.workloads:
            workload_match = workload_predicate(s.workloads)
            checks.append(lambda e, _eng: e.process is not None and e.process.pod is not None
                          and workload_match(e.process.pod.workload_kind, e.process.pod.workload))
        if s.args or s.args_regex:
            subs = tuple(s.args or ())
            rxs = tuple(re.compile(r).search for r in s.args_regex or ())

            def args(e, _eng):
                line = _cmdline(e.process)
                if not line:
                    return False
                return any(x in line for x in subs) or any(rx(line) is not None for rx in rxs)
            checks.append(args)
        self.checks = tuple(checks)

    def __call__(self, e: Event, eng: PolicyEngine) -> bool:
        for c in self.checks:
            if not c(e, eng):
                return False
        return True


class _RateLimiter:
    __slots__ = ("rate", "burst", "tokens", "last", "suppressed")

    def __init__(self, events: int, per_seconds: float) -> None:
        self.rate = events / per_seconds
        self.burst = float(events)
        self.tokens = float(events)
        self.last = time.monotonic()
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.suppressed += 1
        return False


@dataclass
class CompiledRule:
    policy: str
    name: str
    action: str
    severity: str | None
    tags: tuple[str, ...]
    match: _Compiled
    unless: _Compiled | None
    limiter: _RateLimiter | None
    types: tuple[str, ...]
    matched: int = 0
    enforced_in_kernel: bool = False  # sigkill/block: the file sensor acts, this engine only annotates

    def hit(self, e: Event, eng: PolicyEngine) -> bool:
        return self.match(e, eng) and (self.unless is None or not self.unless(e, eng))


# --- the engine ------------------------------------------------------------------------------------


class PolicyEngine:
    def __init__(self, loaded: Sequence[LoadedPolicy] = (), cache: Any = None,
                 block_support: Callable[[], tuple[bool, str]] | None = None) -> None:
        self.policies = [lp for lp in loaded if lp.policy.enabled]
        self.disabled = [lp.policy.name for lp in loaded if not lp.policy.enabled]
        self.cache = cache  # process_cache.ProcessCache, for follow_children beyond the event's ancestors
        self.ids = EventIds()
        self.block_available, self.block_reason = (block_support or kernel_block_support)()
        self.kernel = KernelFilters()
        self.rules: list[CompiledRule] = []
        self._by_type: dict[str, tuple[CompiledRule, ...]] = {}
        self._ignore_by_type: dict[str, tuple[CompiledRule, ...]] = {}
        self._enforce_map: dict[str, CompiledRule] = {}  # file sensor enforce path -> the rule
        self.ignored = 0  # events dropped in user space by ignore rules
        self.emitted = 0  # policy_action events emitted
        self._lock = threading.Lock()
        problems: list[str] = []
        for lp in self.policies:
            for i, r in enumerate(lp.policy.rules):
                try:
                    self._compile(lp, i, r)
                except ValueError as exc:
                    problems.append(f"{lp.where('rules', i, 'action')}: rules[{i}].action: {exc}")
        if problems:
            raise PolicyError(problems)
        by_type: dict[str, list[CompiledRule]] = {}
        ign: dict[str, list[CompiledRule]] = {}
        for cr in self.rules:
            for t in cr.types:
                (ign if cr.action == "ignore" else by_type).setdefault(t, []).append(cr)
        self._by_type = {t: tuple(v) for t, v in by_type.items()}
        self._ignore_by_type = {t: tuple(v) for t, v in ign.items()}
        # the file sensor's own policy_action (an enforce kill) is renamed after the policy that asked for it
        self._types = frozenset(self._by_type) | frozenset(self._ignore_by_type) | (
            {"policy_action"} if self._enforce_map else frozenset())

    # --- compiling ---

    def _compile(self, lp: LoadedPolicy, i: int, r: Rule) -> None:
        name = r.name or f"rule{i}"
        types = r.match.implied_types()
        severity = r.severity or ("medium" if r.action == "post" else None)
        limiter = _RateLimiter(r.rate_limit.events, r.rate_limit.per_seconds) if r.rate_limit else None
        cr = CompiledRule(lp.policy.name, name, r.action, severity, tuple(r.tags), _Compiled(r.match),
                          _Compiled(r.except_) if r.except_ is not None else None, limiter, types)
        given = r.match.given()
        if r.action in ("sigkill", "block"):
            self._enforce(lp, cr, r, given)
        elif r.action == "ignore":
            self._push_ignore(cr, r, given)
        elif r.action == "post" or r.action == "notify":
            if "file_access" in types and r.match.paths:
                # watched so the sensor reports them (globs cannot be). A rule about changes only (no
                # reads among its operations) needs only changes reported: a watch_writes entry, which
                # also makes /proc/ paths cheap to watch (reads there are constant, writes rare).
                paths = [p for p in r.match.paths if not _GLOB.search(p)]
                ops = set(r.match.operations or ())
                if ops and not ops & {"open", "open_read"}:
                    self.kernel.file_watch_writes += paths
                else:
                    self.kernel.file_watch += [p for p in paths if not p.startswith("/proc/")]
        self.rules.append(cr)

    def _enforce(self, lp: LoadedPolicy, cr: CompiledRule, r: Rule, given: set[str]) -> None:
        what = r.action
        if what == "sigkill" and ("binaries" in given or {"process_exec", "network_connect"} & set(cr.types)):
            # exec, open by a binary, connect: the enforce sensor (collector/core/enforce_rules.py)
            if r.except_ is not None:
                raise ValueError("sigkill is enforced in the kernel without except")
            self.kernel.enforce.append(enforce_rules.from_rule(cr.policy, cr.name, r.match, cr.types, given,
                                                               r.severity, list(r.tags)))
            cr.enforced_in_kernel = True
            return
        other = [t for t in cr.types if t != "file_access"]
        if other:
            raise ValueError(f"{what} is not available for {', '.join(other)}: only file_access paths can be "
                             "enforced in the kernel on this agent (use post or notify)")
        extra = given - {"paths", "operations"}
        if extra or r.except_ is not None:
            raise ValueError(f"{what} is enforced in the kernel by path and operation only; it cannot be "
                             f"combined with {', '.join(sorted(extra) or ['except'])}")
        if not r.match.paths:
            raise ValueError(f"{what} needs paths")
        globbed = [p for p in r.match.paths if _GLOB.search(p)]
        if globbed:
            raise ValueError(f"{what} needs exact paths or directory prefixes ending in '/', not globs ({globbed})")
        ops = list(r.match.operations or FILE_OPERATIONS)
        ops = ["open_read", "open_write"] + [o for o in ops if o != "open"] if "open" in ops else ops
        bad = [o for o in ops if o not in FILE_OPERATIONS]
        if bad:
            raise ValueError(f"{what}: operations {bad} cannot be enforced (enforceable: {', '.join(FILE_OPERATIONS)})")
        if what == "block":
            log.warning("%s: policy %s rule %s: block is not available (%s); falling back to sigkill",
                        lp.source, cr.policy, cr.name, self.block_reason)
        cr.enforced_in_kernel = True
        for p in r.match.paths:
            self.kernel.file_enforce.append(FileEnforceRule(path=p, action="sigkill", operations=list(dict.fromkeys(ops))))
            self._enforce_map[p] = cr

    def _push_ignore(self, cr: CompiledRule, r: Rule, given: set[str]) -> None:
        if r.except_ is not None:
            return
        # the kernel filters drop execs and exits (process) or connects, accepts and closes (network):
        # only rules that ask for all of those are pushed down; the user-space check stays for the rest
        if given == {"binaries"} and set(PROCESS_TYPES) <= set(cr.types):
            exact = [b for b in r.match.binaries if b.startswith("/") and not _GLOB.search(b)]
            if len(exact) == len(r.match.binaries):
                self.kernel.process_binaries += exact
        elif set(NETWORK_TYPES) <= set(cr.types) and given in ({"ports"}, {"cidrs"}):
            self.kernel.network_ports += r.match.ports or []
            self.kernel.network_cidrs += r.match.cidrs or []

    # --- the hot path ---

    def lineage(self, e: Event) -> list[Process]:
        """The process, its parent, the ancestors the event carries, then further up from the cache."""
        out = [p for p in (e.process, e.parent) if p is not None]
        out += e.ancestors
        cache = self.cache
        if cache is not None and out:
            p = out[-1]
            seen = {q.pid for q in out}
            for _ in range(32):
                if not p.ppid or p.ppid in seen:
                    break
                entry = cache.get(p.ppid)
                if entry is None:
                    break
                p = entry.proc
                seen.add(p.pid)
                out.append(p)
        return out

    def apply(self, events: list[Event]) -> list[Event]:
        """Act on a batch: returns the events to route (ignored ones gone, policy_action ones added)."""
        types = self._types
        out: list[Event] | None = None
        for i, e in enumerate(events):
            t = e.type
            if t not in types:
                if out is not None:
                    out.append(e)
                continue
            if t == "policy_action":
                self._rename_enforced(e)
                if out is not None:
                    out.append(e)
                continue
            ign = self._ignore_by_type.get(t)
            if ign is not None and any(r.hit(e, self) for r in ign):
                self.ignored += 1
                if out is None:
                    out = events[:i]
                continue
            extra = None
            for r in self._by_type.get(t, ()):
                if r.hit(e, self):
                    pa = self._act(r, e)
                    if pa is not None:
                        extra = [pa] if extra is None else [*extra, pa]
            if extra is not None and out is None:
                out = events[:i]
            if out is not None:
                out.append(e)
                if extra is not None:
                    out += extra
        return events if out is None else out

    def _act(self, r: CompiledRule, e: Event) -> Event | None:
        r.matched += 1
        tag = f"policy:{r.policy}"
        add = [x for x in (tag, *r.tags) if x not in e.tags]
        if add:
            e.tags = [*e.tags, *add]
        if r.severity is not None and SEVERITY_RANK[r.severity] > SEVERITY_RANK[e.severity]:
            e.severity = r.severity
        if r.enforced_in_kernel:
            return None  # the file sensor emits the policy_action of a kill itself (renamed below)
        if r.limiter is not None:
            with self._lock:
                if not r.limiter.allow():
                    return None
        self.emitted += 1
        return Event(id=self.ids.new(), time=e.time, type="policy_action", schema_version=SCHEMA_VERSION,
                     severity=e.severity, node=e.node, process=e.process, parent=e.parent, file=e.file,
                     network=e.network, privilege=e.privilege, tags=[tag, *r.tags],
                     policy=PolicyAction(policy=r.policy, rule=r.name, action=r.action, enforced=False,
                                         reason=_reason(e)))

    def _rename_enforced(self, e: Event) -> None:
        pa = e.policy
        if pa is None or pa.policy != "file.enforce" or pa.rule not in self._enforce_map:
            return
        r = self._enforce_map[pa.rule]
        r.matched += 1
        e.policy = PolicyAction(policy=r.policy, rule=r.name, action=pa.action, enforced=pa.enforced,
                                reason=pa.reason if r.action == "sigkill"
                                else f"{pa.reason} (block unavailable: {self.block_reason}; sigkill instead)")
        tag = f"policy:{r.policy}"
        if tag not in e.tags:
            e.tags = [*e.tags, tag, *r.tags]
        if r.severity is not None and SEVERITY_RANK[r.severity] > SEVERITY_RANK[e.severity]:
            e.severity = r.severity

    # --- reporting ---

    def counters(self) -> dict[str, int]:
        return {"policies": len(self.policies), "rules": len(self.rules), "ignored": self.ignored,
                "actions": self.emitted, "matched": sum(r.matched for r in self.rules),
                "rate_limited": sum(r.limiter.suppressed for r in self.rules if r.limiter is not None)}

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for r in self.rules:
            kinds[r.action] = kinds.get(r.action, 0) + 1
        k = self.kernel
        return (f"{len(self.policies)} policies, {len(self.rules)} rules ({', '.join(f'{n} {a}' for a, n in sorted(kinds.items())) or 'none'})"
                f"{'; disabled: ' + ', '.join(self.disabled) if self.disabled else ''}; enforcement: "
                f"sigkill from the kernel for {len(k.file_enforce)} file paths; block: "
                f"{'available' if self.block_available else 'unavailable (' + self.block_reason + '), sigkill used instead'}; "
                f"ignore in the kernel: {len(k.process_binaries)} binaries, {len(k.network_ports)} ports, "
                f"{len(k.network_cidrs)} CIDRs")


def _reason(e: Event) -> str:
    p = e.process
    who = p.binary if p is not None else "?"
    if e.file is not None:
        return f"{who}: {e.file.operation} {e.file.path}"
    if e.network is not None:
        n = e.network
        if n.dns_query is not None:
            return f"{who}: {e.type} {n.dns_query} {n.dns.type if n.dns is not None else ''} via {n.destination_ip}".rstrip()
        return f"{who}: {e.type} {n.destination_ip}:{n.destination_port}"
    if e.privilege is not None:
        return f"{who}: {e.privilege.operation}"
    return f"{who}: {e.type}"


# What install() last put into each sensor (its apply_kernel_settings arguments): what a failed reload restores.
_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sensor_settings(sensors: Sequence[Any], agent_cfg: Any, k: KernelFilters) -> list[tuple[Any, tuple]]:
    """(sensor, arguments): each sensor's own section of the config merged with the engine's
    settings, through the sensor's hook (Sensor.kernel_settings)."""
    out: list[tuple[Any, tuple]] = []
    for s in sensors:
        section = agent_cfg.sensors.get(s.name)
        if section is None:
            continue
        args = s.kernel_settings(section, k)
        if args is not None:
            out.append((s, args))
    return out


def _loaded_settings(s: Any) -> tuple | None:
    """The settings a sensor's load() applied from its own config (before any install)."""
    c = getattr(s, "config", None)
    return None if c is None else s.kernel_settings(c, KernelFilters())


def install(sensors: Sequence[Any], agent_cfg: Any, engine: PolicyEngine | None) -> None:
    """Push the engine's kernel-side parts into the running sensors, merged with the config's own
    settings (start-up and reload). All or nothing: every sensor first checks its new settings without
    touching the kernel (`check_kernel_settings`); only when all accept are they applied, and a
    sensor that still refuses while applying (a path gone since the check, a kernel map error) makes
    the sensors changed before it go back to what they had. Raises ValueError naming the sensor."""
    k = engine.kernel if engine is not None else KernelFilters()
    plan = _sensor_settings(sensors, agent_cfg, k)
    problems = []
    for s, args in plan:
        try:
            s.check_kernel_settings(*args)
        except ValueError as exc:
            problems.append(f"sensor {s.name}: {exc}")
    if problems:
        raise ValueError("; ".join(problems))
    done: list[tuple[Any, tuple | None]] = []
    for s, args in plan:
        before = _INSTALLED.get(s, _loaded_settings(s))
        try:
            s.apply_kernel_settings(*args)
        except Exception as exc:
            _roll_back([*done, (s, before)])
            raise ValueError(f"sensor {s.name}: {exc}") from exc
        done.append((s, before))
    for s, args in plan:
        _INSTALLED[s] = args
    if k.enforce and not any(getattr(s, "enforces_beyond_files", False) for s in sensors):
        log.warning("policies: %d sigkill rules need the enforce sensor (sensors.enforce): not enforced", len(k.enforce))
    if k.file_enforce and not any(getattr(s, "enforces", False) for s in sensors):
        log.warning("policies: %d sigkill rules need the file sensor (sensors.file): not enforced", len(k.file_enforce))
    if engine is not None:
        log.info("policies: %s", engine.describe())


def _roll_back(changed: list[tuple[Any, tuple | None]]) -> None:
    for s, before in reversed(changed):
        if before is None:
            log.error("policies: sensor %s: no earlier settings to restore", s.name)
            continue
        try:
            s.apply_kernel_settings(*before)
        except Exception as exc:  # noqa: BLE001 - keep restoring the others
            log.error("policies: sensor %s: could not restore its earlier kernel settings: %s", s.name, exc)
