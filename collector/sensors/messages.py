"""Python mirrors of the C message structs in bpf/include/siemhub.h.

One struct.Struct per C struct, little-endian with explicit padding ('x'), so unpack_from works on the
raw ring-buffer bytes without a ctypes object per event. tests/unit/sensors/test_messages_layout.py compiles
the header with gcc and checks every size and offset below against it.
"""

from __future__ import annotations

import struct

MSG_EXEC, MSG_FORK, MSG_EXIT = 1, 2, 3

EXEC_TRUNC_FILENAME = 1 << 0
EXEC_TRUNC_ARGS = 1 << 1
EXEC_TRUNC_CWD = 1 << 2
EXEC_ARGS_FAULT = 1 << 3

# struct sh_msg_hdr { u8 type; u8 pad0; u16 pad1; u32 size; u64 ktime; }
HDR = struct.Struct("<BxxxIQ")
HDR_FIELDS = {"type": 0, "size": 4, "ktime": 8}

# struct sh_msg_exec: hdr, 12 x u32, 6 x u64, 8 x u32, 8 x u16, char comm[16]
EXEC = struct.Struct("<BxxxIQ" "12I" "6Q" "8I" "6H4x" "16s")
EXEC_FIELDS = {
    "pid": 16, "tid": 20, "ppid": 24, "old_tid": 28, "uid": 32, "gid": 36, "euid": 40, "egid": 44,
    "auid": 48, "flags": 52, "exe_uid": 56, "exe_gid": 60, "start_boottime": 64,
    "parent_start_boottime": 72, "cgroup_id": 80, "cap_effective": 88, "cap_permitted": 96,
    "exe_ino": 104, "exe_dev": 112, "ns_mnt": 116, "ns_pid": 120, "ns_net": 124, "ns_user": 128,
    "ns_uts": 132, "ns_ipc": 136, "ns_cgroup": 140, "exe_mode": 144, "filename_len": 146,
    "args_len": 148, "cwd_len": 150, "cwd_depth": 152, "cgroup_len": 154, "comm": 160,
}

# struct sh_msg_fork: hdr, u32 pid, u32 ppid, u64 start_boottime
FORK = struct.Struct("<BxxxIQ" "2I" "Q")
FORK_FIELDS = {"pid": 16, "ppid": 20, "start_boottime": 24}

# struct sh_msg_exit: hdr, u32 pid, u32 tid, u32 exit_code, u32 pad, u64 start_boottime
EXIT = struct.Struct("<BxxxIQ" "3Ix" "xxx" "Q")
EXIT_FIELDS = {"pid": 16, "tid": 20, "exit_code": 24, "start_boottime": 32}

MSG_NET, MSG_PRIV = 10, 20

# struct sh_msg_net: hdr, u32 pid, u32 tid, 5 x u64, u8 kind, u8 flags, u16 family, u16 local_port,
# u16 remote_port, u8 local_addr[16], u8 remote_addr[16]
NET = struct.Struct("<BxxxIQ" "2I" "5Q" "BBHHH" "16s16s")
NET_FIELDS = {
    "pid": 16, "tid": 20, "start_boottime": 24, "sock": 32, "bytes_sent": 40, "bytes_received": 48,
    "open_ktime": 56, "kind": 64, "flags": 65, "family": 66, "local_port": 68, "remote_port": 70,
    "local_addr": 72, "remote_addr": 88,
}
NET_CONNECT, NET_ACCEPT, NET_CLOSE = 1, 2, 3
NET_OUTBOUND = 1 << 0
NET_DNS = 4  # index of DNS messages in the network program's `lost` map

# struct sh_msg_dns: hdr, u32 pid, u32 tid, u64 start_boottime, u32 len, u16 family, u16 local_port,
# u16 remote_port, u16 payload_len, u8 call, u8 index, u8 flags, u8 pad, u8 local_addr[16],
# u8 remote_addr[16], u8 payload[272]
MSG_DNS = 11
DNS_PAYLOAD = 272
DNS = struct.Struct("<BxxxIQ" "2IQ" "I4H" "BBBx" "16s16s" f"{DNS_PAYLOAD}s")
DNS_FIELDS = {
    "pid": 16, "tid": 20, "start_boottime": 24, "len": 32, "family": 36, "local_port": 38, "remote_port": 40,
    "payload_len": 42, "call": 44, "index": 45, "flags": 46, "local_addr": 48, "remote_addr": 64, "payload": 80,
}
DNS_SENDTO, DNS_SENDMSG, DNS_SENDMMSG, DNS_WRITE = 1, 2, 3, 4
DNS_MORE_IOV, DNS_UNREADABLE = 1 << 0, 1 << 1

# struct sh_msg_priv: hdr, u32 pid, u32 tid, u64 start_boottime, u32 op, u32 target_pid, s64 result,
# u64 arg, 12 x u32 credentials, 3 x u64 capabilities, char name[64], source[256], target[256]
PRIV = struct.Struct("<BxxxIQ" "2IQ" "2Iq" "Q" "12I" "3Q" "64s256s256s")
PRIV_FIELDS = {
    "pid": 16, "tid": 20, "start_boottime": 24, "op": 32, "target_pid": 36, "result": 40, "arg": 48,
    "old_uid": 56, "old_euid": 60, "old_suid": 64, "old_fsuid": 68, "new_uid": 72, "new_euid": 76,
    "new_suid": 80, "new_fsuid": 84, "old_gid": 88, "old_egid": 92, "new_gid": 96, "new_egid": 100,
    "old_cap_effective": 104, "new_cap_effective": 112, "new_cap_permitted": 120, "name": 128,
    "source": 192, "target": 448,
}
(PRIV_SETUID, PRIV_SETGID, PRIV_SETREUID, PRIV_SETREGID, PRIV_SETRESUID, PRIV_SETRESGID, PRIV_SETFSUID,
 PRIV_SETFSGID, PRIV_CAPSET, PRIV_PTRACE, PRIV_MODULE, PRIV_BPF_LOAD, PRIV_MOUNT, PRIV_MEMFD_EXEC) = range(1, 15)

SIZES = {"sh_msg_hdr": HDR.size, "sh_msg_exec": EXEC.size, "sh_msg_fork": FORK.size, "sh_msg_exit": EXIT.size,
         "sh_msg_net": NET.size, "sh_msg_priv": PRIV.size}
FIELDS = {"sh_msg_hdr": HDR_FIELDS, "sh_msg_exec": EXEC_FIELDS, "sh_msg_fork": FORK_FIELDS,
          "sh_msg_exit": EXIT_FIELDS, "sh_msg_net": NET_FIELDS, "sh_msg_priv": PRIV_FIELDS}

# --- file sensor (struct sh_msg_file) ---
MSG_FILE = 30
# hdr, u32 pid, u32 tid, u64 start_boottime, s64 result, u64 ino, 10 x u32 (dev, uid, gid, op, flags,
# mode, arg_uid, arg_gid, kflags, rule), u16 path_len, u16 target_len, u32 pad, char comm[16]
FILE = struct.Struct("<BxxxIQ" "2I" "Q" "q" "Q" "10I" "2H4x" "16s")
FILE_FIELDS = {
    "pid": 16, "tid": 20, "start_boottime": 24, "result": 32, "ino": 40, "dev": 48, "uid": 52, "gid": 56,
    "op": 60, "flags": 64, "mode": 68, "arg_uid": 72, "arg_gid": 76, "kflags": 80, "rule": 84,
    "path_len": 88, "target_len": 90, "comm": 96,
}
FILE_OPEN, FILE_WRITE, FILE_UNLINK, FILE_RENAME, FILE_CHMOD, FILE_CHOWN, FILE_TRUNCATE = range(1, 8)
FILE_TRUNC_PATH, FILE_TRUNC_TARGET, FILE_RELATIVE, FILE_RELATIVE_TARGET = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FILE_KILLED, FILE_CREATED, FILE_BY_FD, FILE_NO_PATH = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FILE_PATH_MAX, FILE_KEY_MAX = 1024, 256
# enforce masks (the watch map's value), by the operation names of sensors.file.enforce
FILE_ENF = {"open_read": 1 << 0, "open_write": 1 << 1, "write": 1 << 2, "unlink": 1 << 3, "rename": 1 << 4,
            "chmod": 1 << 5, "chown": 1 << 6, "truncate": 1 << 7}
SIZES["sh_msg_file"] = FILE.size
FIELDS["sh_msg_file"] = FILE_FIELDS
SIZES["sh_msg_dns"] = DNS.size
FIELDS["sh_msg_dns"] = DNS_FIELDS


# UDP flows (network sensor): struct sh_msg_udp, and the key and value of the `udp_flows` map
MSG_UDP = 12
UDP = struct.Struct("<BxxxIQ" "2IQQ" "BBHHH" "16s16s")
UDP_FIELDS = {"pid": 16, "tid": 20, "start_boottime": 24, "sock": 32, "kind": 40, "flags": 41, "family": 42,
              "local_port": 44, "remote_port": 46, "local_addr": 48, "remote_addr": 64}
UDP_NEW, UDP_CLOSE, UDP_EXIT = 1, 2, 3
UDP_SENT_FIRST = 1 << 0
UDP_KEY = struct.Struct("<QIHH16s")
UDP_KEY_FIELDS = {"sock": 0, "pid": 8, "family": 12, "port": 14, "addr": 16}
UDP_VAL = struct.Struct("<6Q")
UDP_VAL_FIELDS = {"bytes_sent": 0, "bytes_received": 8, "datagrams_sent": 16, "datagrams_received": 24,
                  "first_ktime": 32, "last_ktime": 40}
SIZES.update({"sh_msg_udp": UDP.size, "sh_udp_key": UDP_KEY.size, "sh_udp_val": UDP_VAL.size})
FIELDS.update({"sh_msg_udp": UDP_FIELDS, "sh_udp_key": UDP_KEY_FIELDS, "sh_udp_val": UDP_VAL_FIELDS})


# Enforce sensor: struct sh_msg_enforce
MSG_ENFORCE = 40
ENF_EXEC, ENF_OPEN, ENF_CONNECT = 1, 2, 3
ENF_NAMES = 256
ENFORCE = struct.Struct("<BxxxIQ" "2IQQ" "IBBHHHI" f"16s{ENF_NAMES}s")
ENFORCE_FIELDS = {"pid": 16, "tid": 20, "start_boottime": 24, "rules": 32, "entry": 40, "kind": 44, "depth": 45,
                  "family": 46, "port": 48, "acc": 50, "addr": 56, "names": 72}
SIZES["sh_msg_enforce"] = ENFORCE.size
FIELDS["sh_msg_enforce"] = ENFORCE_FIELDS
