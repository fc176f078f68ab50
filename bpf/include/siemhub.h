/* Messages the BPF programs send to user space through the ring buffer.
 *
 * Every struct here has exactly one Python mirror (collector/sensors/messages.py) and
 * tests/unit/test_messages_layout.py compiles this header with gcc and compares sizes and offsets,
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

#endif
