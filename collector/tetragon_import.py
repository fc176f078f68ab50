"""`siemhub policies import-tetragon FILE...`: Tetragon TracingPolicies -> siemhub policies.

A TracingPolicy names kernel functions (kprobes, LSM hooks) and, per function, selectors: matchArgs,
matchBinaries, matchNamespaces... and matchActions. siemhub's policies select sensor events instead
(docs/policies.md). The functions that observe what a siemhub sensor reports convert:

  security_file_permission, security_file_open, fd_install, open/openat, write, security_path_*,
  LSM file_open                         -> file_access (paths, operations)
  tcp_connect, security_socket_connect  -> network_connect (cidrs, ports); tcp_close -> network_close
  __sys_set*id, commit_creds, ptrace, module and bpf loading, mount  -> privilege_change (operations, new_uids)
  execve, security_bprm_check, LSM bprm_check_security              -> process_exec (binaries)

Each selector becomes one rule (selectors are alternatives; the fields of one are all required, the
values of one field alternatives, as in siemhub). matchBinaries -> binaries (NotIn -> except),
followChildren -> follow_children; matchNamespaces host_ns -> container false/true; podSelector and a
namespaced policy -> pod_labels / namespaces; Post -> post (rateLimit -> rate_limit), Sigkill ->
sigkill, Override -> block. Everything else is reported, per kprobe, selector and action, with the
reason it could not carry over (a different kernel object, pids and namespace inode numbers of one
boot, actions siemhub has no counterpart for); a converted rule the policy engine refuses to enforce
(sigkill with an except, pod labels, globs...) is carried over as post, with the engine's reason.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from siemhub.collector import policy as policy_mod

_FILE_CALLS = {
    "security_file_permission": None,  # operations from the MAY_READ / MAY_WRITE argument
    "security_file_open": ["open"], "file_open": ["open"], "fd_install": ["open"], "open": ["open"],
    "openat": ["open"], "openat2": ["open"], "do_sys_open": ["open"], "do_sys_openat2": ["open"],
    "write": ["write"], "vfs_write": ["write"], "pwrite64": ["write"], "writev": ["write"],
    "security_path_truncate": ["truncate"], "truncate": ["truncate"], "ftruncate": ["truncate"],
    "security_path_unlink": ["unlink"], "unlink": ["unlink"], "unlinkat": ["unlink"],
    "security_path_rename": ["rename"], "rename": ["rename"], "renameat": ["rename"], "renameat2": ["rename"],
    "security_path_chmod": ["chmod"], "chmod": ["chmod"], "fchmodat": ["chmod"],
    "security_path_chown": ["chown"], "chown": ["chown"], "fchownat": ["chown"],
}
_NET_CALLS = {"tcp_connect": "network_connect", "security_socket_connect": "network_connect",
              "tcp_v4_connect": "network_connect", "tcp_v6_connect": "network_connect",
              "tcp_close": "network_close"}
_PRIV_CALLS = {
    "setuid": ["setuid"], "setgid": ["setgid"], "setreuid": ["setreuid"], "setregid": ["setregid"],
    "setresuid": ["setresuid"], "setresgid": ["setresgid"], "setfsuid": ["setfsuid"], "setfsgid": ["setfsgid"],
    "capset": ["capset"], "cap_capset": ["capset"], "security_capset": ["capset"],
    "commit_creds": ["setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
                     "setfsgid", "capset"],
    "ptrace": ["ptrace"], "security_ptrace_access_check": ["ptrace"],
    "security_kernel_module_request": ["module_load"], "do_init_module": ["module_load"],
    "init_module": ["module_load"], "finit_module": ["module_load"], "security_kernel_read_file": ["module_load"],
    "bpf_check": ["bpf_load"], "security_bpf_prog_load": ["bpf_load"], "bpf_prog_load": ["bpf_load"],
    "security_sb_mount": ["mount"], "mount": ["mount"], "path_mount": ["mount"],
}
_EXEC_CALLS = {"execve", "execveat", "security_bprm_check", "bprm_check_security", "security_bprm_creds_for_exec"}
_NOT_OBSERVED = {
    "security_mmap_file": "siemhub's file sensor does not see mmap (the open before it is reported as an open)",
    "tcp_sendmsg": "siemhub reports no event per TCP send: network_close carries the bytes of the connection",
    "close": "needed by Tetragon to follow descriptors; siemhub resolves paths itself",
}
_PATH_ARG_TYPES = {"file", "path", "string", "fd", "char_buf", "dentry", "linux_binprm"}
_UID_CALLS = {"setuid", "setreuid", "setresuid", "setfsuid", "commit_creds"}
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Converted:
    name: str
    source: str
    policy: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # "<where>: <what> not carried over: <why>"

    def yaml(self) -> str:
        return yaml.safe_dump(self.policy, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _call_key(call: str) -> str:
    c = call
    for prefix in ("__x64_", "__arm64_", "__ia32_", "__se_", "__do_"):
        if c.startswith(prefix):
            c = c[len(prefix):]
    c = c.lstrip("_")
    return c[4:] if c.startswith("sys_") else c


def _paths(op: str, values: list[str], where: str, notes: list[str]) -> list[str]:
    out: list[str] = []
    widened: list[str] = []
    globs: list[str] = []
    for v in map(str, values):
        if op in ("Equal", "NotEqual"):
            out.append(v)
        elif op in ("Prefix", "NotPrefix"):
            if v.endswith("/"):
                out.append(v)
            else:
                out += [v, v + "/"]  # the file itself, or everything below it when it is a directory
                widened.append(v)
        elif op in ("Postfix", "NotPostfix"):
            g = "*" + v if v.startswith((".", "/")) else "*/" + v
            out.append(g)
            globs.append(g)
    if widened:
        notes.append(f"{where}: {op} {widened}: each carried as the path and the directory below it (other names "
                     "that only start with it, such as a backup '<name>-', are not matched)")
    if globs:
        notes.append(f"{where}: {op} carried as the globs {globs}: they are matched, but the file sensor reports "
                     "only watched paths (sensors.file.watch, or another rule's exact paths and directories)")
    return out


def _cidrs(values: list[str], where: str, notes: list[str]) -> list[str]:
    out = []
    for v in map(str, values):
        try:
            out.append(str(ipaddress.ip_network(v, strict=False)))
        except ValueError:
            notes.append(f"{where}: address {v!r} not carried over: not an address or CIDR")
    return out


def _ports(values: list[Any], where: str, notes: list[str]) -> list[int]:
    out = []
    for v in values:
        s = str(v)
        if s.isdigit() and 0 <= int(s) < 65536:
            out.append(int(s))
        else:
            notes.append(f"{where}: port {s!r} not carried over: siemhub selects single ports, not ranges")
    return out


def _binaries(op: str, values: list[str]) -> list[str] | None:
    vals = [str(v) for v in values]
    if op in ("In", "NotIn"):
        return vals
    if op in ("Prefix", "NotPrefix"):
        return [v + "*" for v in vals]
    if op in ("Postfix", "NotPostfix"):
        return ["*" + v for v in vals]
    return None


def _merge(sel: dict, key: str, values: list) -> None:
    if values:
        sel[key] = list(dict.fromkeys([*sel.get(key, []), *values]))


def _selector(kind: str, base_ops: list[str] | None, call: str, args: dict[int, str], s: dict, where: str,
              notes: list[str]) -> tuple[dict, dict, str, dict | None] | None:
    """One Tetragon selector -> (match, except, action, rate_limit), or None when it cannot be carried."""
    match: dict[str, Any] = {}
    exc: dict[str, Any] = {}
    ops = list(base_ops) if base_ops else []
    for j, ma in enumerate(s.get("matchArgs") or []):
        w = f"{where}.matchArgs[{j}]"
        idx, op, values = ma.get("index"), str(ma.get("operator", "")), list(ma.get("values") or [])
        atype = args.get(idx, "")
        if kind == "file" and atype in _PATH_ARG_TYPES:
            p = _paths(op, values, w, notes)
            _merge(exc if op.startswith("Not") else match, "paths", p)
            if op not in ("Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix"):
                notes.append(f"{w}: operator {op} on a path not carried over: siemhub matches paths exactly, "
                             "by directory prefix or by glob")
        elif kind == "file" and call == "security_file_permission" and atype == "int" and op in ("Equal", "Mask"):
            mask = 0
            for v in values:
                mask |= int(str(v), 0)
            found = (["open_read"] if mask & 4 else []) + (["open_write", "write"] if mask & 2 else [])
            if not found:
                notes.append(f"{w}: access mask {values} not carried over: only MAY_READ (4) and MAY_WRITE (2) map")
                return None
            ops = found
        elif kind == "network" and atype in ("sock", "sockaddr", "skb"):
            if op in ("DAddr", "NotDAddr"):
                _merge(exc if op.startswith("Not") else match, "cidrs", _cidrs(values, w, notes))
            elif op in ("DPort", "NotDPort"):
                _merge(exc if op.startswith("Not") else match, "ports", _ports(values, w, notes))
            elif op in ("Family",) and set(map(str, values)) <= {"AF_INET", "AF_INET6"}:
                pass  # the network sensor reports IPv4 and IPv6 only: nothing to select
            else:
                notes.append(f"{w}: socket operator {op} not carried over: siemhub selects network events by "
                             "destination address and port only")
                if op in ("Family", "Protocol", "State"):
                    continue
                return None
        elif call == "security_kernel_read_file" and atype == "int" and op == "Equal" and \
                [str(v) for v in values] == ["2"]:
            pass  # READING_MODULE: what siemhub's module_load reports
        elif kind == "privilege" and atype == "int" and op == "Equal" and call in _UID_CALLS:
            uids = [int(str(v)) for v in values]
            _merge(match, "new_uids", uids)
            if call != "setuid":
                notes.append(f"{w}: argument {idx} of {call} compared with siemhub's new_uids (the real uid after "
                             "the call; the file-system uid for setfsuid): the effective and saved ids are not "
                             "selected separately")
        elif kind == "exec" and atype in _PATH_ARG_TYPES and op in ("Equal", "Prefix", "Postfix", "NotEqual",
                                                                        "NotPrefix", "NotPostfix"):
            b = _binaries({"Equal": "In", "NotEqual": "NotIn"}.get(op, op), values)
            _merge(exc if op.startswith("Not") else match, "binaries", b or [])
        else:
            notes.append(f"{w}: {op} on argument {idx} ({atype or 'unknown type'}) of {call} not carried over: "
                         f"siemhub's {kind} events have no such field")
            return None
    if ops:
        match["operations"] = ops
    for j, mb in enumerate(s.get("matchBinaries") or []):
        w = f"{where}.matchBinaries[{j}]"
        op = str(mb.get("operator", "In"))
        b = _binaries(op, list(mb.get("values") or []))
        if b is None:
            notes.append(f"{w}: operator {op} not carried over: binaries are exact paths, globs or names")
            return None
        _merge(exc if op.startswith("Not") else match, "binaries", b)
        if mb.get("followChildren"):
            (exc if op.startswith("Not") else match)["follow_children"] = True
    for j, mn in enumerate(s.get("matchNamespaces") or []):
        w = f"{where}.matchNamespaces[{j}]"
        op, values = str(mn.get("operator", "In")), [str(v) for v in mn.get("values") or []]
        if values == ["host_ns"] and op in ("In", "NotIn"):
            match["container"] = op == "NotIn"  # in the host's namespace: not in a container
        else:
            notes.append(f"{w}: {mn.get('namespace')} namespace {op} {values} not carried over: namespace inode "
                         "numbers are per boot; siemhub selects host or container (host_ns) and pod namespaces")
            return None
    for key, why in (("matchPIDs", "process ids are per boot"),
                     ("matchCapabilities", "siemhub selects no capability sets"),
                     ("matchCapabilityChanges", "siemhub selects no capability changes"),
                     ("matchNamespaceChanges", "namespace changes are flagged (namespace_entry), not selected"),
                     ("matchReturnArgs", "siemhub selects no return values"),
                     ("matchReturnActions", "siemhub has no return actions")):
        if s.get(key):
            notes.append(f"{where}.{key}: not carried over: {why}; the rule matches without it")
    action, rate = "post", None
    actions = [str(a.get("action", "")) for a in s.get("matchActions") or []]
    for j, a in enumerate(s.get("matchActions") or []):
        w = f"{where}.matchActions[{j}]"
        name = str(a.get("action", ""))
        if name == "Post":
            rl = str(a.get("rateLimit", "") or "")
            if rl:
                secs = _duration(rl)
                if secs:
                    rate = {"events": 1, "per_seconds": secs}
                else:
                    notes.append(f"{w}: rateLimit {rl!r} not carried over: not a duration")
        elif name == "Sigkill":
            action = "sigkill"
        elif name == "Override":
            if "Sigkill" not in actions:
                action = "block"
        elif name in ("FollowFD", "UnfollowFD", "CopyFD", "TrackSock", "UntrackSock"):
            notes.append(f"{w}: {name} not needed: siemhub resolves paths and sockets itself")
        elif name == "NoPost":
            notes.append(f"{w}: NoPost not carried over: siemhub reports the event (use an ignore rule to drop it)")
        else:
            notes.append(f"{w}: action {name} not carried over: siemhub has post, notify, ignore, sigkill and block")
    return match, exc, action, rate


def _duration(text: str) -> float | None:
    m = re.fullmatch(r"(\d+)([smh]?)", text.strip())
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _hook(h: dict, lsm: bool) -> tuple[str, str, list[str] | None, str | None]:
    """(kind, key, file operations, event type) of a kprobe or LSM hook; kind '' when not observed."""
    call = str(h.get("hook" if lsm else "call", ""))
    key = _call_key(call)
    if lsm and key == "file_open":
        return "file", "security_file_open", ["open"], "file_access"
    if lsm and key in ("bprm_check_security", "bprm_creds_for_exec"):
        return "exec", key, None, "process_exec"
    if key in _FILE_CALLS:
        return "file", key, _FILE_CALLS[key], "file_access"
    if key in _NET_CALLS:
        return "network", key, None, _NET_CALLS[key]
    if key in _PRIV_CALLS:
        return "privilege", key, _PRIV_CALLS[key], "privilege_change"
    if key in _EXEC_CALLS:
        return "exec", key, None, "process_exec"
    return "", key, None, None


def convert_document(doc: dict, source: str) -> Converted | None:
    """One TracingPolicy (or TracingPolicyNamespaced) -> a siemhub policy and its notes."""
    if not isinstance(doc, dict) or doc.get("kind") not in ("TracingPolicy", "TracingPolicyNamespaced"):
        return None
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    tname = str(meta.get("name") or "tetragon-policy")
    name = _NAME.sub("-", tname).strip("-.") or "tetragon-policy"
    notes: list[str] = []
    scope: dict[str, Any] = {}
    if doc.get("kind") == "TracingPolicyNamespaced":
        if meta.get("namespace"):
            scope["namespaces"] = [str(meta["namespace"])]
        else:
            notes.append("metadata: a namespaced policy without metadata.namespace applies to the namespace it is "
                         "created in; carried over for every process (add namespaces: [...] to the rules)")
    pod_sel = spec.get("podSelector") or {}
    if pod_sel.get("matchLabels"):
        scope["pod_labels"] = {str(k): str(v) for k, v in pod_sel["matchLabels"].items()}
    if pod_sel.get("matchExpressions"):
        notes.append("spec.podSelector.matchExpressions: not carried over: siemhub selects pods by labels that "
                     "must all be present")
    if spec.get("containerSelector"):
        notes.append("spec.containerSelector: not carried over: siemhub selects pods, not containers by name")
    rules: list[dict[str, Any]] = []
    for section, lsm in (("kprobes", False), ("lsmhooks", True)):
        for i, h in enumerate(spec.get(section) or []):
            where = f"spec.{section}[{i}] {h.get('hook' if lsm else 'call')}"
            kind, key, ops, etype = _hook(h, lsm)
            if not kind:
                why = _NOT_OBSERVED.get(key, "no siemhub sensor observes this kernel function")
                notes.append(f"{where}: not carried over: {why}")
                continue
            args = {int(a.get("index", 0)): str(a.get("type", "")) for a in h.get("args") or []}
            if lsm and 0 not in args:
                args[0] = "file"
            selectors = h.get("selectors") or [{}]
            for j, s in enumerate(selectors):
                w = f"{where}.selectors[{j}]"
                got = _selector(kind, ops, key, args, s, w, notes)
                if got is None:
                    notes.append(f"{w}: selector not carried over (see above)")
                    continue
                match, exc, action, rate = got
                match = {"types": [etype], **match, **scope}
                rule: dict[str, Any] = {"name": _NAME.sub("-", f"{key}-{j}"), "match": match}
                if exc:
                    rule["except"] = exc
                rule["action"] = action
                if rate:
                    rule["rate_limit"] = rate
                rules.append(rule)
    for section in ("tracepoints", "uprobes", "usdts", "fentries"):
        for i, h in enumerate(spec.get(section) or []):
            notes.append(f"spec.{section}[{i}]: not carried over: siemhub policies select sensor events; "
                         f"{section} name kernel or program internals no siemhub sensor reports")
    if not rules:
        notes.append("no rule could be carried over: no siemhub policy written")
        return Converted(name, source, {}, notes)
    desc = (meta.get("annotations") or {}).get("description") or f"imported from Tetragon TracingPolicy {tname}"
    pol = {"name": name, "description": str(desc), "rules": rules}
    _validate(pol, notes)
    return Converted(name, source, pol, notes)


def _validate(pol: dict, notes: list[str]) -> None:
    """Load the policy as the agent would; a rule the engine refuses to enforce becomes post, said why."""
    import tempfile
    from pathlib import Path

    for _ in range(len(pol["rules"]) + 1):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "p.yaml"
            path.write_text(yaml.safe_dump(pol, sort_keys=False))
            try:
                policy_mod.PolicyEngine(policy_mod.load_files([str(path)]), block_support=lambda: (False, "import"))
                return
            except policy_mod.PolicyError as exc:
                problem = exc.problems[0] if exc.problems else str(exc)
                m = re.search(r"rules\[(\d+)\]", problem)
                if not m:
                    raise
                r = pol["rules"][int(m.group(1))]
                if r["action"] not in ("sigkill", "block"):
                    raise
                reason = problem.split(": ", 2)[-1]
                notes.append(f"rule {r['name']}: action {r['action']} carried over as post (detection only): "
                             f"{reason}")
                r["action"] = "post"


def convert_text(text: str, source: str) -> list[Converted]:
    out = []
    for doc in yaml.safe_load_all(text):
        c = convert_document(doc, source)
        if c is not None:
            out.append(c)
    return out
