"""File, network and privilege events as Tetragon writes the same observations: `process_kprobe`.

Tetragon reports these through kprobes named in its TracingPolicies; its own FIM, network and
privilege policies (examples/quickstart/file_monitoring.yaml, network_egress_cluster_enforce.yaml,
examples/policylibrary/privileges/*.yaml) hook the functions below, and their events carry
`function_name`, `args` (KprobeArgument: file_arg, path_arg, sock_arg, int_arg...), `return`,
`action` and `policy_name`. siemhub watches syscalls through tracepoints instead, so each event is
written as the kprobe a Tetragon policy for the same observation would have produced:

  file_access open / write     security_file_permission  [file_arg{path}, int_arg MAY_READ 4 | MAY_WRITE 2]
  file_access truncate          security_path_truncate    [path_arg{path}]
  file_access unlink            security_path_unlink      [path_arg{path}]
  file_access rename            security_path_rename      [path_arg{old}, path_arg{new}]
  file_access chmod             security_path_chmod       [path_arg{path}, int_arg mode]
  file_access chown             security_path_chown       [path_arg{path}, int_arg uid, int_arg gid]
  network_connect               tcp_connect               [sock_arg]
  network_accept                inet_csk_accept           return sock_arg
  network_close                 tcp_close                 [sock_arg]
  privilege_change set*id       __sys_set*id              [int_arg new id]
  privilege_change capset       security_capset           [cred_arg{effective: gained}]
  privilege_change ptrace       __x64_sys_ptrace          [int_arg request, int_arg pid]
  privilege_change module_load  do_init_module            [module_arg{name}]
  privilege_change bpf_load     bpf_check                 [bpf_attr_arg{ProgName}]
  privilege_change mount        security_sb_mount         [string_arg source, path_arg{target}, string_arg type]

docs/tetragon-format.md lists what does not map. `kprobe(e)` returns None for what has no kprobe
shape (the caller then writes the siemhub_<type> wrapper).
"""

from __future__ import annotations

from typing import Any

from siemhub.collector.core.event import Event, File, Network, Privilege

POST, SIGKILL, OVERRIDE = "KPROBE_ACTION_POST", "KPROBE_ACTION_SIGKILL", "KPROBE_ACTION_OVERRIDE"
MAY_WRITE, MAY_READ = 2, 4
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}
_PATH_OPS = {"truncate": "security_path_truncate", "unlink": "security_path_unlink"}
_SETID = {"setuid": "__sys_setuid", "setgid": "__sys_setgid", "setreuid": "__sys_setreuid",
          "setregid": "__sys_setregid", "setresuid": "__sys_setresuid", "setresgid": "__sys_setresgid",
          "setfsuid": "__sys_setfsuid", "setfsgid": "__sys_setfsgid"}
_PTRACE_REQUESTS = {"PTRACE_ATTACH": 16, "PTRACE_SEIZE": 0x4206}
_NO_ARGS: list = []


def _file(f: File) -> tuple[str, list, Any] | None:
    op = f.operation
    if op in ("open", "write"):
        write = op == "write" or bool(_WRITE_FLAGS.intersection(f.flags))
        return "security_file_permission", [{"file_arg": {"path": f.path}},
                                            {"int_arg": MAY_WRITE if write else MAY_READ}], None
    fn = _PATH_OPS.get(op)
    if fn is not None:
        return fn, [{"path_arg": {"path": f.path}}], None
    if op == "rename":
        return "security_path_rename", [{"path_arg": {"path": f.path}}, {"path_arg": {"path": f.target or ""}}], None
    if op == "chmod":
        return "security_path_chmod", [{"path_arg": {"path": f.path}}, {"int_arg": f.mode or 0}], None
    if op == "chown":
        return "security_path_chown", [{"path_arg": {"path": f.path}}, {"int_arg": -1 if f.uid is None else f.uid},
                                       {"int_arg": -1 if f.gid is None else f.gid}], None
    return None


def sock(n: Network) -> dict[str, Any]:
    """KprobeSock as Tetragon fills it: saddr/sport are the socket's own end, daddr/dport the peer."""
    local = (n.source_ip, n.source_port) if n.direction != "inbound" else (n.destination_ip, n.destination_port)
    peer = (n.destination_ip, n.destination_port) if n.direction != "inbound" else (n.source_ip, n.source_port)
    tcp = n.protocol == "tcp"
    out: dict[str, Any] = {"family": "AF_INET6" if n.family == "ipv6" else "AF_INET",
                           "type": "SOCK_STREAM" if tcp else "SOCK_DGRAM",
                           "protocol": "IPPROTO_TCP" if tcp else "IPPROTO_UDP"}
    for k, v in (("saddr", local[0]), ("daddr", peer[0]), ("sport", local[1]), ("dport", peer[1])):
        if v is not None:
            out[k] = v
    return out


def _network(etype: str, n: Network) -> tuple[str, list, Any] | None:
    if n.protocol != "tcp":
        return None  # dns_query, UDP flows: no kprobe counterpart
    if etype == "network_connect":
        return "tcp_connect", [{"sock_arg": {**sock(n), "state": "TCP_SYN_SENT"}}], None
    if etype == "network_accept":
        return "inet_csk_accept", _NO_ARGS, {"sock_arg": sock(n)}
    if etype == "network_close":
        return "tcp_close", [{"sock_arg": sock(n)}], None
    return None


def _privilege(p: Privilege) -> tuple[str, list, Any] | None:
    op = p.operation
    fn = _SETID.get(op)
    if fn is not None:
        new = p.new_gid if op.endswith("gid") else p.new_uid
        return fn, [{"int_arg": -1 if new is None else new}], None
    if op == "capset":
        return "security_capset", [{"cred_arg": {"effective": list(p.new_caps)}}], None
    if op == "ptrace":
        req = _PTRACE_REQUESTS.get(p.name or "")
        if req is None and (p.name or "").isdigit():
            req = int(p.name)
        return "__x64_sys_ptrace", [{"int_arg": -1 if req is None else req},
                                    {"int_arg": -1 if p.target_pid is None else p.target_pid}], None
    if op == "module_load":
        return "do_init_module", [{"module_arg": {"name": p.name or ""}}], None
    if op == "bpf_load":
        return "bpf_check", [{"bpf_attr_arg": {"ProgName": p.name or ""}}], None
    if op == "mount":
        return "security_sb_mount", [{"string_arg": p.source or ""}, {"path_arg": {"path": p.target or ""}},
                                     {"string_arg": p.name or ""}], None
    return None


def shape(e: Event) -> tuple[str, list, Any] | None:
    """(function_name, args, return argument or None) of the kprobe that would have seen `e`."""
    if e.file is not None:
        return _file(e.file)
    if e.network is not None:
        t = e.type
        if t == "policy_action":  # the event type the policy matched is not kept: infer it from the body
            t = "network_close" if e.network.bytes_sent is not None else "network_connect"
        return _network(t, e.network)
    if e.privilege is not None:
        return _privilege(e.privilege)
    return None


def kprobe(e: Event, process_of) -> dict[str, Any] | None:
    """The ProcessKprobe body of a file, network or privilege event, or of a policy_action whose policy
    made the kernel act (sigkill, block); None when it has no kprobe shape. A post/notify policy_action
    is None too: the event it matched is written as a kprobe already, with the policy's name."""
    if e.process is None:
        return None
    pa = e.policy
    if e.type == "policy_action":
        if pa is None or not pa.enforced or pa.action not in ("sigkill", "block"):
            return None
    found = shape(e)
    if found is None:
        return None
    fn, args, ret = found
    body: dict[str, Any] = {"process": process_of(e.process)}
    if e.parent is not None:
        body["parent"] = process_of(e.parent)
    body["function_name"] = fn
    body["args"] = args
    result = e.file.result if e.file is not None else (e.privilege.result if e.privilege is not None else None)
    if ret is not None:
        body["return"] = ret
    elif result is not None:
        # the hooked functions return 0 or a negative errno: a syscall's fd or count means it was allowed
        body["return"] = {"int_arg": 0 if result >= 0 else result}
    if pa is not None and e.type == "policy_action":
        body["action"] = SIGKILL if pa.action == "sigkill" else OVERRIDE
        body["policy_name"] = pa.policy
    else:
        body["action"] = POST
        name = next((t[7:] for t in e.tags if t.startswith("policy:")), None)
        if name:
            body["policy_name"] = name
    if e.ancestors:
        body["ancestors"] = [process_of(a) for a in e.ancestors]
    return body
