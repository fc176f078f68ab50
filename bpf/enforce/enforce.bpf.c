/* Enforce sensor: SIGKILL decided in the kernel from a per-task identity recorded at exec.
 *
 * Identity: at every exec the program computes which sigkill rules' `binaries` the new image matches
 * (`task_class`, tgid -> rule bits; children inherit it at fork; it goes at exit):
 *   - the executable's inode and the inodes of its directories up to SH_ENF_DEPTH levels (`bin_ino`:
 *     exact paths and `dir/*` resolved to (device, inode) by user space: a binary reached through a
 *     symlink or a relative path is still found);
 *   - the filename given to execve when absolute (`path_rules`, an LPM trie: `dir/*` prefixes and exact
 *     paths, so a script run by its path is found although the image is its interpreter's); a relative
 *     filename without a leading '..' is under the cwd, whose directories are looked up in `bin_ino` too;
 *   - the name (task comm, set from the filename's last component: `name_rules`).
 * The hot paths never compare strings: one hash lookup of the task's bits, then what the rule needs.
 *   exec      sched_process_exec: bits & exec_rules -> SIGKILL before the new image runs an instruction
 *             (the signal is fatal on the way back to user space).
 *   open      sys_exit_open/openat/openat2/creat of a task with bits: the opened file's inode and its
 *             directories in `file_ino`, the access mode -> SIGKILL before the syscall returns (the
 *             descriptor is never seen, not a byte read).
 *   connect   sys_enter_connect: destination in `conn_cidrs` (LPM) and `conn_ports` -> SIGKILL; the same
 *             decision in the cgroup connect4/connect6 hooks refuses the connect itself (EPERM before
 *             any packet), so the peer sees no connection at all.
 * Each kill sends one sh_msg_enforce. Rule tables are replaced by user space at run time.
 */
#include "siemhub.h"
#include "sh_bpf.h"

#ifndef SH_RINGBUF_PAGES
#define SH_RINGBUF_PAGES 64
#endif
#define SH_ENF_DEPTH 16                    /* directories walked above a file */
#define SH_NAME_COMPONENT 32
#define SH_AF_INET 2
#define SH_AF_INET6 10

struct comm16 {
	char c[16];
};
struct ino_key {
	u64 ino;
	u32 dev;
	u32 pad;
};
struct ino_val {
	u64 rules;
	u32 entry;                         /* index of the path entry in user space's table */
	u32 pad;
};
struct path_key {
	u32 prefixlen;                     /* bits */
	char data[256];
};
struct cidr_key {
	u32 prefixlen;
	u8 addr[16];                       /* IPv6, or IPv4 as ::ffff:a.b.c.d */
};
/* masks of rules by kind, set by user space */
struct masks {
	u64 exec;                          /* exec rules */
	u64 open_read;                     /* open rules that forbid reading */
	u64 open_write;                    /* open rules that forbid writing */
	u64 conn;                          /* connect rules */
	u64 conn_any_cidr;                 /* connect rules without cidrs */
	u64 conn_any_port;                 /* connect rules without ports */
	u64 conn_any_binary;               /* connect rules without binaries */
	u64 on;                            /* any rule at all */
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
BPF_HASH(task_class, u32, u64, 65536);
BPF_HASH(bin_ino, struct ino_key, struct ino_val, 4096);   /* binaries: executables and their directories */
BPF_HASH(file_ino, struct ino_key, struct ino_val, 4096);  /* open rules: files and directories */
BPF_LPM_TRIE(path_rules, struct path_key, u64, 1024);
BPF_HASH(name_rules, struct comm16, u64, 1024);
BPF_LPM_TRIE(conn_cidrs, struct cidr_key, u64, 1024);
BPF_HASH(conn_ports, u32, u64, 1024);
BPF_ARRAY(rule_masks, struct masks, 1);
BPF_PERCPU_ARRAY(path_scratch, struct path_key, 1);
BPF_PERCPU_ARRAY(lost, u64, 2);            /* 0: messages the ring buffer could not take, 1: task_class full */
BPF_PERCPU_ARRAY(killed, u64, 1);

static __always_inline struct masks *masks(void)
{
	u32 zero = 0;
	return rule_masks.lookup(&zero);
}

static __always_inline void bump_lost(u32 k)
{
	u64 *n = lost.lookup(&k);
	if (n)
		*n += 1;
}

/* `files`: look in file_ino (open rules' paths), else in bin_ino (binaries); a constant at every call */
static __always_inline u64 ino_bits(void *inode, u32 *entry, int files)
{
	if (!inode)
		return 0;
	struct ino_key k = {};
	k.ino = rd_u64(inode, OFF_INODE_I_INO);
	k.dev = rd_u32(rd_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV);
	struct ino_val *v = files ? file_ino.lookup(&k) : bin_ino.lookup(&k);
	if (!v)
		return 0;
	*entry = v->entry;
	return v->rules;
}

/* Rule bits of a dentry and its directories (up to SH_ENF_DEPTH levels). `depth`, `entry`: where the
 * first match was found; `names`, when given, receives the components below it, leaf first. */
static __always_inline u64 dentry_bits(void *dentry, u32 *entry, u8 *depth, char *names, int files)
{
	u64 bits = 0;
	u8 found = 0;
#pragma unroll
	for (int i = 0; i < SH_ENF_DEPTH; i++) {
		if (!dentry)
			break;
		u32 e = 0;
		u64 b = ino_bits(rd_ptr(dentry, OFF_DENTRY_INODE), &e, files);
		if (b && !found) {
			found = 1;
			*entry = e;
			*depth = i;
		}
		bits |= b;
		if (names && !found && i < SH_ENF_NAMES / SH_NAME_COMPONENT)
			bpf_probe_read_kernel_str(&names[i * SH_NAME_COMPONENT], SH_NAME_COMPONENT,
						  rd_ptr(dentry, OFF_DENTRY_NAME + OFF_QSTR_NAME));
		void *parent = rd_ptr(dentry, OFF_DENTRY_PARENT);
		if (parent == dentry)
			break;
		dentry = parent;
	}
	return bits;
}

static __always_inline struct sh_msg_enforce *begin(u8 kind, u64 rules)
{
	struct sh_msg_enforce *m = events.ringbuf_reserve(sizeof(struct sh_msg_enforce));
	if (!m) {
		bump_lost(0);
		return 0;
	}
	__builtin_memset(m, 0, sizeof(*m));
	u64 pid_tgid = bpf_get_current_pid_tgid();
	void *task = (void *)bpf_get_current_task();
	m->hdr.type = SH_MSG_ENFORCE;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = pid_tgid >> 32;
	m->tid = (u32)pid_tgid;
	m->start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	m->kind = kind;
	m->rules = rules;
	u32 zero = 0;
	u64 *k = killed.lookup(&zero);
	if (k)
		*k += 1;
	return m;
}

/* --- identity, recorded at exec -------------------------------------------------------------------- */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	struct masks *mk = masks();
	if (!mk || !mk->on)
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	void *task = (void *)bpf_get_current_task();
	u64 bits = 0;
	u32 entry = 0;
	u8 depth = 0;
	/* the executable and its directories */
	void *mm = rd_ptr(task, OFF_TASK_MM);
	void *exe = mm ? rd_ptr(mm, OFF_MM_EXE_FILE) : 0;
	if (exe)
		bits |= dentry_bits(rd_ptr(exe, OFF_FILE_F_PATH + OFF_PATH_DENTRY), &entry, &depth, 0, 0);
	/* the filename as given */
	u32 zero = 0;
	struct path_key *pk = path_scratch.lookup(&zero);
	if (pk) {
		__builtin_memset(pk->data, 0, sizeof(pk->data));
		u16 loc = args->data_loc_filename & 0xFFFF;
		int n = bpf_probe_read_kernel_str(pk->data, sizeof(pk->data), (char *)args + loc);
		if (n > 0 && pk->data[0] == '/') {
			pk->prefixlen = n * 8;  /* with the NUL: an exact entry matches only the whole name */
			u64 *pb = path_rules.lookup(pk);
			if (pb)
				bits |= *pb;
		} else if (n > 0 && !(pk->data[0] == '.' && pk->data[1] == '.')) {
			/* relative: the file is under the cwd unless the name climbs out (checked: a leading "..";
			 * a ".." further on is not, and is documented) */
			void *fs = rd_ptr(task, OFF_TASK_FS);
			u32 e2 = 0;
			u8 d2 = 0;
			bits |= dentry_bits(rd_ptr(fs, OFF_FS_PWD + OFF_PATH_DENTRY), &e2, &d2, 0, 0);
		}
	}
	/* the name */
	struct comm16 comm = {};
	bpf_get_current_comm(&comm.c, sizeof(comm.c));
	u64 *nb = name_rules.lookup(&comm);
	if (nb)
		bits |= *nb;

	if (bits) {
		if (task_class.update(&tgid, &bits) != 0)
			bump_lost(1);
	} else {
		task_class.delete(&tgid);  /* an image that matched no rule replaces one that may have */
	}
	u64 hit = bits & mk->exec;
	if (hit) {
		bpf_send_signal(9);
		struct sh_msg_enforce *m = begin(SH_ENF_EXEC, hit);
		if (m) {
			if (pk)
				bpf_probe_read_kernel_str(m->names, sizeof(m->names), pk->data);
			events.ringbuf_submit(m, 0);
		}
	}
	return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	/* a new process runs its parent's image: it inherits the parent's bits */
	u32 parent = bpf_get_current_pid_tgid() >> 32;
	u64 *bits = task_class.lookup(&parent);
	if (!bits)
		return 0;
	u64 b = *bits;
	void *child = (void *)ctx->args[1];
	u32 pid = rd_u32(child, OFF_TASK_PID);
	u32 tgid = rd_u32(child, OFF_TASK_TGID);
	if (pid != tgid)
		return 0;  /* a thread shares its process' entry */
	if (task_class.update(&tgid, &b) != 0)
		bump_lost(1);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!task_class.lookup(&tgid))
		return 0;
	void *task = (void *)bpf_get_current_task();
	if (rd_u32(rd_ptr(task, OFF_TASK_SIGNAL), OFF_SIGNAL_LIVE) != 0)
		return 0;
	task_class.delete(&tgid);
	return 0;
}

/* --- opens ----------------------------------------------------------------------------------------- */

static __always_inline void *fd_file(void *task, u64 fd)
{
	void *files = rd_ptr(task, OFF_TASK_FILES);
	void *fdt = rd_ptr(files, OFF_FILES_FDT);
	void **fdarr = rd_ptr(fdt, OFF_FDTABLE_FD);
	void *file = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fdarr[fd & 0xFFFFF]);
	return file;
}

static __always_inline int on_open(long ret)
{
	if (ret < 0)
		return 0;
	struct masks *mk = masks();
	if (!mk || !(mk->open_read | mk->open_write))
		return 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 *cls = task_class.lookup(&tgid);
	if (!cls)
		return 0;
	u64 cand = *cls & (mk->open_read | mk->open_write);
	if (!cand)
		return 0;
	void *task = (void *)bpf_get_current_task();
	void *file = fd_file(task, ret);
	if (!file)
		return 0;
	u32 fmode = rd_u32(file, OFF_FILE_F_MODE);
	u16 acc = (fmode & 1 ? 1 : 0) | (fmode & 2 ? 2 : 0);  /* FMODE_READ, FMODE_WRITE */
	u64 ops = (acc & 1 ? mk->open_read : 0) | (acc & 2 ? mk->open_write : 0);
	if (!(cand & ops))
		return 0;
	u32 entry = 0;
	u8 depth = 0;
	u64 hit = cand & ops & dentry_bits(rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY), &entry, &depth, 0, 1);
	if (!hit)
		return 0;
	bpf_send_signal(9);
	struct sh_msg_enforce *m = begin(SH_ENF_OPEN, hit);
	if (!m)
		return 0;
	m->acc = acc;
	u32 e = 0;
	u8 d = 0;
	dentry_bits(rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY), &e, &d, m->names, 1);
	m->entry = e;
	m->depth = d;
	events.ringbuf_submit(m, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
	return on_open(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat2)
{
	return on_open(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
	return on_open(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_creat)
{
	return on_open(args->ret);
}

/* --- connects -------------------------------------------------------------------------------------- */

/* The connect rules a destination (IPv6 or v4-mapped address, port) and this task match. */
static __always_inline u64 conn_hit(const u8 *addr16, u16 port, u32 tgid)
{
	struct masks *mk = masks();
	if (!mk || !mk->conn)
		return 0;
	struct cidr_key ck = {.prefixlen = 128};
	__builtin_memcpy(ck.addr, addr16, 16);
	u64 *cb = conn_cidrs.lookup(&ck);
	u32 p = port;
	u64 *pb = conn_ports.lookup(&p);
	u64 hit = mk->conn & ((cb ? *cb : 0) | mk->conn_any_cidr) & ((pb ? *pb : 0) | mk->conn_any_port);
	if (!hit)
		return 0;
	u64 *cls = task_class.lookup(&tgid);
	return hit & ((cls ? *cls : 0) | mk->conn_any_binary);
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	struct masks *mk = masks();
	if (!mk || !mk->conn || !args->uservaddr)
		return 0;
	u16 sa[2] = {};
	if (bpf_probe_read_user(sa, sizeof(sa), args->uservaddr) != 0)
		return 0;
	u8 addr[16] = {};
	if (sa[0] == SH_AF_INET) {
		addr[10] = 0xff;
		addr[11] = 0xff;
		bpf_probe_read_user(&addr[12], 4, (const char *)args->uservaddr + 4);
	} else if (sa[0] == SH_AF_INET6) {
		bpf_probe_read_user(addr, 16, (const char *)args->uservaddr + 8);
	} else {
		return 0;
	}
	u16 port = __builtin_bswap16(sa[1]);
	u64 hit = conn_hit(addr, port, bpf_get_current_pid_tgid() >> 32);
	if (!hit)
		return 0;
	bpf_send_signal(9);
	struct sh_msg_enforce *m = begin(SH_ENF_CONNECT, hit);
	if (m) {
		m->family = sa[0];
		m->port = port;
		if (sa[0] == SH_AF_INET)
			__builtin_memcpy(m->addr, &addr[12], 4);
		else
			__builtin_memcpy(m->addr, addr, 16);
		events.ringbuf_submit(m, 0);
	}
	return 0;
}

/* The cgroup hooks (attached to the root of the cgroup v2 hierarchy by user space, through a BPF link
 * that goes with the agent): refuse the connect itself, so the SYN is never sent. 0: refuse (EPERM). */
int enforce_connect4(struct bpf_sock_addr *ctx)
{
	u8 addr[16] = {};
	addr[10] = 0xff;
	addr[11] = 0xff;
	u32 ip = ctx->user_ip4;
	__builtin_memcpy(&addr[12], &ip, 4);
	u16 port = __builtin_bswap16((u16)ctx->user_port);
	return conn_hit(addr, port, bpf_get_current_pid_tgid() >> 32) ? 0 : 1;
}

int enforce_connect6(struct bpf_sock_addr *ctx)
{
	u8 addr[16] = {};
	u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
	__builtin_memcpy(&addr[0], &w0, 4);
	__builtin_memcpy(&addr[4], &w1, 4);
	__builtin_memcpy(&addr[8], &w2, 4);
	__builtin_memcpy(&addr[12], &w3, 4);
	u16 port = __builtin_bswap16((u16)ctx->user_port);
	return conn_hit(addr, port, bpf_get_current_pid_tgid() >> 32) ? 0 : 1;
}
