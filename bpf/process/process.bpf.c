/* Process sensor: exec, fork (new processes only, not threads) and exit (last thread of a process).
 * A fork is kept in the `forks` map and sent only when its process exits without exec'ing.
 *
 * Kernel struct fields are read at offsets resolved from the running kernel's BTF
 * (collector/kernel/btf.py -> -DOFF_* cflags), never through the installed headers, which do not match.
 * Cost: fields of the current task and of what hangs off it are single loads through BTF-typed pointers
 * (ld_*() in sh_bpf.h), not helper calls; the only helper reads left are strings, argv, the forked
 * child (a raw tracepoint argument has no type) and the cwd walk's mounts (reached by container_of, which
 * typed loads cannot do), and the latter two read adjacent fields in one window (SH_WIN_*).
 * Ring-buffer wake-ups are batched: every message is submitted with BPF_RB_NO_WAKEUP except every
 * SH_WAKEUP_EVERY-th per CPU, or after SH_WAKEUP_BYTES per CPU; user space also polls on a
 * timeout (poll_interval), which bounds the latency. Large batches are what keep user space cheap.
 * Messages that do not fit in the ring buffer are counted per type in `lost`, never silently dropped.
 */
#include "siemhub.h"
#include "sh_bpf.h"

#ifndef SH_RINGBUF_PAGES
#define SH_RINGBUF_PAGES 1024
#endif
#ifndef SH_WAKEUP_EVERY
#define SH_WAKEUP_EVERY 4096               /* power of two */
#endif
#ifndef SH_WAKEUP_BYTES
#define SH_WAKEUP_BYTES (SH_RINGBUF_PAGES * 4096 / 4 / SH_NR_CPUS)
#endif
#define SH_DATA_CAP 32768                  /* power of two >= SH_DATA_MAX */

struct exec_buf {
	struct sh_msg_exec msg;
	char data[2 * SH_DATA_CAP];        /* masks below keep every write inside this array */
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
/* One scratch slot per CPU. A plain array indexed by CPU, because per-CPU map values are capped
 * at 32 KiB and the exec buffer is larger. */
#ifndef SH_NR_CPUS
#define SH_NR_CPUS 64
#endif
BPF_ARRAY(exec_scratch, struct exec_buf, SH_NR_CPUS);
struct wake_count {
	u64 msgs;
	u64 bytes;
};
BPF_PERCPU_ARRAY(wakeups, struct wake_count, 1);
BPF_PERCPU_ARRAY(lost, u64, 4);            /* indexed by enum sh_msg_type */

/* In-kernel filtering, changed at run time from user space (ProcessSensor.set_filters): execs of
 * these executables (by device and inode) or in these cgroups (by id) never reach user space, and
 * neither do the exits of the processes they start. */
struct exe_key {
	u64 ino;
	u32 dev;
	u32 pad;
};
BPF_HASH(ignore_exe, struct exe_key, u8, 1024);
BPF_HASH(ignore_cgroup, u64, u8, 1024);
BPF_TABLE("lru_hash", u32, u8, ignored_pids, 65536);  /* processes whose exec was filtered: drop their exit */
BPF_PERCPU_ARRAY(filtered, u64, 1);        /* execs dropped by the filters */

/* New processes that have not exec'd (yet). Most forks exec at once, and their exec message says
 * everything the fork would have: so a fork is only recorded here, and becomes a message only if the
 * process exits without exec'ing. User space reads this map for a forked process it is asked about
 * before its exec or exit (ProcessSensor.fork_info).
 * An array indexed by pid modulo SH_FORK_SLOTS, not a hash: a slot is a plain store (the hash update
 * was ~0.4 us of the fork program's 0.65). A slot holding another process that has neither exec'd nor
 * exited (a pid SH_FORK_SLOTS apart) is sent as a fork message before it is reused, so no fork is lost.
 * pid 0 marks a free slot. */
#ifndef SH_FORK_SLOTS
#define SH_FORK_SLOTS 65536                /* power of two */
#endif
#ifndef SH_FORK_CHAIN
#define SH_FORK_CHAIN 4  /* un-exec'd forks above an exec sent ahead of it (nested subshells) */
#endif

struct fork_info {
	u32 pid;
	u32 ppid;
	u64 start_boottime;
	u64 ktime;
};
BPF_ARRAY(forks, struct fork_info, SH_FORK_SLOTS);

static __always_inline struct fork_info *fork_slot(u32 tgid)
{
	u32 slot = tgid & (SH_FORK_SLOTS - 1);
	return forks.lookup(&slot);
}
BPF_ARRAY(filters_on, u32, 1);             /* set by user space once any filter exists: skips all of this otherwise */

static __always_inline u32 ns_inum(const void *nsproxy, int ptr_off, int ns_off)
{
	void *ns = ld_ptr(nsproxy, ptr_off);
	return ns ? ld_u32(ns, ns_off + OFF_NSCOMMON_INUM) : 0;
}

static __always_inline u64 wake_flag(u32 size)
{
	u32 k = 0;
	struct wake_count *w = wakeups.lookup(&k);
	if (!w)
		return 0;
	w->msgs += 1;
	w->bytes += size + 8;  /* the ring's record header */
	/* Every SH_WAKEUP_EVERY-th message of this CPU, or once this CPU has written SH_WAKEUP_BYTES since its
	 * last wake-up (a quarter of the ring shared by all CPUs): large messages, or user space sleeping
	 * through its poll interval, never fill the ring before the count comes round. */
	if ((w->msgs & (SH_WAKEUP_EVERY - 1)) == 0 || w->bytes >= SH_WAKEUP_BYTES) {
		w->bytes = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void count_lost(u32 type)
{
	u64 *n = lost.lookup(&type);
	if (n)
		*n += 1;
}

static __always_inline void submit(void *msg, u32 size, u32 type)
{
	if (events.ringbuf_output(msg, size, wake_flag(size)) != 0)
		count_lost(type);
}

/* The process in a forks slot (forked, never exec'd) as a fork message. */
static __always_inline void send_fork(struct fork_info *fi)
{
	struct sh_msg_fork m = {};
	m.hdr.type = SH_MSG_FORK;
	m.hdr.size = sizeof(m);
	m.hdr.ktime = fi->ktime;
	m.pid = fi->pid;
	m.ppid = fi->ppid;
	m.start_boottime = fi->start_boottime;
	submit(&m, sizeof(m), SH_MSG_FORK);
}

/* The un-exec'd forks above a process (a subshell, a subshell's subshell...), sent ahead of an event
 * that names them as its parent: up to SH_FORK_CHAIN levels (user space reads deeper ones from the
 * forks map). Each is sent once: its slot is freed, and its own exit then sends only the exit. */
static __always_inline void send_fork_chain(u32 up)
{
#pragma unroll
	for (int i = 0; i < SH_FORK_CHAIN; i++) {
		struct fork_info *pf = up ? fork_slot(up) : 0;
		if (!pf || pf->pid != up)
			break;
		send_fork(pf);
		up = pf->ppid;
		pf->pid = 0;
	}
}

/* What the cwd walk needs of a struct mount (reached from a vfsmount by container_of, so through
 * bpf_probe_read_kernel): its parent, where it is mounted, and its root dentry; one read when the three
 * fields sit within SH_WIN_MAX bytes. */
struct mnt_view {
	void *parent;
	void *mountpoint;
	void *root;
};
#define MNT_ROOT_OFF (OFF_MOUNT_MNT + OFF_VFSMOUNT_ROOT)
#define MNT_LO (SH_MIN2(SH_MIN2(OFF_MOUNT_PARENT, OFF_MOUNT_MOUNTPOINT), MNT_ROOT_OFF) & ~7)
#define MNT_HI (SH_MAX2(SH_MAX2(OFF_MOUNT_PARENT, OFF_MOUNT_MOUNTPOINT), MNT_ROOT_OFF) + 8)

static __always_inline void read_mount(void *mnt, struct mnt_view *v)
{
	if (SH_WIN_FITS(MNT_LO, MNT_HI)) {
		u64 w[SH_WIN_MAX / 8];
		bpf_probe_read_kernel(w, SH_WIN_FITS(MNT_LO, MNT_HI) ? MNT_HI - MNT_LO : 8, (char *)mnt + MNT_LO);
		v->parent = SH_WIN_FIELD(void *, w, MNT_LO, OFF_MOUNT_PARENT);
		v->mountpoint = SH_WIN_FIELD(void *, w, MNT_LO, OFF_MOUNT_MOUNTPOINT);
		v->root = SH_WIN_FIELD(void *, w, MNT_LO, MNT_ROOT_OFF);
	} else {
		v->parent = rd_ptr(mnt, OFF_MOUNT_PARENT);
		v->mountpoint = rd_ptr(mnt, OFF_MOUNT_MOUNTPOINT);
		v->root = rd_ptr(mnt, MNT_ROOT_OFF);
	}
}

/* A dentry's parent and name pointer, one read when they are close. */
#define DNAME_OFF (OFF_DENTRY_NAME + OFF_QSTR_NAME)
#define DENT_LO (SH_MIN2(OFF_DENTRY_PARENT, DNAME_OFF) & ~7)
#define DENT_HI (SH_MAX2(OFF_DENTRY_PARENT, DNAME_OFF) + 8)

static __always_inline void read_dentry(void *dentry, void **parent, void **name)
{
	if (SH_WIN_FITS(DENT_LO, DENT_HI)) {
		u64 w[SH_WIN_MAX / 8];
		bpf_probe_read_kernel(w, SH_WIN_FITS(DENT_LO, DENT_HI) ? DENT_HI - DENT_LO : 8, (char *)dentry + DENT_LO);
		*parent = SH_WIN_FIELD(void *, w, DENT_LO, OFF_DENTRY_PARENT);
		*name = SH_WIN_FIELD(void *, w, DENT_LO, DNAME_OFF);
	} else {
		*parent = rd_ptr(dentry, OFF_DENTRY_PARENT);
		*name = rd_ptr(dentry, DNAME_OFF);
	}
}

/* Walk task->fs->pwd up to the root of the process' mount tree, crossing mount points.
 * Components are written leaf first; user space reverses them. The running offset and depth live in
 * the map value, not in registers: the verifier then sees the same state at every loop head and
 * prunes, instead of exploring every combination of branches (1M-instruction limit).
 * Within the cwd's own mount the dentries are BTF-typed (td: fs->pwd.dentry, then d_parent), read with
 * plain loads; past the first mount point they come from the mount (ud: mnt_mountpoint, read with
 * bpf_probe_read_kernel, so a plain number to the verifier) and are read by windows. Two variables, so
 * that each load instruction only ever sees one kind of value. */
static __always_inline void read_cwd(struct exec_buf *b, void *task)
{
	void *fs = ld_ptr(task, OFF_TASK_FS);
	void *td = ld_ptr(fs, OFF_FS_PWD + OFF_PATH_DENTRY);
	void *ud = 0;
	int typed = 1;
	void *mnt = (char *)rd_ptr(fs, OFF_FS_PWD + OFF_PATH_MNT) - OFF_MOUNT_MNT;
	struct mnt_view mv;
	read_mount(mnt, &mv);

	b->msg.cwd_len = 0;
	b->msg.cwd_depth = 0;
	b->msg.flags |= SH_EXEC_TRUNC_CWD;  /* cleared when the walk reaches the root */
	for (int i = 0; i < SH_CWD_DEPTH; i++) {
		void *tparent = 0, *uparent = 0, *name = 0;
		int at_root;
		if (typed) {
			at_root = td == mv.root;
			if (!at_root) {
				tparent = ld_ptr(td, OFF_DENTRY_PARENT);
				name = ld_ptr(td, DNAME_OFF);
				at_root = td == tparent;
			}
		} else {
			at_root = ud == mv.root;
			if (!at_root) {
				read_dentry(ud, &uparent, &name);
				at_root = ud == uparent;
			}
		}
		if (at_root) {
			if (mv.parent == mnt || !mv.parent) {
				b->msg.flags &= ~SH_EXEC_TRUNC_CWD;
				break;
			}
			ud = mv.mountpoint;
			typed = 0;
			mnt = mv.parent;
			read_mount(mnt, &mv);
			continue;
		}
		u32 off = b->msg.filename_len + b->msg.args_len + b->msg.cwd_len;
		if (off > SH_DATA_CAP - SH_NAME_MAX)
			break;
		int n = bpf_probe_read_kernel_str(&b->data[off & (SH_DATA_CAP - 1)], SH_NAME_MAX, name);
		if (n <= 0)
			break;
		b->msg.cwd_len += n;
		b->msg.cwd_depth += 1;
		if (typed)
			td = tparent;
		else
			ud = uparent;
	}
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
	u32 k = bpf_get_smp_processor_id();
	struct exec_buf *b = exec_scratch.lookup(&k);
	if (!b)
		return 0;
	void *task = sh_current_task();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 uid_gid = bpf_get_current_uid_gid();
	struct sh_msg_exec *m = &b->msg;

	m->hdr.type = SH_MSG_EXEC;
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = pid_tgid >> 32;
	m->tid = (u32)pid_tgid;
	m->old_tid = args->old_pid;
	m->uid = (u32)uid_gid;
	m->gid = uid_gid >> 32;
	m->flags = 0;
	void *cred = ld_ptr(task, OFF_TASK_CRED);
	m->euid = ld_u32(cred, OFF_CRED_EUID);
	m->egid = ld_u32(cred, OFF_CRED_EGID);
	m->auid = ld_u32(task, OFF_TASK_LOGINUID);
	void *parent = ld_ptr(task, OFF_TASK_REAL_PARENT);
	m->ppid = ld_u32(parent, OFF_TASK_TGID);
	m->start_boottime = ld_u64(task, OFF_TASK_START_BOOTTIME);
	/* real_parent is the thread that forked: the process' start time is its group leader's */
	m->parent_start_boottime = ld_u64(ld_ptr(parent, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	m->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(&m->comm, sizeof(m->comm));
	struct fork_info *fs = fork_slot(m->pid);
	if (fs && fs->pid == m->pid)
		fs->pid = 0;  /* the process runs its own image now */
	/* A parent that forked and never exec'd (a subshell) would be sent at its exit, after this exec,
	 * when user space has had to name this process' parent without it: send it now, ahead of the exec. */
	send_fork_chain(m->ppid);
	void *mm = ld_ptr(task, OFF_TASK_MM);

	/* the executable's inode: setuid/setgid bits, owner, identity (and the filter key) */
	void *exe = ld_ptr(mm, OFF_MM_EXE_FILE);
	void *inode = exe ? ld_ptr(exe, OFF_FILE_F_INODE) : 0;
	m->exe_mode = 0;
	m->exe_uid = m->exe_gid = m->exe_dev = 0;
	m->exe_ino = 0;
	if (inode) {
		m->exe_mode = ld_u16(inode, OFF_INODE_I_MODE);
		m->exe_uid = ld_u32(inode, OFF_INODE_I_UID);
		m->exe_gid = ld_u32(inode, OFF_INODE_I_GID);
		m->exe_ino = ld_u64(inode, OFF_INODE_I_INO);
		m->exe_dev = ld_u32(ld_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV);
	}

	/* filters first, before the expensive reads */
	u32 zero = 0;
	u32 *on = filters_on.lookup(&zero);
	if (on && *on) {
		struct exe_key ek = {.ino = m->exe_ino, .dev = m->exe_dev};
		if (ignore_exe.lookup(&ek) || ignore_cgroup.lookup(&m->cgroup_id)) {
			u8 one = 1;
			ignored_pids.update(&m->pid, &one);
			u64 *f = filtered.lookup(&zero);
			if (f)
				*f += 1;
			return 0;
		}
		ignored_pids.delete(&m->pid);  /* an ignored process that execs something else is seen again */
	}


	/* filename, as passed to execve (the binary) */
	u16 loc = args->data_loc_filename & 0xFFFF;
	int n = bpf_probe_read_kernel_str(&b->data[0], SH_FILENAME_MAX, (char *)args + loc);
	if (n < 0)
		n = 0;
	if (n >= SH_FILENAME_MAX)
		m->flags |= SH_EXEC_TRUNC_FILENAME;
	u32 off = n & (SH_FILENAME_MAX * 2 - 1);
	m->filename_len = off;

	/* argv, from the new image's stack */
	u64 arg_start = ld_u64(mm, OFF_MM_ARG_START);
	u64 arg_end = ld_u64(mm, OFF_MM_ARG_END);
	u64 len = arg_end > arg_start ? arg_end - arg_start : 0;
	if (len > SH_ARGS_MAX - 1) {
		len = SH_ARGS_MAX - 1;
		m->flags |= SH_EXEC_TRUNC_ARGS;
	}
	len &= SH_ARGS_MAX - 1;
	m->args_len = 0;
	if (len > 0) {
		if (bpf_probe_read_user(&b->data[off & (SH_DATA_CAP - 1)], len, (void *)arg_start) == 0) {
			m->args_len = len;
			off += len;
		} else {
			m->flags |= SH_EXEC_ARGS_FAULT;
		}
	}

	read_cwd(b, task);
	off += m->cwd_len;

	/* credentials beyond the ids: capabilities */
	m->cap_effective = ld_u64(cred, OFF_CRED_CAP_EFFECTIVE);
	m->cap_permitted = ld_u64(cred, OFF_CRED_CAP_PERMITTED);

	/* namespaces */
	void *nsp = ld_ptr(task, OFF_TASK_NSPROXY);
	m->ns_mnt = ns_inum(nsp, OFF_NSPROXY_MNT, OFF_MNTNS_NS);
	m->ns_pid = ns_inum(nsp, OFF_NSPROXY_PID, OFF_PIDNS_NS);
	m->ns_net = ns_inum(nsp, OFF_NSPROXY_NET, OFF_NETNS_NS);
	m->ns_uts = ns_inum(nsp, OFF_NSPROXY_UTS, OFF_UTSNS_NS);
	m->ns_ipc = ns_inum(nsp, OFF_NSPROXY_IPC, OFF_IPCNS_NS);
	m->ns_cgroup = ns_inum(nsp, OFF_NSPROXY_CGROUP, OFF_CGROUPNS_NS);
	void *userns = ld_ptr(cred, OFF_CRED_USER_NS);
	m->ns_user = userns ? ld_u32(userns, OFF_USERNS_NS + OFF_NSCOMMON_INUM) : 0;

	/* cgroup v2 leaf and parent directory names: container and pod ids live there */
	m->cgroup_len = 0;
	void *cgrp = ld_ptr(ld_ptr(task, OFF_TASK_CGROUPS), OFF_CSS_SET_DFL_CGRP);
	void *kn = cgrp ? ld_ptr(cgrp, OFF_CGROUP_KN) : 0;
	if (kn) {
		int n1 = bpf_probe_read_kernel_str(&b->data[off & (SH_DATA_CAP - 1)], SH_CGROUP_NAME_MAX,
						   ld_ptr(kn, OFF_KERNFS_NODE_NAME));
		if (n1 > 0) {
			off += n1;
			void *pkn = ld_ptr(kn, OFF_KERNFS_NODE_PARENT);
			int n2 = pkn ? bpf_probe_read_kernel_str(&b->data[off & (SH_DATA_CAP - 1)], SH_CGROUP_NAME_MAX,
								 ld_ptr(pkn, OFF_KERNFS_NODE_NAME)) : 0;
			if (n2 > 0)
				off += n2;
			m->cgroup_len = n1 + (n2 > 0 ? n2 : 0);
		}
	}

	u32 size = sizeof(struct sh_msg_exec) + (off & (2 * SH_DATA_CAP - 1));
	m->hdr.size = size;
	submit(b, size, SH_MSG_EXEC);
	return 0;
}

#define FORK_LO (SH_MIN2(SH_MIN2(OFF_TASK_PID, OFF_TASK_TGID), OFF_TASK_REAL_PARENT) & ~7)
#define FORK_HI (SH_MAX2(SH_MAX2(OFF_TASK_PID + 4, OFF_TASK_TGID + 4), OFF_TASK_REAL_PARENT + 8))

RAW_TRACEPOINT_PROBE(sched_process_fork)
{
	/* The child is an untyped raw tracepoint argument: bpf_probe_read_kernel, pid, tgid and real_parent
	 * in one window when they are close. */
	void *child = (void *)ctx->args[1];
	u32 pid, tgid;
	void *real_parent;
	if (SH_WIN_FITS(FORK_LO, FORK_HI)) {
		u64 w[SH_WIN_MAX / 8];
		bpf_probe_read_kernel(w, SH_WIN_FITS(FORK_LO, FORK_HI) ? FORK_HI - FORK_LO : 8, (char *)child + FORK_LO);
		pid = SH_WIN_FIELD(u32, w, FORK_LO, OFF_TASK_PID);
		tgid = SH_WIN_FIELD(u32, w, FORK_LO, OFF_TASK_TGID);
		real_parent = SH_WIN_FIELD(void *, w, FORK_LO, OFF_TASK_REAL_PARENT);
	} else {
		pid = rd_u32(child, OFF_TASK_PID);
		tgid = rd_u32(child, OFF_TASK_TGID);
		real_parent = rd_ptr(child, OFF_TASK_REAL_PARENT);
	}
	if (pid != tgid)
		return 0;  /* a new thread, not a new process */
	struct fork_info *fi = fork_slot(tgid);
	if (!fi)
		return 0;
	if (fi->pid && fi->pid != tgid) {
		/* another forked process that has neither exec'd nor exited holds the slot: send it now */
		send_fork(fi);
	}
	fi->ktime = bpf_ktime_get_boot_ns();
	/* real_parent is the forking task itself unless CLONE_PARENT: then no read is needed */
	if (real_parent == (void *)bpf_get_current_task())
		fi->ppid = bpf_get_current_pid_tgid() >> 32;
	else
		fi->ppid = rd_u32(real_parent, OFF_TASK_TGID);
	fi->start_boottime = rd_u64(child, OFF_TASK_START_BOOTTIME);
	fi->pid = tgid;
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	void *task = sh_current_task();
	void *sig = ld_ptr(task, OFF_TASK_SIGNAL);
	if (ld_u32(sig, OFF_SIGNAL_LIVE) != 0)
		return 0;  /* other threads of this process still run */
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	u32 zero = 0;
	u32 *on = filters_on.lookup(&zero);
	struct fork_info *fi = fork_slot(tgid);
	if (on && *on && ignored_pids.lookup(&tgid)) {
		ignored_pids.delete(&tgid);
		if (fi && fi->pid == tgid)
			fi->pid = 0;
		return 0;
	}
	if (fi && fi->pid == tgid) {
		/* A fork that never exec'd: say so first, the exit names its parent's image. Its parent may be
		 * an un-exec'd fork still running (a pipeline element of a command substitution: the subshell
		 * outlives it): send that chain first, or the exit would name a process user space never saw.
		 * Read ppid before freeing the slot. */
		u32 ppid = fi->ppid;
		send_fork(fi);
		fi->pid = 0;
		send_fork_chain(ppid);
	}
	struct sh_msg_exit m = {};
	m.hdr.type = SH_MSG_EXIT;
	m.hdr.size = sizeof(m);
	m.hdr.ktime = bpf_ktime_get_boot_ns();
	m.pid = pid_tgid >> 32;
	m.tid = (u32)pid_tgid;
	m.exit_code = ld_u32(task, OFF_TASK_EXIT_CODE);
	/* the last thread need not be the leader (it may have ended first): the process' start is the leader's */
	m.start_boottime = ld_u64(ld_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	submit(&m, sizeof(m), SH_MSG_EXIT);
	return 0;
}
