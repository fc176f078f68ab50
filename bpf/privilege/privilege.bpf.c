/* Privilege sensor: credential changes (set*id, setfs*id, capset), ptrace attach, kernel module loads,
 * bpf() program loads, mount, and exec of a memfd (fileless execution).
 *
 * Syscalls are watched at entry and exit: the entry remembers the arguments and, for the credential
 * family, the credentials before the call (per thread, in `inflight`); the exit reads the credentials
 * after it and the return value. A credential call is reported only when it changed something (uid,
 * euid, suid, fsuid, gid, egid or the effective capabilities); user space grades it.
 * Every struct field is read at an offset resolved from BTF (-DOFF_*).
 */
#include <linux/capability.h>  /* cap_user_header_t, in the capset tracepoint arguments */
#include "siemhub.h"
#include "sh_bpf.h"

#ifndef SH_RINGBUF_PAGES
#define SH_RINGBUF_PAGES 64
#endif
#ifndef SH_MODULES
#define SH_MODULES 1        /* 0: off, 1: module syscall tracepoints, 2: raw sys_exit (no CONFIG_MODULES) */
#endif

#define SH_PTRACE_ATTACH 16
#define SH_PTRACE_SEIZE 0x4206
#define SH_BPF_PROG_LOAD 5
#define SH_NR_INIT_MODULE 175    /* x86_64 */
#define SH_NR_FINIT_MODULE 313

struct creds {
	u32 uid, euid, suid, fsuid;
	u32 gid, egid;
	u64 cap_effective;
	u64 cap_permitted;
};

struct inflight {
	u32 op;
	u32 target_pid;
	u64 arg;
	u64 p1, p2, p3;                        /* user pointers of the call */
	struct creds old;
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
BPF_HASH(inflight, u64, struct inflight, 10240);
BPF_PERCPU_ARRAY(scratch, struct sh_msg_priv, 1);
BPF_PERCPU_ARRAY(lost, u64, 1);

static __always_inline void read_creds(struct creds *c)
{
	void *cred = rd_ptr((void *)bpf_get_current_task(), OFF_TASK_CRED);
	c->uid = rd_u32(cred, OFF_CRED_UID);
	c->euid = rd_u32(cred, OFF_CRED_EUID);
	c->suid = rd_u32(cred, OFF_CRED_SUID);
	c->fsuid = rd_u32(cred, OFF_CRED_FSUID);
	c->gid = rd_u32(cred, OFF_CRED_GID);
	c->egid = rd_u32(cred, OFF_CRED_EGID);
	c->cap_effective = rd_u64(cred, OFF_CRED_CAP_EFFECTIVE);
	c->cap_permitted = rd_u64(cred, OFF_CRED_CAP_PERMITTED);
}

/* A zeroed message for the current task, in the per-CPU scratch slot (it is larger than the stack). */
static __always_inline struct sh_msg_priv *new_msg(u32 op)
{
	u32 zero = 0;
	struct sh_msg_priv *m = scratch.lookup(&zero);
	if (!m)
		return 0;
	__builtin_memset(m, 0, sizeof(*m));
	u64 pid_tgid = bpf_get_current_pid_tgid();
	m->hdr.type = SH_MSG_PRIV;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = pid_tgid >> 32;
	m->tid = (u32)pid_tgid;
	/* the process' start (its leader's), as /proc/<pid>/stat and the process cache count it */
	m->start_boottime = rd_u64(rd_ptr((void *)bpf_get_current_task(), OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	m->op = op;
	return m;
}

static __always_inline void submit(struct sh_msg_priv *m)
{
	/* rare events: wake user space every time */
	if (events.ringbuf_output(m, sizeof(*m), 0) != 0) {
		u32 zero = 0;
		u64 *n = lost.lookup(&zero);
		if (n)
			*n += 1;
	}
}

static __always_inline void remember(u32 op, u64 arg, u64 p1, u64 p2, u64 p3, u32 target_pid)
{
	struct inflight f = {};
	f.op = op;
	f.arg = arg;
	f.p1 = p1;
	f.p2 = p2;
	f.p3 = p3;
	f.target_pid = target_pid;
	read_creds(&f.old);
	u64 key = bpf_get_current_pid_tgid();
	inflight.update(&key, &f);
}

/* --- credentials --------------------------------------------------------------------------------- */

static __always_inline int cred_exit(long ret)
{
	u64 key = bpf_get_current_pid_tgid();
	struct inflight *f = inflight.lookup(&key);
	if (!f)
		return 0;
	struct creds now = {};
	read_creds(&now);
	struct creds *o = &f->old;
	if (now.uid == o->uid && now.euid == o->euid && now.suid == o->suid && now.fsuid == o->fsuid &&
	    now.gid == o->gid && now.egid == o->egid && now.cap_effective == o->cap_effective &&
	    now.cap_permitted == o->cap_permitted) {
		inflight.delete(&key);
		return 0;  /* nothing changed (or the call failed) */
	}
	struct sh_msg_priv *m = new_msg(f->op);
	if (m) {
		m->result = ret;
		m->old_uid = o->uid;
		m->old_euid = o->euid;
		m->old_suid = o->suid;
		m->old_fsuid = o->fsuid;
		m->old_gid = o->gid;
		m->old_egid = o->egid;
		m->old_cap_effective = o->cap_effective;
		m->new_uid = now.uid;
		m->new_euid = now.euid;
		m->new_suid = now.suid;
		m->new_fsuid = now.fsuid;
		m->new_gid = now.gid;
		m->new_egid = now.egid;
		m->new_cap_effective = now.cap_effective;
		m->new_cap_permitted = now.cap_permitted;
		submit(m);
	}
	inflight.delete(&key);
	return 0;
}

#define CRED_SYSCALL(name, op)                                   \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)             \
	{                                                        \
		remember(op, 0, 0, 0, 0, 0);                     \
		return 0;                                        \
	}                                                        \
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)              \
	{                                                        \
		return cred_exit(args->ret);                     \
	}

CRED_SYSCALL(setuid, SH_PRIV_SETUID)
CRED_SYSCALL(setgid, SH_PRIV_SETGID)
CRED_SYSCALL(setreuid, SH_PRIV_SETREUID)
CRED_SYSCALL(setregid, SH_PRIV_SETREGID)
CRED_SYSCALL(setresuid, SH_PRIV_SETRESUID)
CRED_SYSCALL(setresgid, SH_PRIV_SETRESGID)
CRED_SYSCALL(setfsuid, SH_PRIV_SETFSUID)
CRED_SYSCALL(setfsgid, SH_PRIV_SETFSGID)
CRED_SYSCALL(capset, SH_PRIV_CAPSET)

/* --- ptrace, bpf, mount: arguments at entry, outcome at exit ------------------------------------- */

static __always_inline struct inflight *take(u64 *key)
{
	*key = bpf_get_current_pid_tgid();
	return inflight.lookup(key);
}

TRACEPOINT_PROBE(syscalls, sys_enter_ptrace)
{
	if (args->request != SH_PTRACE_ATTACH && args->request != SH_PTRACE_SEIZE)
		return 0;
	remember(SH_PRIV_PTRACE, args->request, 0, 0, 0, args->pid);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ptrace)
{
	u64 key;
	struct inflight *f = take(&key);
	if (!f)
		return 0;
	struct sh_msg_priv *m = new_msg(SH_PRIV_PTRACE);
	if (m) {
		m->result = args->ret;
		m->arg = f->arg;
		m->target_pid = f->target_pid;
		submit(m);
	}
	inflight.delete(&key);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_bpf)
{
	if (args->cmd != SH_BPF_PROG_LOAD)
		return 0;
	remember(SH_PRIV_BPF_LOAD, 0, (u64)args->uattr, 0, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_bpf)
{
	u64 key;
	struct inflight *f = take(&key);
	if (!f)
		return 0;
	struct sh_msg_priv *m = new_msg(SH_PRIV_BPF_LOAD);
	if (m) {
		m->result = args->ret;
		/* union bpf_attr for BPF_PROG_LOAD (uapi, stable): prog_type at 0, prog_name[16] at 48 */
		u32 type = 0;
		bpf_probe_read_user(&type, sizeof(type), (void *)f->p1);
		m->arg = type;
		bpf_probe_read_user(m->name, 16, (char *)f->p1 + 48);
		m->name[15] = 0;
		submit(m);
	}
	inflight.delete(&key);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
	remember(SH_PRIV_MOUNT, args->flags, (u64)args->dev_name, (u64)args->dir_name, (u64)args->type, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_mount)
{
	u64 key;
	struct inflight *f = take(&key);
	if (!f)
		return 0;
	struct sh_msg_priv *m = new_msg(SH_PRIV_MOUNT);
	if (m) {
		m->result = args->ret;
		m->arg = f->arg;
		if (f->p1)
			bpf_probe_read_user_str(m->source, sizeof(m->source), (void *)f->p1);
		if (f->p2)
			bpf_probe_read_user_str(m->target, sizeof(m->target), (void *)f->p2);
		if (f->p3)
			bpf_probe_read_user_str(m->name, sizeof(m->name), (void *)f->p3);
		submit(m);
	}
	inflight.delete(&key);
	return 0;
}

/* --- kernel modules ------------------------------------------------------------------------------ */

/* finit_module(fd, ...): the module's file name, from the descriptor */
static __always_inline void fd_name(char *dst, int size, long fd)
{
	void *files = rd_ptr((void *)bpf_get_current_task(), OFF_TASK_FILES);
	void **fdarr = rd_ptr(rd_ptr(files, OFF_FILES_FDT), OFF_FDT_FD);
	void *file = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fdarr[fd & 0xFFFFF]);
	if (!file)
		return;
	void *dentry = rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
	bpf_probe_read_kernel_str(dst, size, rd_ptr(dentry, OFF_DENTRY_NAME + OFF_QSTR_NAME));
}

static __always_inline void module_event(u32 finit, long fd, long ret)
{
	struct sh_msg_priv *m = new_msg(SH_PRIV_MODULE);
	if (!m)
		return;
	m->result = ret;
	m->arg = finit;
	if (finit && fd >= 0)
		fd_name(m->name, sizeof(m->name), fd);
	submit(m);
}

#if SH_MODULES == 1
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
	remember(SH_PRIV_MODULE, 1, args->fd, 0, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_init_module)
{
	remember(SH_PRIV_MODULE, 0, 0, 0, 0, 0);
	return 0;
}

static __always_inline int module_exit(long ret)
{
	u64 key;
	struct inflight *f = take(&key);
	if (!f)
		return 0;
	module_event(f->arg, f->p1, ret);
	inflight.delete(&key);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_finit_module)
{
	return module_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_init_module)
{
	return module_exit(args->ret);
}
#elif SH_MODULES == 2
/* A kernel without module support has no tracepoints for these syscalls (they return ENOSYS), but an
 * attempt is still worth reporting: watch every syscall exit for their numbers. */
RAW_TRACEPOINT_PROBE(sys_exit)
{
	void *regs = (void *)ctx->args[0];
	u64 nr = rd_u64(regs, OFF_PT_REGS_ORIG_AX);
	if (nr != SH_NR_FINIT_MODULE && nr != SH_NR_INIT_MODULE)
		return 0;
	module_event(nr == SH_NR_FINIT_MODULE, (long)rd_u64(regs, OFF_PT_REGS_DI), (long)ctx->args[1]);
	return 0;
}
#endif

/* --- fileless execution -------------------------------------------------------------------------- */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	void *task = (void *)bpf_get_current_task();
	void *exe = rd_ptr(rd_ptr(task, OFF_TASK_MM), OFF_MM_EXE_FILE);
	void *dentry = rd_ptr(exe, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
	char *name = rd_ptr(dentry, OFF_DENTRY_NAME + OFF_QSTR_NAME);
	char head[8] = {};
	bpf_probe_read_kernel(head, 6, name);
	if (head[0] != 'm' || head[1] != 'e' || head[2] != 'm' || head[3] != 'f' || head[4] != 'd' || head[5] != ':')
		return 0;
	struct sh_msg_priv *m = new_msg(SH_PRIV_MEMFD_EXEC);
	if (!m)
		return 0;
	bpf_probe_read_kernel_str(m->name, sizeof(m->name), name);
	u16 loc = args->data_loc_filename & 0xFFFF;
	bpf_probe_read_kernel_str(m->target, sizeof(m->target), (char *)args + loc);
	submit(m);
	return 0;
}
