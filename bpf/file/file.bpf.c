/* File sensor: opens, writes, unlinks, renames, chmod, chown and truncates of watched paths.
 *
 * Only syscall tracepoints exist here (no kprobes, no fentry, no LSM): every handled syscall has a
 * sys_enter program that saves its arguments per thread in `inflight`, and a sys_exit program that
 * resolves the path to an absolute one, decides in the kernel whether it is watched, and only then
 * sends a message. Unwatched paths never reach user space.
 *
 * Path resolution (written backwards into a scratch buffer, the way the kernel's d_path does):
 *  - by file: opens that returned a descriptor, fchmod/fchown/ftruncate and writes take the struct file
 *    from the descriptor table (task->files->fdt->fd[fd]) and walk f_path's dentries up to the root of
 *    the process' mount tree, crossing mount points. Robust: symlinks, "..", relative paths and bind
 *    mounts come out as the file's real path.
 *  - by name: unlink, rename, chmod, chown, truncate and failed opens have no file: the user string is
 *    taken as is when absolute, else appended to the walked path of its starting directory (dirfd, or
 *    the cwd for AT_FDCWD). "." and ".." inside the string are not normalised and symlinks are not
 *    followed; user space flags such paths.
 * Matching: the resolved path is looked up in the `watch` LPM trie (longest prefix over bytes): a
 * watched file is stored with its NUL (exact match), a watched directory with a trailing '/' (prefix).
 * Matching by name, not by inode, also covers files that do not exist yet (/etc/ld.so.preload) and
 * files replaced by a rename (a new inode under the watched name).
 *
 * Writes: an open for writing of a watched file records its struct file in `wfds` (and the process in
 * `wprocs`); the first write(2)/pwrite64/writev through that open file, by any descriptor of the process
 * (dup2 of a shell redirect included), is reported once, then forgotten. Writes of processes that hold
 * no such file cost one hash lookup. A child that inherits the descriptor is not followed.
 *
 * Enforcement: the watch value carries a mask of operations that get SIGKILL (bpf_send_signal from the
 * sys_exit program: the signal is fatal before the syscall returns to user space, so a killed opener
 * never sees its descriptor, reads no byte and writes nothing).
 */
#include "siemhub.h"
#include "sh_bpf.h"

#ifndef SH_RINGBUF_PAGES
#define SH_RINGBUF_PAGES 256
#endif
#ifndef SH_WAKEUP_EVERY
#define SH_WAKEUP_EVERY 16                 /* power of two */
#endif
#ifndef SH_PATH_DEPTH
#define SH_PATH_DEPTH 32                   /* path components walked */
#endif
#ifndef SH_LEGACY_SYSCALLS
#define SH_LEGACY_SYSCALLS 1               /* open, creat, unlink, rename, chmod, chown, lchown exist */
#endif
#define SH_PBUF 4096                       /* the path is built backwards, ending at pbuf[SH_PBUF] */
#define SH_PMASK (SH_PBUF - 1)
#define SH_UBUF 512                        /* bytes of a user path string read */
#define AT_FDCWD_ -100
#define O_ACCMODE_ 3
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define FMODE_CREATED_ 0x100000

struct lpm_key {
	u32 prefixlen;                     /* bits */
	u8 data[SH_FILE_KEY_MAX];
};

struct watch_val {
	u32 enforce;                       /* SH_FILE_ENF_* operations that get SIGKILL */
	u32 rule;                          /* enforce rule number (1-based) for the report, 0: none */
};

struct args {
	u64 path1;
	u64 path2;
	s32 dfd1;
	s32 dfd2;
	u32 op;
	u32 flags;
	u32 mode;
	u32 uid;
	u32 gid;
	u32 fd;
};

struct wfd {
	u64 inode;                         /* struct inode * at open time: a reused struct file is not it */
	u32 enforce;
	u32 rule;
};

struct scratch {
	struct sh_msg_file msg;
	char data[4 * SH_FILE_PATH_MAX];   /* path, NUL, target, NUL; masks keep writes inside */
	char pbuf[2 * SH_PBUF];            /* backwards path builder; the LPM key is read in place */
	char ubuf[SH_UBUF];
	u32 pos;                           /* start of the path in pbuf (kept in memory: verifier pruning) */
	u32 pad;
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch_map, struct scratch, 1);
BPF_PERCPU_ARRAY(wakeups, u64, 1);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(killed, u64, 1);
BPF_HASH(inflight, u32, struct args, 16384);
BPF_TABLE("lru_hash", u64, struct wfd, wfds, 16384);     /* struct file * -> watched for writes */
BPF_TABLE("lru_hash", u32, u8, wprocs, 16384);           /* processes holding such files */
BPF_LPM_TRIE(watch, struct lpm_key, struct watch_val, 4096);

static __always_inline u64 wake_flag(void)
{
	u32 k = 0;
	u64 *n = wakeups.lookup(&k);
	if (!n)
		return 0;
	*n += 1;
	return (*n & (SH_WAKEUP_EVERY - 1)) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void bump(void *map_lookup_result)
{
	u64 *n = map_lookup_result;
	if (n)
		*n += 1;
}

/* task->files->fdt->fd[fd], or 0 */
static __always_inline void *fd_file(void *task, u32 fd)
{
	void *fdt = rd_ptr(rd_ptr(task, OFF_TASK_FILES), OFF_FILES_FDT);
	if (!fdt || fd >= rd_u32(fdt, OFF_FDTABLE_MAX_FDS))
		return 0;
	void *arr = rd_ptr(fdt, OFF_FDTABLE_FD);
	return rd_ptr(arr, fd * sizeof(void *));
}

/* Prepend "/name" for each dentry from `dentry` up to the root of the mount tree, crossing mount
 * points. Returns SH_FILE_TRUNC_PATH when the walk stopped early (too deep or too long). */
static __always_inline u32 walk_path(struct scratch *s, void *dentry, void *vfsmnt)
{
	void *mnt = (char *)vfsmnt - OFF_MOUNT_MNT;
	u32 trunc = SH_FILE_TRUNC_PATH;
	for (int i = 0; i < SH_PATH_DEPTH; i++) {
		void *root = rd_ptr(vfsmnt, OFF_VFSMOUNT_ROOT);
		void *parent = rd_ptr(dentry, OFF_DENTRY_PARENT);
		if (dentry == root || dentry == parent) {
			void *mnt_parent = rd_ptr(mnt, OFF_MOUNT_PARENT);
			if (mnt_parent == mnt || !mnt_parent) {
				trunc = 0;
				break;
			}
			dentry = rd_ptr(mnt, OFF_MOUNT_MOUNTPOINT);
			mnt = mnt_parent;
			vfsmnt = (char *)mnt + OFF_MOUNT_MNT;
			continue;
		}
		u32 len = rd_u32(dentry, OFF_DENTRY_NAME + OFF_QSTR_LEN);
		u32 used = SH_PBUF - s->pos;  /* s->pos <= SH_PBUF */
		if (len == 0 || len > SH_NAME_MAX - 1 || used + len + 2 > SH_FILE_PATH_MAX)
			break;
		u32 pos = (s->pos - len) & SH_PMASK;
		asm volatile("" : "+r"(len));  /* keep the mask below: the verifier needs it */
		bpf_probe_read_kernel(&s->pbuf[pos], len & (SH_NAME_MAX - 1),
				      rd_ptr(dentry, OFF_DENTRY_NAME + OFF_QSTR_NAME));
		pos = (pos - 1) & SH_PMASK;
		s->pbuf[pos] = '/';
		s->pos = pos;
		dentry = parent;
	}
	return trunc;
}

static __always_inline void path_start(struct scratch *s)
{
	s->pos = SH_PBUF;
	s->pbuf[SH_PBUF] = 0;
}

/* The path of an open file. */
static __always_inline u32 path_of_file(struct scratch *s, void *file)
{
	path_start(s);
	u32 k = walk_path(s, rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY), rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_MNT));
	if (s->pos == SH_PBUF) {
		s->pos = SH_PBUF - 1;
		s->pbuf[SH_PBUF - 1] = '/';
	}
	return k | SH_FILE_BY_FD;
}

/* The absolute path of a user string relative to dfd (AT_FDCWD: the cwd). */
static __always_inline u32 path_of_name(struct scratch *s, void *task, s32 dfd, u64 upath)
{
	path_start(s);
	int n = bpf_probe_read_user_str(s->ubuf, SH_UBUF, (void *)upath);
	if (n <= 1)
		return SH_FILE_NO_PATH;
	u32 skip = (s->ubuf[0] == '.' && s->ubuf[1] == '/') ? 2 : 0;
	u32 len = (n - 1 - skip) & (SH_UBUF - 1);
	u32 pos = (SH_PBUF - len) & SH_PMASK;
	bpf_probe_read_kernel(&s->pbuf[pos], len, &s->ubuf[skip & 3]);
	s->pos = pos;
	if (n >= SH_UBUF)
		return SH_FILE_TRUNC_PATH;
	if (s->ubuf[0] == '/')
		return 0;
	pos = (pos - 1) & SH_PMASK;
	s->pbuf[pos] = '/';
	s->pos = pos;
	void *dentry, *vfsmnt;
	if (dfd == AT_FDCWD_) {
		void *fs = rd_ptr(task, OFF_TASK_FS);
		dentry = rd_ptr(fs, OFF_FS_PWD + OFF_PATH_DENTRY);
		vfsmnt = rd_ptr(fs, OFF_FS_PWD + OFF_PATH_MNT);
	} else {
		void *file = fd_file(task, (u32)dfd);
		if (!file) {
			s->pos = (s->pos + 1) & SH_PMASK;  /* leave the string as given */
			return SH_FILE_RELATIVE;
		}
		dentry = rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
		vfsmnt = rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_MNT);
	}
	return walk_path(s, dentry, vfsmnt);
}

/* The watch entry covering the path in pbuf, if any: the LPM key is written in front of the path. */
static __always_inline struct watch_val *match(struct scratch *s, u32 kflags)
{
	if (kflags & (SH_FILE_TRUNC_PATH | SH_FILE_RELATIVE | SH_FILE_NO_PATH))
		return 0;  /* the root-side part of the path is unknown: it cannot be compared */
	u32 pos = s->pos & SH_PMASK;
	if (pos < 8)
		return 0;
	u32 bytes = SH_PBUF - pos + 1;
	if (bytes > SH_FILE_KEY_MAX)
		bytes = SH_FILE_KEY_MAX;
	u32 bits = bytes * 8;
	s->pbuf[pos - 4] = bits & 0xff;
	s->pbuf[pos - 3] = (bits >> 8) & 0xff;
	s->pbuf[pos - 2] = 0;
	s->pbuf[pos - 1] = 0;
	return watch.lookup((struct lpm_key *)&s->pbuf[pos - 4]);
}

/* Copy the path in pbuf to msg data at `off`; returns the bytes used (NUL included). */
static __always_inline u32 copy_path(struct scratch *s, u32 off)
{
	u32 pos = s->pos & SH_PMASK;
	u32 len = SH_PBUF - pos + 1;
	if (len > SH_FILE_PATH_MAX)
		len = SH_FILE_PATH_MAX;
	off &= (2 * SH_FILE_PATH_MAX - 1);
	bpf_probe_read_kernel(&s->data[off], len & (2 * SH_FILE_PATH_MAX - 1), &s->pbuf[pos]);
	return len;
}

static __always_inline struct scratch *begin(u32 op)
{
	u32 zero = 0;
	struct scratch *s = scratch_map.lookup(&zero);
	if (!s)
		return 0;
	u64 id = bpf_get_current_pid_tgid();
	u64 ug = bpf_get_current_uid_gid();
	struct sh_msg_file *m = &s->msg;
	m->hdr.type = SH_MSG_FILE;
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = id >> 32;
	m->tid = (u32)id;
	m->uid = (u32)ug;
	m->gid = ug >> 32;
	m->op = op;
	m->flags = m->mode = m->arg_uid = m->arg_gid = m->kflags = m->rule = 0;
	m->ino = 0;
	m->dev = 0;
	m->path_len = m->target_len = 0;
	m->result = 0;
	return s;
}

static __always_inline void file_identity(struct scratch *s, void *file)
{
	void *inode = rd_ptr(file, OFF_FILE_F_INODE);
	if (inode) {
		s->msg.ino = rd_u64(inode, OFF_INODE_I_INO);
		s->msg.dev = rd_u32(rd_ptr(inode, OFF_INODE_I_SB), OFF_SB_S_DEV);
	}
}

/* Enforce, then send. `enf` is the operation's SH_FILE_ENF_* bit, `w` the watch entry. */
static __always_inline void finish(struct scratch *s, void *task, u32 enf, u32 enforce, u32 rule)
{
	struct sh_msg_file *m = &s->msg;
	if (enforce & enf) {
		bpf_send_signal(9);
		m->kflags |= SH_FILE_KILLED;
		m->rule = rule;
		u32 zero = 0;
		bump(killed.lookup(&zero));
	}
	m->start_boottime = rd_u64(task, OFF_TASK_START_BOOTTIME);
	bpf_get_current_comm(&m->comm, sizeof(m->comm));
	u32 size = sizeof(struct sh_msg_file) + ((m->path_len + m->target_len) & (4 * SH_FILE_PATH_MAX - 1));
	m->hdr.size = size;
	if (events.ringbuf_output(m, size, wake_flag()) != 0) {
		u32 zero = 0;
		bump(lost.lookup(&zero));
	}
}

/* --- sys_enter: save the arguments --------------------------------------------------------------- */

static __always_inline int save(struct args *a)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	inflight.update(&tid, a);
	return 0;
}

#define ENTER_OPEN(name, DFD, PATH, FLAGS, MODE)                                       \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                   \
	{                                                                              \
		struct args a = {.op = SH_FILE_OPEN, .dfd1 = (DFD), .path1 = (u64)(PATH), \
				 .flags = (FLAGS), .mode = (MODE)};                    \
		return save(&a);                                                       \
	}

ENTER_OPEN(openat, args->dfd, args->filename, args->flags, args->mode)
#if SH_LEGACY_SYSCALLS
ENTER_OPEN(open, AT_FDCWD_, args->filename, args->flags, args->mode)
ENTER_OPEN(creat, AT_FDCWD_, args->pathname, 01 | O_CREAT_ | O_TRUNC_, args->mode)
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
	u64 how[2] = {};  /* struct open_how { u64 flags; u64 mode; u64 resolve; } */
	bpf_probe_read_user(how, sizeof(how), args->how);
	struct args a = {.op = SH_FILE_OPEN, .dfd1 = args->dfd, .path1 = (u64)args->filename,
			 .flags = (u32)how[0], .mode = (u32)how[1]};
	return save(&a);
}

#define ENTER_NAME(name, OP, DFD, PATH, FLAGS, MODE, UID, GID)                          \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                   \
	{                                                                              \
		struct args a = {.op = (OP), .dfd1 = (DFD), .path1 = (u64)(PATH),      \
				 .flags = (FLAGS), .mode = (MODE), .uid = (UID), .gid = (GID)}; \
		return save(&a);                                                       \
	}

ENTER_NAME(unlinkat, SH_FILE_UNLINK, args->dfd, args->pathname, args->flag, 0, 0, 0)
ENTER_NAME(fchmodat, SH_FILE_CHMOD, args->dfd, args->filename, 0, args->mode, 0, 0)
ENTER_NAME(fchmodat2, SH_FILE_CHMOD, args->dfd, args->filename, args->flags, args->mode, 0, 0)
ENTER_NAME(fchownat, SH_FILE_CHOWN, args->dfd, args->filename, args->flag, 0, args->user, args->group)
ENTER_NAME(truncate, SH_FILE_TRUNCATE, AT_FDCWD_, args->path, 0, 0, 0, 0)
#if SH_LEGACY_SYSCALLS
ENTER_NAME(unlink, SH_FILE_UNLINK, AT_FDCWD_, args->pathname, 0, 0, 0, 0)
ENTER_NAME(chmod, SH_FILE_CHMOD, AT_FDCWD_, args->filename, 0, args->mode, 0, 0)
ENTER_NAME(chown, SH_FILE_CHOWN, AT_FDCWD_, args->filename, 0, 0, args->user, args->group)
ENTER_NAME(lchown, SH_FILE_CHOWN, AT_FDCWD_, args->filename, 0x100, 0, args->user, args->group)
#endif

#define ENTER_RENAME(name, OLDDFD, OLD, NEWDFD, NEW, FLAGS)                             \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                   \
	{                                                                              \
		struct args a = {.op = SH_FILE_RENAME, .dfd1 = (OLDDFD), .path1 = (u64)(OLD), \
				 .dfd2 = (NEWDFD), .path2 = (u64)(NEW), .flags = (FLAGS)}; \
		return save(&a);                                                       \
	}

ENTER_RENAME(renameat2, args->olddfd, args->oldname, args->newdfd, args->newname, args->flags)
ENTER_RENAME(renameat, args->olddfd, args->oldname, args->newdfd, args->newname, 0)
#if SH_LEGACY_SYSCALLS
ENTER_RENAME(rename, AT_FDCWD_, args->oldname, AT_FDCWD_, args->newname, 0)
#endif

#define ENTER_FD(name, OP, FD, MODE, UID, GID)                                          \
	TRACEPOINT_PROBE(syscalls, sys_enter_##name)                                   \
	{                                                                              \
		struct args a = {.op = (OP), .fd = (FD), .mode = (MODE), .uid = (UID), .gid = (GID)}; \
		return save(&a);                                                       \
	}

ENTER_FD(fchmod, SH_FILE_CHMOD, args->fd, args->mode, 0, 0)
ENTER_FD(fchown, SH_FILE_CHOWN, args->fd, 0, args->user, args->group)
ENTER_FD(ftruncate, SH_FILE_TRUNCATE, args->fd, 0, 0, 0)

/* --- sys_exit: resolve, match, report ------------------------------------------------------------ */

static __always_inline struct args *take(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	return inflight.lookup(&tid);
}

static __always_inline void done(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	inflight.delete(&tid);
}

static __always_inline u32 enf_bit(u32 op)
{
	switch (op) {
	case SH_FILE_UNLINK: return SH_FILE_ENF_UNLINK;
	case SH_FILE_RENAME: return SH_FILE_ENF_RENAME;
	case SH_FILE_CHMOD: return SH_FILE_ENF_CHMOD;
	case SH_FILE_CHOWN: return SH_FILE_ENF_CHOWN;
	case SH_FILE_TRUNCATE: return SH_FILE_ENF_TRUNCATE;
	}
	return 0;
}

static __always_inline int on_open_exit(long ret)
{
	struct args *a = take();
	if (!a)
		return 0;
	struct args saved = *a;
	done();
	struct scratch *s = begin(SH_FILE_OPEN);
	if (!s)
		return 0;
	void *task = (void *)bpf_get_current_task();
	void *file = 0;
	u32 k;
	if (ret >= 0) {
		file = fd_file(task, (u32)ret);
		if (!file)
			return 0;
		k = path_of_file(s, file);
	} else {
		k = path_of_name(s, task, saved.dfd1, saved.path1);
	}
	struct watch_val *w = match(s, k);
	if (!w)
		return 0;
	u32 enforce = w->enforce, rule = w->rule;
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	m->result = ret;
	m->flags = saved.flags;
	m->mode = saved.mode;
	m->path_len = copy_path(s, 0);
	u32 enf = 0;
	if (file) {
		file_identity(s, file);
		if (rd_u32(file, OFF_FILE_F_MODE) & FMODE_CREATED_)
			m->kflags |= SH_FILE_CREATED;
		u32 acc = saved.flags & O_ACCMODE_;
		if (acc == 0 || acc == 2)
			enf |= SH_FILE_ENF_OPEN_READ;
		if (acc == 1 || acc == 2 || (saved.flags & (O_CREAT_ | O_TRUNC_)))
			enf |= SH_FILE_ENF_OPEN_WRITE;
		if ((acc == 1 || acc == 2) && !(enforce & enf)) {
			/* the first write through this open file is reported too */
			u64 key = (u64)file;
			struct wfd v = {.inode = (u64)rd_ptr(file, OFF_FILE_F_INODE), .enforce = enforce, .rule = rule};
			wfds.update(&key, &v);
			u32 tgid = bpf_get_current_pid_tgid() >> 32;
			u8 one = 1;
			wprocs.update(&tgid, &one);
		}
	}
	finish(s, task, enf, enforce, rule);
	return 0;
}

static __always_inline int on_name_exit(long ret)
{
	struct args *a = take();
	if (!a)
		return 0;
	struct args saved = *a;
	done();
	struct scratch *s = begin(saved.op);
	if (!s)
		return 0;
	void *task = (void *)bpf_get_current_task();
	u32 k = path_of_name(s, task, saved.dfd1, saved.path1);
	struct watch_val *w = match(s, k);
	if (!w)
		return 0;
	u32 enforce = w->enforce, rule = w->rule;
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	m->result = ret;
	m->flags = saved.flags;
	m->mode = saved.mode;
	m->arg_uid = saved.uid;
	m->arg_gid = saved.gid;
	m->path_len = copy_path(s, 0);
	finish(s, task, ret >= 0 ? enf_bit(saved.op) : 0, enforce, rule);
	return 0;
}

static __always_inline int on_rename_exit(long ret)
{
	struct args *a = take();
	if (!a)
		return 0;
	struct args saved = *a;
	done();
	struct scratch *s = begin(SH_FILE_RENAME);
	if (!s)
		return 0;
	void *task = (void *)bpf_get_current_task();
	u32 k = path_of_name(s, task, saved.dfd1, saved.path1);
	struct watch_val *w = match(s, k);
	u32 enforce = 0, rule = 0, hit = 0;
	if (w) {
		enforce = w->enforce;
		rule = w->rule;
		hit = 1;
	}
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	u32 plen = copy_path(s, 0);
	m->path_len = plen;
	u32 k2 = path_of_name(s, task, saved.dfd2, saved.path2);
	w = match(s, k2);
	if (w) {
		enforce |= w->enforce;
		if (!rule)
			rule = w->rule;
		hit = 1;
	}
	if (!hit)
		return 0;
	if (k2 & SH_FILE_TRUNC_PATH)
		m->kflags |= SH_FILE_TRUNC_TARGET;
	if (k2 & SH_FILE_RELATIVE)
		m->kflags |= SH_FILE_RELATIVE_TARGET;
	m->target_len = copy_path(s, plen);
	m->result = ret;
	m->flags = saved.flags;
	finish(s, task, ret >= 0 ? SH_FILE_ENF_RENAME : 0, enforce, rule);
	return 0;
}

static __always_inline int on_fd_exit(long ret)
{
	struct args *a = take();
	if (!a)
		return 0;
	struct args saved = *a;
	done();
	struct scratch *s = begin(saved.op);
	if (!s)
		return 0;
	void *task = (void *)bpf_get_current_task();
	void *file = fd_file(task, saved.fd);
	if (!file)
		return 0;
	u32 k = path_of_file(s, file);
	struct watch_val *w = match(s, k);
	if (!w)
		return 0;
	u32 enforce = w->enforce, rule = w->rule;
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	m->result = ret;
	m->mode = saved.mode;
	m->arg_uid = saved.uid;
	m->arg_gid = saved.gid;
	m->path_len = copy_path(s, 0);
	file_identity(s, file);
	finish(s, task, ret >= 0 ? enf_bit(saved.op) : 0, enforce, rule);
	return 0;
}

#define EXIT(name, HANDLER) \
	TRACEPOINT_PROBE(syscalls, sys_exit_##name) { return HANDLER(args->ret); }

EXIT(openat, on_open_exit)
EXIT(openat2, on_open_exit)
EXIT(unlinkat, on_name_exit)
EXIT(fchmodat, on_name_exit)
EXIT(fchmodat2, on_name_exit)
EXIT(fchownat, on_name_exit)
EXIT(truncate, on_name_exit)
EXIT(renameat2, on_rename_exit)
EXIT(renameat, on_rename_exit)
EXIT(fchmod, on_fd_exit)
EXIT(fchown, on_fd_exit)
EXIT(ftruncate, on_fd_exit)
#if SH_LEGACY_SYSCALLS
EXIT(open, on_open_exit)
EXIT(creat, on_open_exit)
EXIT(unlink, on_name_exit)
EXIT(chmod, on_name_exit)
EXIT(chown, on_name_exit)
EXIT(lchown, on_name_exit)
EXIT(rename, on_rename_exit)
#endif

/* --- writes: the first one per watched descriptor ------------------------------------------------ */

static __always_inline int on_write(u32 fd)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!wprocs.lookup(&tgid))
		return 0;  /* the common case: one hash lookup */
	void *task = (void *)bpf_get_current_task();
	void *file = fd_file(task, fd);
	u64 key = (u64)file;
	struct wfd *w = wfds.lookup(&key);
	if (!w)
		return 0;
	struct wfd v = *w;
	wfds.delete(&key);
	if (!file || (u64)rd_ptr(file, OFF_FILE_F_INODE) != v.inode)
		return 0;  /* the struct file was freed and reused since the open */
	struct scratch *s = begin(SH_FILE_WRITE);
	if (!s)
		return 0;
	struct sh_msg_file *m = &s->msg;
	m->kflags = path_of_file(s, file);
	m->path_len = copy_path(s, 0);
	file_identity(s, file);
	finish(s, task, SH_FILE_ENF_WRITE, v.enforce, v.rule);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { return on_write(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_enter_pwrite64) { return on_write(args->fd); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return on_write((u32)args->fd); }
