/* Messages the BPF programs send to user space through the ring buffer.
 *
 * Every struct here has exactly one Python mirror (collector/sensors/messages.py) and
 * tests/unit/sensors/test_messages_layout.py compiles this header with gcc and compares sizes and offsets,
 * so a change on one side cannot silently break decoding on the other.
 * All fields are naturally aligned and explicitly padded: the layout is the same for clang -target bpf
 * and for gcc on x86_64.
 */
#ifndef SIEMHUB_H
#define SIEMHUB_H

#include <linux/types.h>

enum sh_msg_type {
	SH_MSG_EXEC = 1,
	SH_MSG_FORK = 2,
	SH_MSG_EXIT = 3,
	SH_MSG_FILE = 30,          /* file sensor (sh_msg_file.op) */
	SH_MSG_NET = 10,           /* network sensor: connect, accept, close (sh_msg_net.kind) */
	SH_MSG_DNS = 11,           /* network sensor: a UDP datagram sent to port 53 (sh_msg_dns) */
	SH_MSG_UDP = 12,           /* network sensor: a UDP flow began, or its socket / process ended (sh_msg_udp) */
	SH_MSG_PRIV = 20,          /* privilege sensor (sh_msg_priv.op) */
	SH_MSG_ENFORCE = 40,       /* enforce sensor: a process killed (sh_msg_enforce.kind) */
};

/* sh_msg_exec.flags */
#define SH_EXEC_TRUNC_FILENAME (1U << 0)
#define SH_EXEC_TRUNC_ARGS     (1U << 1)
#define SH_EXEC_TRUNC_CWD      (1U << 2)
#define SH_EXEC_ARGS_FAULT     (1U << 3)  /* argv could not be read from user memory */

/* Sizes of the variable parts; the sensor may lower them with -D at compile time. */
#ifndef SH_FILENAME_MAX
#define SH_FILENAME_MAX 1024               /* power of two */
#endif
#ifndef SH_ARGS_MAX
#define SH_ARGS_MAX 8192                   /* power of two */
#endif
#ifndef SH_CWD_DEPTH
#define SH_CWD_DEPTH 24                    /* path components walked for cwd */
#endif
#define SH_NAME_MAX 256                    /* one path component, with its NUL */
#define SH_CGROUP_NAME_MAX 128             /* one cgroup directory name, with its NUL */
#define SH_DATA_MAX (SH_FILENAME_MAX + SH_ARGS_MAX + SH_CWD_DEPTH * SH_NAME_MAX + 2 * SH_CGROUP_NAME_MAX)

struct sh_msg_hdr {
	__u8 type;
	__u8 pad0;
	__u16 pad1;
	__u32 size;          /* bytes of the whole message, header included */
	__u64 ktime;         /* bpf_ktime_get_boot_ns() when the event happened */
};

/* Exec: fixed part, then data[] = filename (NUL-terminated) | argv bytes (NUL-separated) |
 * cwd components from the leaf up to the root, each NUL-terminated | cgroup leaf name, NUL |
 * cgroup parent name, NUL (container runtimes name the leaf after the container, the parent after
 * the pod). */
struct sh_msg_exec {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid */
	__u32 tid;
	__u32 ppid;          /* real_parent->tgid */
	__u32 old_tid;       /* tid before exec (differs when a non-leader thread execs) */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 auid;          /* loginuid, (u32)-1 when unset */
	__u32 flags;         /* SH_EXEC_* */
	__u32 exe_uid;       /* owner of the executable's inode */
	__u32 exe_gid;
	__u64 start_boottime;  /* task->start_boottime: when the process (not this image) began */
	__u64 parent_start_boottime;
	__u64 cgroup_id;
	__u64 cap_effective;
	__u64 cap_permitted;
	__u64 exe_ino;       /* inode number of the executable (with exe_dev: identity for filters) */
	__u32 exe_dev;
	__u32 ns_mnt;        /* namespace inode numbers, as in /proc/<pid>/ns/<name> */
	__u32 ns_pid;        /* pid namespace for children (the process' own, unless it unshared) */
	__u32 ns_net;
	__u32 ns_user;
	__u32 ns_uts;
	__u32 ns_ipc;
	__u32 ns_cgroup;
	__u16 exe_mode;      /* i_mode of the executable: setuid/setgid bits */
	__u16 filename_len;  /* bytes of data[] used by the filename, NUL included */
	__u16 args_len;      /* bytes of argv copied */
	__u16 cwd_len;       /* bytes of cwd components */
	__u16 cwd_depth;     /* components walked */
	__u16 cgroup_len;    /* bytes of the two cgroup names */
	__u16 pad2[2];
	char comm[16];
};

struct sh_msg_fork {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* child tgid */
	__u32 ppid;          /* child's real_parent tgid */
	__u64 start_boottime;
};

struct sh_msg_exit {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid */
	__u32 tid;           /* the last thread to exit */
	__u32 exit_code;     /* wait(2) status: (code << 8) | signal | 0x80 core */
	__u32 pad;
	__u64 start_boottime;
};

/* Network: one message per connection event. Addresses are 16 bytes: IPv6, or IPv4 in the first 4.
 * local/remote are the socket's own view; user space turns them into source/destination by direction. */
#define SH_NET_CONNECT 1   /* outbound connection established */
#define SH_NET_ACCEPT  2   /* inbound connection accepted */
#define SH_NET_CLOSE   3   /* a connection seen at connect or accept reached TCP_CLOSE */
#define SH_NET_OUTBOUND (1U << 0)  /* sh_msg_net.flags: the connection was opened by this host */

struct sh_msg_net {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid of the process that connected or accepted */
	__u32 tid;
	__u64 start_boottime;  /* that process' task->start_boottime (cache key) */
	__u64 sock;          /* kernel address of the socket: ties a close to its connect or accept */
	__u64 bytes_sent;    /* close: tcp_sock.bytes_acked (data the peer acknowledged) */
	__u64 bytes_received;  /* close: tcp_sock.bytes_received */
	__u64 open_ktime;    /* close: when the connect or accept was seen */
	__u8 kind;           /* SH_NET_* */
	__u8 flags;          /* SH_NET_OUTBOUND */
	__u16 family;        /* AF_INET 2, AF_INET6 10 */
	__u16 local_port;
	__u16 remote_port;
	__u8 local_addr[16];
	__u8 remote_addr[16];
};

/* DNS: one message per UDP datagram sent to the DNS port (sendto, sendmsg, each of sendmmsg's messages),
 * with a bounded prefix of the payload; user space parses the query. Addresses as in sh_msg_net. */
#define SH_DNS_PAYLOAD 272                 /* bytes of the datagram copied: header (12), the longest name (255), type and class (4) */
#define SH_DNS_SENDTO   1                  /* sh_msg_dns.call: the syscall (send() is sendto) */
#define SH_DNS_SENDMSG  2
#define SH_DNS_SENDMMSG 3
#define SH_DNS_WRITE    4                  /* write() or writev() on a socket connected to the DNS port */
#define SH_DNS_MORE_IOV (1U << 0)          /* sh_msg_dns.flags: the datagram spans several iovecs, only the first is copied */
#define SH_DNS_UNREADABLE (1U << 1)        /* the payload could not be read from user memory */

struct sh_msg_dns {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid of the sender */
	__u32 tid;
	__u64 start_boottime;  /* the process' task->start_boottime (cache key) */
	__u32 len;           /* bytes the process handed over (sendto's len, the first iovec's length) */
	__u16 family;        /* AF_INET 2, AF_INET6 10: of the destination */
	__u16 local_port;    /* 0 when the socket is not bound yet (autobind happens in the send) */
	__u16 remote_port;
	__u16 payload_len;   /* bytes of payload[] copied */
	__u8 call;           /* SH_DNS_SENDTO... */
	__u8 index;          /* sendmmsg: the message's index in the vector */
	__u8 flags;          /* SH_DNS_MORE_IOV... */
	__u8 pad;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u8 payload[SH_DNS_PAYLOAD];
};

/* UDP flows are counted in the kernel (map `udp_flows`, one update per datagram); the ring buffer
 * carries only a flow's start (its key and process, once) and the end of a socket or of a process,
 * after which user space reads the counters (collector/sensors/udp_flows.py). */
#define SH_UDP_NEW   1                     /* sh_msg_udp.kind: a flow's first datagram */
#define SH_UDP_CLOSE 2                     /* close() of a descriptor of a socket with flows (sock) */
#define SH_UDP_EXIT  3                     /* a process with flows exited (pid; sock 0) */
#define SH_UDP_SENT_FIRST (1U << 0)        /* sh_msg_udp.flags: the flow's first datagram was sent by this process */

struct sh_msg_udp {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid */
	__u32 tid;
	__u64 start_boottime;  /* the process' start (cache key) */
	__u64 sock;          /* kernel address of the socket (the flow key's first field) */
	__u8 kind;           /* SH_UDP_* */
	__u8 flags;          /* SH_UDP_SENT_FIRST */
	__u16 family;        /* of the peer address: AF_INET 2, AF_INET6 10 */
	__u16 local_port;    /* host byte order; 0 before the socket is bound */
	__u16 remote_port;   /* host byte order; 0: peer unknown (recv() without an address on an unconnected socket) */
	__u8 local_addr[16];
	__u8 remote_addr[16];
};

/* The key and value of `udp_flows` (user space reads them at a socket's close and every interval). */
struct sh_udp_key {
	__u64 sock;
	__u32 pid;
	__u16 family;
	__u16 port;          /* peer port, network byte order */
	__u8 addr[16];       /* peer address (IPv4 in the first 4 bytes) */
};

struct sh_udp_val {
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 datagrams_sent;
	__u64 datagrams_received;
	__u64 first_ktime;
	__u64 last_ktime;
};

/* Enforce sensor (bpf/enforce/enforce.bpf.c): one message per SIGKILL it sent. `rules`: the sigkill rules
 * that matched (bit i: rule i of collector/sensors/enforce.py's table). */
#define SH_ENF_EXEC    1                   /* sh_msg_enforce.kind: an exec of a forbidden binary */
#define SH_ENF_OPEN    2                   /* an open of a forbidden path by a forbidden binary */
#define SH_ENF_CONNECT 3                   /* a connect to a forbidden destination */
#define SH_ENF_NAMES   256                 /* exec: the filename; open: path components, leaf first, 32 bytes each */

struct sh_msg_enforce {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid */
	__u32 tid;
	__u64 start_boottime;
	__u64 rules;
	__u32 entry;         /* open: the path entry that matched (index in the sensor's table) */
	__u8 kind;           /* SH_ENF_* */
	__u8 depth;          /* open: components between the matched entry and the file */
	__u16 family;        /* connect: AF_INET 2, AF_INET6 10 */
	__u16 port;          /* connect: destination port (host byte order) */
	__u16 acc;           /* open: 1 read, 2 write */
	__u32 pad;
	__u8 addr[16];       /* connect: destination (IPv4 in the first 4 bytes) */
	char names[SH_ENF_NAMES];
};

/* Privilege: one message per operation (sh_msg_priv.op). Credentials before and after for the
 * set*id/capset family; arg and the strings depend on the operation. */
#define SH_PRIV_SETUID    1
#define SH_PRIV_SETGID    2
#define SH_PRIV_SETREUID  3
#define SH_PRIV_SETREGID  4
#define SH_PRIV_SETRESUID 5
#define SH_PRIV_SETRESGID 6
#define SH_PRIV_SETFSUID  7
#define SH_PRIV_SETFSGID  8
#define SH_PRIV_CAPSET    9
#define SH_PRIV_PTRACE    10   /* arg: request (PTRACE_ATTACH / PTRACE_SEIZE), target_pid */
#define SH_PRIV_MODULE    11   /* arg: 0 init_module, 1 finit_module; name: module name when readable */
#define SH_PRIV_BPF_LOAD  12   /* arg: program type; name: program name */
#define SH_PRIV_MOUNT     13   /* arg: mount flags; name: fstype; source, target */
#define SH_PRIV_MEMFD_EXEC 14  /* name: the memfd's name (memfd:NAME) */
#define SH_PRIV_STR 256      /* source and target, with their NUL */
#define SH_PRIV_NAME 64      /* name, with its NUL */

struct sh_msg_priv {
	struct sh_msg_hdr hdr;
	__u32 pid;
	__u32 tid;
	__u64 start_boottime;
	__u32 op;            /* SH_PRIV_* */
	__u32 target_pid;    /* ptrace */
	__s64 result;        /* the syscall's return value (negative errno on failure) */
	__u64 arg;
	__u32 old_uid, old_euid, old_suid, old_fsuid;
	__u32 new_uid, new_euid, new_suid, new_fsuid;
	__u32 old_gid, old_egid, new_gid, new_egid;
	__u64 old_cap_effective;
	__u64 new_cap_effective;
	__u64 new_cap_permitted;
	char name[SH_PRIV_NAME];
	char source[SH_PRIV_STR];
	char target[SH_PRIV_STR];
};

/* File sensor (bpf/file/file.bpf.c). Message: fixed part, then data[] = path, NUL | target, NUL
 * (rename only). Paths are absolute as resolved in the kernel, unless kflags says otherwise. */
#define SH_FILE_PATH_MAX 1024              /* bytes of a reported path, NUL included (power of two) */
#define SH_FILE_KEY_MAX 256                /* bytes of a path compared with the watch list */
#define SH_FILE_OPEN     1
#define SH_FILE_WRITE    2
#define SH_FILE_UNLINK   3
#define SH_FILE_RENAME   4
#define SH_FILE_CHMOD    5
#define SH_FILE_CHOWN    6
#define SH_FILE_TRUNCATE 7
/* sh_msg_file.kflags */
#define SH_FILE_TRUNC_PATH      (1U << 0)  /* deeper or longer than the walk allows: root side missing */
#define SH_FILE_TRUNC_TARGET    (1U << 1)
#define SH_FILE_RELATIVE        (1U << 2)  /* the starting directory (dirfd) could not be resolved */
#define SH_FILE_RELATIVE_TARGET (1U << 3)
#define SH_FILE_KILLED          (1U << 4)  /* an enforce rule sent SIGKILL */
#define SH_FILE_CREATED         (1U << 5)  /* the open created the file (FMODE_CREATED) */
#define SH_FILE_BY_FD           (1U << 6)  /* resolved from the open file, not from a name */
#define SH_FILE_NO_PATH         (1U << 7)  /* empty or unreadable user string */
/* enforce masks (watch value): operations that get SIGKILL */
#define SH_FILE_ENF_OPEN_READ  (1U << 0)
#define SH_FILE_ENF_OPEN_WRITE (1U << 1)
#define SH_FILE_ENF_WRITE      (1U << 2)
#define SH_FILE_ENF_UNLINK     (1U << 3)
#define SH_FILE_ENF_RENAME     (1U << 4)
#define SH_FILE_ENF_CHMOD      (1U << 5)
#define SH_FILE_ENF_CHOWN      (1U << 6)
#define SH_FILE_ENF_TRUNCATE   (1U << 7)

struct sh_msg_file {
	struct sh_msg_hdr hdr;
	__u32 pid;           /* tgid */
	__u32 tid;
	__u64 start_boottime;  /* task->start_boottime: names the process with the cache */
	__s64 result;        /* syscall return value (fd or -errno); 0 for write (reported at entry) */
	__u64 ino;           /* inode of the file, when resolved by file */
	__u32 dev;
	__u32 uid;           /* real uid and gid of the caller */
	__u32 gid;
	__u32 op;            /* SH_FILE_* operation */
	__u32 flags;         /* open flags; unlinkat/fchownat/renameat2/fchmodat2 flags */
	__u32 mode;          /* open (creation) mode, chmod mode */
	__u32 arg_uid;       /* chown owner and group, (u32)-1: unchanged */
	__u32 arg_gid;
	__u32 kflags;        /* SH_FILE_TRUNC_PATH... */
	__u32 rule;          /* enforce rule (1-based) that killed, 0: none */
	__u16 path_len;      /* bytes of data[] used by the path, NUL included */
	__u16 target_len;    /* bytes of the rename target, NUL included */
	__u32 pad;
	char comm[16];
};

#endif
