/* File sensor: opens, writes, unlinks, renames, chmod, chown and truncates of watched paths.
 *
 * Only syscall tracepoints exist here (no kprobes, no fentry, no LSM). Each handled syscall runs one
 * program, at sys_exit: the arguments are read back from the task's saved user registers
 * (bpf_task_pt_regs; the syscall does not change them), and only when they are needed (a watched path,
 * a failed open, a by-name operation). An unwatched open costs the descriptor lookup, the identity of
 * the file's directory and one cache lookup, read with direct (BTF-typed) loads where the verifier
 * allows them (see file_cached_direct), nothing else; one in the directory this CPU saw last costs
 * no hash lookup either (memo_hit_direct, the fast path of on_open_exit). Renames also run at sys_enter (verdict cache).
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
 * Verdict cache (`vcache`, LRU): what a walk learnt about a directory D (path P) is kept under
 * (D's dentry, vfsmount): NONE when no watch entry is a prefix of "P/" and none lies below "P/" (the
 * `below` trie holds every "A/" that has watch entries strictly below it) — then no name in D can match
 * and an open there is skipped without building its path; CHECK when something below D is watched —
 * then the file's own (dentry, vfsmount) entry may say NOMATCH. Only "unwatched" is ever cached: a
 * watched path is always walked (its event needs the path). An entry is used only when
 *  - its generation is current: the kernel bumps it after every rename (a moved directory or file
 *    changes the path of a cached dentry), after mount/umount/move_mount/pivot_root and after an
 *    io_uring rename; user space bumps it around every watch-set change;
 *  - no rename is in flight (counted from sys_enter to sys_exit), so a verdict cannot be read while a
 *    dentry is being moved;
 *  - the dentry still has the same inode and name hash (qstr hash_len, salted by the parent): a freed
 *    and reused dentry cannot inherit a verdict.
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
#ifndef SH_IO_URING
#define SH_IO_URING 0                      /* io_uring tracepoints and io_kiocb.opcode exist */
#endif
#ifndef SH_VCACHE_ENTRIES
#define SH_VCACHE_ENTRIES 65536
#endif
#define SH_PBUF 4096                       /* the path is built backwards, ending at pbuf[SH_PBUF] */
#define SH_PMASK (SH_PBUF - 1)
#define SH_UBUF 512                        /* bytes of a user path string read */
#define AT_FDCWD_ -100
#define AT_REMOVEDIR_ 0x200
#define O_ACCMODE_ 3
#define O_CREAT_ 0100
#define O_TRUNC_ 01000
#define FMODE_CREATED_ 0x100000
#define IORING_OP_RENAMEAT_ 35
#define SKIP_CACHED (1U << 31)             /* internal kflag: the cache proved the path unwatched */
#define SKIP_UNWATCHED (1U << 30)          /* internal kflag: an absolute name compared in place, unwatched */
#define SKIP_ (SKIP_CACHED | SKIP_UNWATCHED)
#define SH_FD_EMBEDDED 64                  /* NR_OPEN_DEFAULT (BITS_PER_LONG) slots in files_struct.fd_array */

/* counters (per CPU): what was skipped and why, so nothing is dropped silently */
#define ST_SKIP_CACHED 0                   /* proven unwatched by the verdict cache: no path built */
#define ST_RESOLVED 1                      /* paths built and compared with the watch list */
#define ST_MATCHED 2                       /* of those, watched */
#define ST_STORED 3                        /* verdicts stored in the cache */
#define ST_INVALIDATED 4                   /* generation bumps by the kernel (renames, mounts) */
#define ST_N 5

struct lpm_key {
	u32 prefixlen;                     /* bits */
	u8 data[SH_FILE_KEY_MAX];
};

struct watch_val {
	u32 enforce;                       /* SH_FILE_ENF_* operations that get SIGKILL */
	u32 rule;                          /* enforce rule number (1-based) for the report, 0: none */
	u32 report;                        /* SH_FILE_ENF_* operations reported; 0: all (watch_writes: changes) */
};

struct wfd {
	u64 inode;                         /* struct inode * at open time: a reused struct file is not it */
	u32 enforce;
	u32 rule;
};

#define V_DIR 0                            /* vkey.kind: the entries inside directory `dentry` */
#define V_FILE 1                           /* vkey.kind: the file `dentry` itself */
#define V_NONE 1                           /* nothing watched at or below the directory */
#define V_CHECK 2                          /* something below is watched: ask the file's own entry */
#define V_NOMATCH 3                        /* this file is not watched */

struct vkey {
	u64 dentry;
	u64 mnt;                           /* struct vfsmount *: a bind mount shows the dentry elsewhere */
	u64 kind;
};

struct vval {
	u64 gen;
	u64 inode;                         /* dentry->d_inode when stored */
	u64 hash_len;                      /* dentry->d_name.hash_len when stored */
	u64 verdict;
};

/* d_parent, d_name.hash_len and d_inode, read in one go (they are neighbours in struct dentry;
 * user space checks that the span is at most SH_DB_SIZE bytes) */
struct dblock {
	u64 parent;
	u64 hash_len;
	u64 inode;
};

/* the last directory found NONE on this CPU: consecutive opens in one directory skip the hash lookup */
struct vmemo {
	u64 skips;                         /* opens answered by the fast path (counted here: its cache line
					      is loaded anyway); user space adds them to ST_SKIP_CACHED */
	u64 dentry;
	u64 mnt;
	u64 gen;
	u64 inode;
	u64 hash_len;
};

/* identities gathered on the fast path, reused to store verdicts after a walk */
struct cctx {
	u64 gen;                           /* 0: the cache may not be used (rename in flight) */
	u64 dentry;
	u64 mnt;
	struct dblock self;
	struct dblock par;
};

struct scratch {
	struct sh_msg_file msg;
	char data[4 * SH_FILE_PATH_MAX];   /* path, NUL, target, NUL; masks keep writes inside */
	char pbuf[2 * SH_PBUF];            /* backwards path builder; the LPM key is read in place */
	u32 uhdr;                          /* LPM prefixlen in front of ubuf: absolute names are compared in place */
	char ubuf[SH_UBUF];
	u32 pos;                           /* start of the path in pbuf (kept in memory: verifier pruning) */
	u32 npos;                          /* the '/' that ends the parent directory's part ("P/"), 0: none */
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch_map, struct scratch, 1);
BPF_PERCPU_ARRAY(wakeups, u64, 1);
BPF_PERCPU_ARRAY(lost, u64, 1);
BPF_PERCPU_ARRAY(killed, u64, 1);
BPF_PERCPU_ARRAY(stats, u64, ST_N);
BPF_TABLE("lru_hash", u64, struct wfd, wfds, 16384);     /* struct file * -> watched for writes */
BPF_TABLE("lru_hash", u32, u8, wprocs, 16384);           /* processes holding such files */
BPF_LPM_TRIE(watch, struct lpm_key, struct watch_val, 4096);
BPF_LPM_TRIE(below, struct lpm_key, u32, 4096);          /* "A/" with watch entries below -> its length */
BPF_TABLE("lru_hash", struct vkey, struct vval, vcache, SH_VCACHE_ENTRIES);
BPF_ARRAY(state, u64, 4);                                /* [0] kernel generation, [1] renames in flight,
							    [2] armed: set by user space once all is attached,
							    [3] user space generation (watch-set changes);
							    one cache line for the fast path */
BPF_HASH(holds, u64, u8, 4096);                          /* renames in flight: thread id or io_uring req */
BPF_PERCPU_ARRAY(last, struct vmemo, 1);

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

static __always_inline void count(u32 i)
{
	bump(stats.lookup(&i));
}

/* --- syscall arguments: the saved user registers (x86-64: di, si, dx, r10, r8) -------------------- */

static __always_inline void *user_regs(void)
{
	return (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

/* bpf_task_pt_regs() returns a typed pointer: its fields are loaded directly (no helper call) */
#define ARG(regs, n) (*(u64 *)((char *)(regs) + OFF_REG_ARG##n))

/* --- the verdict cache ---------------------------------------------------------------------------- */

/* The current generation + 1, or 0 while a rename is in flight (the cache is then neither read nor
 * written). Array lookups are inlined by the verifier: this costs a few instructions. */
static __always_inline u64 cache_gen(void)
{
	/* (not armed yet: renames are not held, so the cache is not used either) */
	u32 k0 = 0, k1 = 1;
	u32 k2 = 2, k3 = 3;
	u64 *g = state.lookup(&k0);
	u64 *busy = state.lookup(&k1);
	u64 *armed = state.lookup(&k2);
	u64 *u = state.lookup(&k3);
	if (!g || !busy || !armed || !u || *busy || !*armed)
		return 0;
	return *g + *u + 1;
}

/* bcc attaches the programs in the order of their names (sys_enter_* before sys_exit_*): a hold taken
 * before its release is attached would never be released. So holds are taken only once user space has
 * armed the cache, after every program is attached; a rename already running then holds nothing and
 * still bumps the generation at exit. */
static __always_inline void cache_hold(u64 id)
{
	u32 k2 = 2;
	u64 *armed = state.lookup(&k2);
	if (!armed || !*armed)
		return;
	u8 one = 1;
	if (holds.insert(&id, &one) == 0) {
		u32 k1 = 1;
		u64 *busy = state.lookup(&k1);
		if (busy)
			__sync_fetch_and_add(busy, 1);
	}
}

/* After a rename (or mount change): every cached verdict is stale. */
static __always_inline void cache_invalidate(void)
{
	u32 k0 = 0;
	u64 *g = state.lookup(&k0);
	if (g)
		__sync_fetch_and_add(g, 1);
	count(ST_INVALIDATED);
}

static __always_inline void cache_release(u64 id)
{
	cache_invalidate();  /* first: nothing computed during the rename survives it */
	if (holds.lookup(&id)) {
		holds.delete(&id);
		u32 k1 = 1;
		u64 *busy = state.lookup(&k1);
		if (busy)
			__sync_fetch_and_add(busy, -1);
	}
}

#define MIN_(a, b) ((a) < (b) ? (a) : (b))
#define MAX_(a, b) ((a) > (b) ? (a) : (b))
#define SH_DB_START MIN_(MIN_(OFF_DENTRY_PARENT, OFF_DENTRY_NAME + OFF_QSTR_HASH_LEN), OFF_DENTRY_INODE)
#define SH_DB_SIZE (MAX_(MAX_(OFF_DENTRY_PARENT, OFF_DENTRY_NAME + OFF_QSTR_HASH_LEN), OFF_DENTRY_INODE) + 8 - SH_DB_START)
_Static_assert(SH_DB_SIZE <= 64, "d_parent, d_name and d_inode are no longer neighbours");

static __always_inline void dread(u64 dentry, struct dblock *b)
{
	char blk[SH_DB_SIZE];
	bpf_probe_read_kernel(blk, sizeof(blk), (char *)dentry + SH_DB_START);
	b->parent = *(u64 *)&blk[OFF_DENTRY_PARENT - SH_DB_START];
	b->hash_len = *(u64 *)&blk[OFF_DENTRY_NAME + OFF_QSTR_HASH_LEN - SH_DB_START];
	b->inode = *(u64 *)&blk[OFF_DENTRY_INODE - SH_DB_START];
}

static __always_inline int cache_says(u64 gen, u64 dentry, u64 mnt, u64 kind, struct dblock *id, u64 verdict)
{
	struct vkey k = {.dentry = dentry, .mnt = mnt, .kind = kind};
	struct vval *v = vcache.lookup(&k);
	return v && v->gen == gen && v->verdict == verdict && v->inode == id->inode && v->hash_len == id->hash_len;
}

static __always_inline void cache_put(u64 gen, u64 dentry, u64 mnt, u64 kind, struct dblock *id, u64 verdict)
{
	struct vkey k = {.dentry = dentry, .mnt = mnt, .kind = kind};
	struct vval v = {.gen = gen, .inode = id->inode, .hash_len = id->hash_len, .verdict = verdict};
	vcache.update(&k, &v);
	count(ST_STORED);
}

/* 1 when directory (dentry, mnt), whose identity is `id`, is known to hold nothing watched. */
static __always_inline int dir_none(u64 gen, u64 dentry, u64 mnt, struct dblock *id)
{
	u32 zero = 0;
	struct vmemo *lm = last.lookup(&zero);
	if (!lm)
		return 0;
	if (lm->dentry == dentry && lm->mnt == mnt && lm->gen == gen && lm->inode == id->inode &&
	    lm->hash_len == id->hash_len)
		return 1;
	if (!cache_says(gen, dentry, mnt, V_DIR, id, V_NONE))
		return 0;
	lm->dentry = dentry;
	lm->mnt = mnt;
	lm->gen = gen;
	lm->inode = id->inode;
	lm->hash_len = id->hash_len;
	return 1;
}

/* 1 when the cache proves the open file unwatched. Fills `c` for cache_store(). */
static __always_inline int file_cached(struct cctx *c, void *file)
{
	u64 p[2] = {};
	bpf_probe_read_kernel(p, sizeof(p), (char *)file + OFF_FILE_F_PATH);
	c->mnt = p[(OFF_PATH_MNT / 8) & 1];
	c->dentry = p[(OFF_PATH_DENTRY / 8) & 1];
	c->gen = cache_gen();
	if (!c->gen || !c->dentry) {
		c->gen = 0;
		return 0;
	}
	dread(c->dentry, &c->self);
	if (!c->self.parent || c->self.parent == c->dentry) {
		c->gen = 0;  /* a root: it has no directory to ask, and nothing is stored */
		return 0;
	}
	dread(c->self.parent, &c->par);
	if (dir_none(c->gen, c->self.parent, c->mnt, &c->par))
		return 1;
	return cache_says(c->gen, c->dentry, c->mnt, V_FILE, &c->self, V_NOMATCH);
}

/* The fast path of opens, with direct loads: from bpf_get_current_task_btf() the verifier knows the
 * type of every field walked to (task->files->fd_array[fd]->f_path.dentry->d_parent...) and lets the
 * program load it like memory (a fault reads 0) instead of calling bpf_probe_read_kernel, which costs
 * ~35 ns a call here. Only pointers to structs keep a type, so this works for the descriptor table
 * embedded in files_struct (processes that never had more than 64 descriptors); others take
 * fd_file() and file_cached(). Offsets into a typed pointer must be constants: fd_array[fd] is one
 * constant load per descriptor number (inline asm, so the compiler cannot turn it into a computed
 * offset). */
#define LDP(p, off) (*(void **)((char *)(p) + (off)))
#define LD32(p, off) (*(u32 *)((char *)(p) + (off)))
#define FD_CASE(n)                                                                               \
	case n:                                                                                  \
		asm volatile("%[f] = *(u64 *)(%[b] + %[o])"                                      \
			     : [f] "=r"(f)                                                       \
			     : [b] "r"(files), [o] "i"(OFF_FILES_FD_ARRAY + 8 * (n)));          \
		break;

static __always_inline void *fd_embedded(void *files, u32 fd)
{
	void *f = 0;
	switch (fd) {
	FD_CASE(0)
	FD_CASE(1)
	FD_CASE(2)
	FD_CASE(3)
	FD_CASE(4)
	FD_CASE(5)
	FD_CASE(6)
	FD_CASE(7)
	FD_CASE(8)
	FD_CASE(9)
	FD_CASE(10)
	FD_CASE(11)
	FD_CASE(12)
	FD_CASE(13)
	FD_CASE(14)
	FD_CASE(15)
	FD_CASE(16)
	FD_CASE(17)
	FD_CASE(18)
	FD_CASE(19)
	FD_CASE(20)
	FD_CASE(21)
	FD_CASE(22)
	FD_CASE(23)
	FD_CASE(24)
	FD_CASE(25)
	FD_CASE(26)
	FD_CASE(27)
	FD_CASE(28)
	FD_CASE(29)
	FD_CASE(30)
	FD_CASE(31)
	FD_CASE(32)
	FD_CASE(33)
	FD_CASE(34)
	FD_CASE(35)
	FD_CASE(36)
	FD_CASE(37)
	FD_CASE(38)
	FD_CASE(39)
	FD_CASE(40)
	FD_CASE(41)
	FD_CASE(42)
	FD_CASE(43)
	FD_CASE(44)
	FD_CASE(45)
	FD_CASE(46)
	FD_CASE(47)
	FD_CASE(48)
	FD_CASE(49)
	FD_CASE(50)
	FD_CASE(51)
	FD_CASE(52)
	FD_CASE(53)
	FD_CASE(54)
	FD_CASE(55)
	FD_CASE(56)
	FD_CASE(57)
	FD_CASE(58)
	FD_CASE(59)
	FD_CASE(60)
	FD_CASE(61)
	FD_CASE(62)
	FD_CASE(63)
	}
	return f;
}

static __always_inline void dread_direct(void *dentry, struct dblock *b)
{
	b->parent = (u64)LDP(dentry, OFF_DENTRY_PARENT);
	b->hash_len = ((u64)LD32(dentry, OFF_DENTRY_NAME + OFF_QSTR_LEN) << 32) |
		      LD32(dentry, OFF_DENTRY_NAME + OFF_QSTR_HASH);
	b->inode = (u64)LDP(dentry, OFF_DENTRY_INODE);
}

/* file_cached() with direct loads; `file` comes from fd_embedded(). */
static __always_inline int file_cached_direct(struct cctx *c, void *file)
{
	void *dentry = LDP(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
	c->mnt = (u64)LDP(file, OFF_FILE_F_PATH + OFF_PATH_MNT);
	c->dentry = (u64)dentry;
	c->gen = cache_gen();
	if (!c->gen || !dentry) {
		c->gen = 0;
		return 0;
	}
	dread_direct(dentry, &c->self);
	void *parent = LDP(dentry, OFF_DENTRY_PARENT);
	if (!parent || parent == dentry) {
		c->gen = 0;
		return 0;
	}
	dread_direct(parent, &c->par);
	if (dir_none(c->gen, c->self.parent, c->mnt, &c->par))
		return 1;
	return cache_says(c->gen, c->dentry, c->mnt, V_FILE, &c->self, V_NOMATCH);
}

/* The common case of an unwatched open, answered first and with as little as possible: the file's
 * directory is the one this CPU last found NONE (the memo, see dir_none), with the same mount,
 * identity (inode, name hash) and generation, and no rename is in flight. `file` comes from
 * fd_embedded(). The cheap comparisons (directory and mount) come first: a miss costs no generation
 * read. The `armed` flag need not be read: a memo is stored only with a generation from cache_gen(),
 * never 0, and cache_gen() is 0 until armed. Anything else (another directory, a stale memo) falls
 * back to file_cached_direct(), which asks the memo again and the hash. */
static __always_inline int memo_hit_direct(void *file)
{
	u32 zero = 0, k1 = 1, k3 = 3;
	struct vmemo *lm = last.lookup(&zero);
	if (!lm)
		return 0;
	void *dentry = LDP(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
	if (!dentry)
		return 0;
	void *parent = LDP(dentry, OFF_DENTRY_PARENT);
	if (lm->dentry != (u64)parent || parent == dentry ||
	    lm->mnt != (u64)LDP(file, OFF_FILE_F_PATH + OFF_PATH_MNT))
		return 0;
	u64 *g = state.lookup(&zero);
	u64 *busy = state.lookup(&k1);
	u64 *u = state.lookup(&k3);
	if (!g || !busy || !u || *busy || lm->gen != *g + *u + 1)
		return 0;
	if (lm->inode != (u64)LDP(parent, OFF_DENTRY_INODE) ||
	    lm->hash_len != *(u64 *)((char *)parent + OFF_DENTRY_NAME + OFF_QSTR_HASH_LEN))
		return 0;
	lm->skips += 1;
	return 1;
}

/* 1 when the cache proves that nothing inside directory (dentry, mnt) is watched. */
static __always_inline int dir_cached(struct cctx *c, void *dentry, void *vfsmnt)
{
	c->dentry = (u64)dentry;
	c->mnt = (u64)vfsmnt;
	c->gen = cache_gen();
	if (!c->gen || !dentry)
		return 0;
	dread(c->dentry, &c->par);
	return dir_none(c->gen, c->dentry, c->mnt, &c->par);
}

/* --- path building -------------------------------------------------------------------------------- */

/* task->files->fdt->fd[fd], or 0. A process with at most 64 descriptors uses the table embedded in
 * files_struct (fdt == &files->fdtab, fdt->fd == files->fd_array): one read less. */
static __always_inline void *fd_file(void *task, u32 fd)
{
	void *files = rd_ptr(task, OFF_TASK_FILES);
	void *fdt = rd_ptr(files, OFF_FILES_FDT);
	if (!fdt)
		return 0;
	void *arr;
	if (fdt == (char *)files + OFF_FILES_FDTAB) {
		if (fd >= SH_FD_EMBEDDED)
			return 0;
		arr = (char *)files + OFF_FILES_FD_ARRAY;
	} else {
		if (fd >= rd_u32(fdt, OFF_FDTABLE_MAX_FDS))
			return 0;
		arr = rd_ptr(fdt, OFF_FDTABLE_FD);
	}
	return rd_ptr(arr, fd * sizeof(void *));
}

/* Prepend "/name" for each dentry from `dentry` up to the root of the mount tree, crossing mount
 * points. Returns SH_FILE_TRUNC_PATH when the walk stopped early (too deep or too long). With
 * `mark`, s->npos is set to the '/' in front of the first name (the parent's part ends there), unless
 * the first step crossed a mount point. */
static __always_inline u32 walk_path(struct scratch *s, void *dentry, void *vfsmnt, int mark)
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
			mark = 0;
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
		if (mark) {
			s->npos = pos;
			mark = 0;
		}
		dentry = parent;
	}
	return trunc;
}

static __always_inline void path_start(struct scratch *s)
{
	s->pos = SH_PBUF;
	s->npos = 0;
	s->pbuf[SH_PBUF] = 0;
}

/* The path of an open file. */
static __always_inline u32 path_of_file(struct scratch *s, void *file)
{
	path_start(s);
	count(ST_RESOLVED);
	u32 k = walk_path(s, rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY), rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_MNT), 1);
	if (s->pos == SH_PBUF) {
		s->pos = SH_PBUF - 1;
		s->pbuf[SH_PBUF - 1] = '/';
	}
	return k | SH_FILE_BY_FD;
}

/* The absolute path of a user string relative to dfd (AT_FDCWD: the cwd). A relative name in a
 * directory that the cache knows to hold nothing watched returns SKIP_CACHED without a walk. */
static __always_inline u32 path_of_name(struct scratch *s, struct cctx *c, void *task, s32 dfd, u64 upath,
					int use_cache)
{
	path_start(s);
	c->gen = 0;
	int n = bpf_probe_read_user_str(s->ubuf, SH_UBUF, (void *)upath);
	if (n <= 1)
		return SH_FILE_NO_PATH;
	u32 skip = (s->ubuf[0] == '.' && s->ubuf[1] == '/') ? 2 : 0;
	u32 len = (n - 1 - skip) & (SH_UBUF - 1);
	u32 pos = (SH_PBUF - len) & SH_PMASK;
	void *dentry = 0, *vfsmnt = 0, *file = 0;
	if (use_cache && s->ubuf[0] == '/' && n < SH_UBUF) {
		/* absolute: compare the string where it lies; build nothing when it is not watched */
		u32 bytes = n > SH_FILE_KEY_MAX ? SH_FILE_KEY_MAX : n;
		s->uhdr = bytes * 8;
		if (!watch.lookup((struct lpm_key *)&s->uhdr))
			return SKIP_UNWATCHED;
	}
	if (s->ubuf[0] != '/' && n < SH_UBUF) {
		/* relative: ask the cache about the starting directory before building anything */
		if (dfd == AT_FDCWD_) {
			u64 pwd[2] = {};
			bpf_probe_read_kernel(pwd, sizeof(pwd), (char *)rd_ptr(task, OFF_TASK_FS) + OFF_FS_PWD);
			vfsmnt = (void *)pwd[(OFF_PATH_MNT / 8) & 1];
			dentry = (void *)pwd[(OFF_PATH_DENTRY / 8) & 1];
		} else {
			file = fd_file(task, (u32)dfd);
			if (file) {
				dentry = rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_DENTRY);
				vfsmnt = rd_ptr(file, OFF_FILE_F_PATH + OFF_PATH_MNT);
			}
		}
		if (use_cache && dentry && dir_cached(c, dentry, vfsmnt))
			return SKIP_CACHED;
	}
	count(ST_RESOLVED);
	bpf_probe_read_kernel(&s->pbuf[pos], len, &s->ubuf[skip & 3]);
	s->pos = pos;
	if (n >= SH_UBUF)
		return SH_FILE_TRUNC_PATH;
	if (s->ubuf[0] == '/')
		return 0;
	pos = (pos - 1) & SH_PMASK;
	s->pbuf[pos] = '/';
	s->pos = pos;
	if (!dentry) {
		s->pos = (s->pos + 1) & SH_PMASK;  /* leave the string as given */
		return SH_FILE_RELATIVE;
	}
	s->npos = pos;  /* the starting directory's part ends at this '/' */
	return walk_path(s, dentry, vfsmnt, 0);
}

/* An LPM key over the first `bytes` bytes of the path at pbuf[pos] (at most SH_FILE_KEY_MAX): its
 * prefix length is written in the 4 bytes in front of the path (the caller checked pos >= 8). */
static __always_inline struct lpm_key *lpm_key_at(struct scratch *s, u32 pos, u32 bytes)
{
	if (bytes > SH_FILE_KEY_MAX)
		bytes = SH_FILE_KEY_MAX;
	u32 bits = bytes * 8;
	s->pbuf[pos - 4] = bits & 0xff;
	s->pbuf[pos - 3] = (bits >> 8) & 0xff;
	s->pbuf[pos - 2] = 0;
	s->pbuf[pos - 1] = 0;
	return (struct lpm_key *)&s->pbuf[pos - 4];
}

/* The watch entry covering the path in pbuf, if any: the LPM key is written in front of the path. */
static __always_inline struct watch_val *match(struct scratch *s, u32 kflags)
{
	if (kflags & (SH_FILE_TRUNC_PATH | SH_FILE_RELATIVE | SH_FILE_NO_PATH | SKIP_))
		return 0;  /* the root-side part of the path is unknown: it cannot be compared */
	u32 pos = s->pos & SH_PMASK;
	if (pos < 8)
		return 0;
	struct watch_val *w = watch.lookup(lpm_key_at(s, pos, SH_PBUF - pos + 1));
	if (w)
		count(ST_MATCHED);
	return w;
}

/* After a walk and match(): remember what was learnt about the parent directory "P/" (the part of the
 * path up to s->npos), and for a CHECK directory, that this file is not watched. */
static __always_inline void cache_store(struct scratch *s, struct cctx *c, u32 kflags, int by_file,
					struct watch_val *w)
{
	if (!c->gen || !s->npos || (kflags & (SH_FILE_TRUNC_PATH | SH_FILE_RELATIVE | SH_FILE_NO_PATH)))
		return;
	u32 pos = s->pos & SH_PMASK;
	u32 npos = s->npos & SH_PMASK;
	if (pos < 8 || npos < pos)
		return;
	u32 bytes = npos - pos + 1;  /* "P/" */
	if (bytes > SH_FILE_KEY_MAX)
		bytes = SH_FILE_KEY_MAX;
	struct lpm_key *key = lpm_key_at(s, pos, bytes);
	u32 *b = below.lookup(key);
	int has_below = b && *b == bytes;
	u64 dir = by_file ? c->self.parent : c->dentry;
	if (!has_below) {
		if (!watch.lookup(key))  /* no watched directory covers P either */
			cache_put(c->gen, dir, c->mnt, V_DIR, &c->par, V_NONE);
		return;
	}
	cache_put(c->gen, dir, c->mnt, V_DIR, &c->par, V_CHECK);
	if (by_file && !w)
		cache_put(c->gen, c->dentry, c->mnt, V_FILE, &c->self, V_NOMATCH);
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

static __always_inline struct scratch *begin(void)
{
	u32 zero = 0;
	return scratch_map.lookup(&zero);
}

/* The message header and fields, once the path is known to be watched. */
static __always_inline void msg_init(struct scratch *s, u32 op)
{
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
	m->start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);  /* the process' */
	bpf_get_current_comm(&m->comm, sizeof(m->comm));
	u32 size = sizeof(struct sh_msg_file) + ((m->path_len + m->target_len) & (4 * SH_FILE_PATH_MAX - 1));
	m->hdr.size = size;
	if (events.ringbuf_output(m, size, wake_flag()) != 0) {
		u32 zero = 0;
		bump(lost.lookup(&zero));
	}
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

/* --- opens ---------------------------------------------------------------------------------------- */

#define K_OPENAT 0
#define K_OPENAT2 1
#define K_OPEN 2
#define K_CREAT 3

/* dfd and name of an open, from the saved registers */
static __always_inline void open_name(void *regs, int kind, s32 *dfd, u64 *name)
{
	*dfd = AT_FDCWD_;
	if (kind == K_OPENAT || kind == K_OPENAT2) {
		*dfd = (s32)ARG(regs, 0);
		*name = ARG(regs, 1);
	} else {
		*name = ARG(regs, 0);
	}
}

/* flags and mode: read only for a watched path */
static __always_inline void open_flags(void *regs, int kind, u32 *flags, u32 *mode)
{
	if (kind == K_OPENAT) {
		*flags = (u32)ARG(regs, 2);
		*mode = (u32)ARG(regs, 3);
	} else if (kind == K_OPENAT2) {
		u64 how[2] = {};  /* struct open_how { u64 flags; u64 mode; u64 resolve; } */
		bpf_probe_read_user(how, sizeof(how), (void *)ARG(regs, 2));
		*flags = (u32)how[0];
		*mode = (u32)how[1];
	} else if (kind == K_OPEN) {
		*flags = (u32)ARG(regs, 1);
		*mode = (u32)ARG(regs, 2);
	} else {
		*flags = 01 | O_CREAT_ | O_TRUNC_;
		*mode = (u32)ARG(regs, 1);
	}
}

/* Every other open: a larger descriptor table, a directory not in the memo, a failed open. */
static __always_inline int on_open_slow(long ret, int kind)
{
	void *task;
	void *file = 0;
	struct cctx c = {};
	if (ret >= 0) {
		struct task_struct *t = bpf_get_current_task_btf();
		void *files = LDP(t, OFF_TASK_FILES);
		void *fdt = LDP(files, OFF_FILES_FDT);
		int hit;
		if ((u64)fdt == (u64)files + OFF_FILES_FDTAB && ret < SH_FD_EMBEDDED) {
			void *f = fd_embedded(files, (u32)ret);
			if (!f)
				return 0;
			hit = file_cached_direct(&c, f);
		} else {
			/* a larger table: fdtable is still typed, its fd array of pointers is not */
			if (!fdt || (u32)ret >= LD32(fdt, OFF_FDTABLE_MAX_FDS))
				return 0;
			file = rd_ptr((void *)(u64)LDP(fdt, OFF_FDTABLE_FD), (u32)ret * sizeof(void *));
			if (!file)
				return 0;
			hit = file_cached(&c, file);
		}
		if (hit) {
			count(ST_SKIP_CACHED);
			return 0;  /* the common case */
		}
		/* the slow path reads with bpf_probe_read_kernel from an untyped pointer (one program
		 * path for both kinds of table) */
		task = (void *)bpf_get_current_task();
		file = fd_file(task, (u32)ret);
		if (!file)
			return 0;
	}
	task = (void *)bpf_get_current_task();
	struct scratch *s = begin();
	if (!s)
		return 0;
	s32 dfd = AT_FDCWD_;
	u64 name = 0;
	u32 flags = 0, mode = 0, k;
	void *regs = user_regs();
	if (file) {
		k = path_of_file(s, file);
	} else {
		open_name(regs, kind, &dfd, &name);
		k = path_of_name(s, &c, task, dfd, name, 1);
		if (k & SKIP_) {
			count(k & SKIP_CACHED ? ST_SKIP_CACHED : ST_RESOLVED);
			return 0;
		}
	}
	struct watch_val *w = match(s, k);
	u32 enforce = 0, rule = 0, report = 0;
	if (w) {
		enforce = w->enforce;
		rule = w->rule;
		report = w->report;
	}
	cache_store(s, &c, k, file != 0, w);
	if (!w)
		return 0;
	open_flags(regs, kind, &flags, &mode);
	if (report) {
		/* a path watched for changes only (watch_writes): an open for reading is not one */
		u32 acc = flags & O_ACCMODE_;
		if (acc == 0 && !(flags & (O_CREAT_ | O_TRUNC_)) && !(report & SH_FILE_ENF_OPEN_READ))
			return 0;
	}
	msg_init(s, SH_FILE_OPEN);
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	m->result = ret;
	m->flags = flags;
	m->mode = mode;
	m->path_len = copy_path(s, 0);
	u32 enf = 0;
	if (file) {
		file_identity(s, file);
		if (rd_u32(file, OFF_FILE_F_MODE) & FMODE_CREATED_)
			m->kflags |= SH_FILE_CREATED;
		u32 acc = flags & O_ACCMODE_;
		if (acc == 0 || acc == 2)
			enf |= SH_FILE_ENF_OPEN_READ;
		if (acc == 1 || acc == 2 || (flags & (O_CREAT_ | O_TRUNC_)))
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

/* Opens: the fast path (an opened descriptor in the embedded table, in the directory of the memo)
 * is kept apart from everything else so that it compiles to a short, straight run of instructions:
 * one helper call (bpf_get_current_task_btf) and nine loads. Measured with bench/file_ab.py, this took
 * the tight open loop's program from ~100 to ~89 ns a run (bpf_stats; an empty program: ~60, one that
 * only calls the helper: ~70-76). */
static __always_inline int on_open_exit(long ret, int kind)
{
	if (ret >= 0 && ret < SH_FD_EMBEDDED) {
		struct task_struct *t = bpf_get_current_task_btf();
		void *files = LDP(t, OFF_TASK_FILES);
		if ((u64)LDP(files, OFF_FILES_FDT) == (u64)files + OFF_FILES_FDTAB) {
			void *f = fd_embedded(files, (u32)ret);
			if (f && memo_hit_direct(f))
				return 0;  /* (counted in the memo) */
		}
	}
	return on_open_slow(ret, kind);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return on_open_exit(args->ret, K_OPENAT); }
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return on_open_exit(args->ret, K_OPENAT2); }
#if SH_LEGACY_SYSCALLS
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return on_open_exit(args->ret, K_OPEN); }
TRACEPOINT_PROBE(syscalls, sys_exit_creat) { return on_open_exit(args->ret, K_CREAT); }
#endif

/* --- operations by name: unlink, chmod, chown, truncate -------------------------------------------- */

struct nargs {
	u64 path;
	s32 dfd;
	u32 op;
	u32 flags;
	u32 mode;
	u32 uid;
	u32 gid;
};

/* Resolve and match a by-name operation: the scratch (path built) when watched, else 0. The other
 * arguments are read by the caller only then. */
static __always_inline struct scratch *name_match(struct nargs *a, struct watch_val *out)
{
	struct scratch *s = begin();
	if (!s)
		return 0;
	void *task = (void *)bpf_get_current_task();
	struct cctx c = {};
	u32 k = path_of_name(s, &c, task, a->dfd, a->path, 1);
	if (k & SKIP_) {
		count(k & SKIP_CACHED ? ST_SKIP_CACHED : ST_RESOLVED);
		return 0;
	}
	struct watch_val *w = match(s, k);
	if (w)
		*out = *w;
	cache_store(s, &c, k, 0, w);
	if (!w)
		return 0;
	msg_init(s, a->op);
	s->msg.kflags = k;
	return s;
}

static __always_inline int name_report(struct scratch *s, long ret, struct nargs *a, struct watch_val *w)
{
	struct sh_msg_file *m = &s->msg;
	m->result = ret;
	m->flags = a->flags;
	m->mode = a->mode;
	m->arg_uid = a->uid;
	m->arg_gid = a->gid;
	m->path_len = copy_path(s, 0);
	finish(s, (void *)bpf_get_current_task(), ret >= 0 ? enf_bit(a->op) : 0, w->enforce, w->rule);
	return 0;
}

/* NAME_EXIT(syscall, op, dfd, path, flags, mode, uid, gid): the argument expressions use `r` (the
 * saved registers); flags, mode, uid and gid are read only for a watched path. */
#define NAME_EXIT(name, OP, DFD, PATH, FLAGS, MODE, UID, GID)                                    \
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)                                              \
	{                                                                                        \
		void *r = user_regs();                                                           \
		struct nargs a = {.op = (OP), .dfd = (s32)(DFD), .path = (PATH)};                \
		struct watch_val w = {};                                                         \
		struct scratch *s = name_match(&a, &w);                                          \
		if (!s)                                                                          \
			return 0;                                                                \
		a.flags = (u32)(FLAGS);                                                          \
		a.mode = (u32)(MODE);                                                            \
		a.uid = (u32)(UID);                                                              \
		a.gid = (u32)(GID);                                                              \
		return name_report(s, args->ret, &a, &w);                                        \
	}

NAME_EXIT(unlinkat, SH_FILE_UNLINK, ARG(r, 0), ARG(r, 1), ARG(r, 2), 0, 0, 0)
NAME_EXIT(fchmodat, SH_FILE_CHMOD, ARG(r, 0), ARG(r, 1), 0, ARG(r, 2), 0, 0)
NAME_EXIT(fchmodat2, SH_FILE_CHMOD, ARG(r, 0), ARG(r, 1), ARG(r, 3), ARG(r, 2), 0, 0)
NAME_EXIT(fchownat, SH_FILE_CHOWN, ARG(r, 0), ARG(r, 1), ARG(r, 4), 0, ARG(r, 2), ARG(r, 3))
NAME_EXIT(truncate, SH_FILE_TRUNCATE, AT_FDCWD_, ARG(r, 0), 0, 0, 0, 0)
#if SH_LEGACY_SYSCALLS
NAME_EXIT(unlink, SH_FILE_UNLINK, AT_FDCWD_, ARG(r, 0), 0, 0, 0, 0)
NAME_EXIT(chmod, SH_FILE_CHMOD, AT_FDCWD_, ARG(r, 0), 0, ARG(r, 1), 0, 0)
NAME_EXIT(chown, SH_FILE_CHOWN, AT_FDCWD_, ARG(r, 0), 0, 0, ARG(r, 1), ARG(r, 2))
NAME_EXIT(lchown, SH_FILE_CHOWN, AT_FDCWD_, ARG(r, 0), 0x100, 0, ARG(r, 1), ARG(r, 2))
#endif

/* --- renames: hold the cache at enter, invalidate it at exit, then report --------------------------- */

static __always_inline int on_rename_exit(long ret, s32 olddfd, u64 oldname, s32 newdfd, u64 newname, u32 flags)
{
	cache_release(bpf_get_current_pid_tgid());
	struct scratch *s = begin();
	if (!s)
		return 0;
	msg_init(s, SH_FILE_RENAME);
	void *task = (void *)bpf_get_current_task();
	struct cctx c = {};  /* c.gen stays 0: nothing is cached from a rename */
	u32 k = path_of_name(s, &c, task, olddfd, oldname, 0);
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
	u32 k2 = path_of_name(s, &c, task, newdfd, newname, 0);
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
	m->flags = flags;
	finish(s, task, ret >= 0 ? SH_FILE_ENF_RENAME : 0, enforce, rule);
	return 0;
}

/* (the sys_enter halves are at the end of the file) */
#define RENAME(name, OLDDFD, OLD, NEWDFD, NEW, FLAGS)                                            \
	TRACEPOINT_PROBE(syscalls, sys_exit_##name)                                              \
	{                                                                                        \
		void *r = user_regs();                                                           \
		return on_rename_exit(args->ret, (s32)(OLDDFD), (OLD), (s32)(NEWDFD), (NEW), (u32)(FLAGS)); \
	}

RENAME(renameat2, ARG(r, 0), ARG(r, 1), ARG(r, 2), ARG(r, 3), ARG(r, 4))
RENAME(renameat, ARG(r, 0), ARG(r, 1), ARG(r, 2), ARG(r, 3), 0)
#if SH_LEGACY_SYSCALLS
RENAME(rename, AT_FDCWD_, ARG(r, 0), AT_FDCWD_, ARG(r, 1), 0)
#endif

/* Mount changes move whole trees under new names: cached verdicts are stale. */
TRACEPOINT_PROBE(syscalls, sys_exit_mount) { cache_invalidate(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_umount) { cache_invalidate(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_move_mount) { cache_invalidate(); return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_pivot_root) { cache_invalidate(); return 0; }

#if SH_IO_URING
/* An io_uring rename bypasses the syscall tracepoints: hold the cache from submission to completion
 * (a request that posts no completion leaves the cache disabled: slower, never wrong). The submit
 * half is at the end of the file. */
TRACEPOINT_PROBE(io_uring, io_uring_complete)
{
	u8 op = 0;
	bpf_probe_read_kernel(&op, 1, (char *)args->req + OFF_IO_KIOCB_OPCODE);
	if (op == IORING_OP_RENAMEAT_)
		cache_release((u64)args->req);
	return 0;
}
#endif

/* --- operations by descriptor: fchmod, fchown, ftruncate ------------------------------------------ */

static __always_inline int on_fd_exit(long ret, u32 op, u32 fd, u32 mode, u32 uid, u32 gid)
{
	void *task = (void *)bpf_get_current_task();
	void *file = fd_file(task, fd);
	if (!file)
		return 0;
	struct cctx c = {};
	if (file_cached(&c, file)) {
		count(ST_SKIP_CACHED);
		return 0;
	}
	struct scratch *s = begin();
	if (!s)
		return 0;
	u32 k = path_of_file(s, file);
	struct watch_val *w = match(s, k);
	u32 enforce = 0, rule = 0;
	if (w) {
		enforce = w->enforce;
		rule = w->rule;
	}
	cache_store(s, &c, k, 1, w);
	if (!w)
		return 0;
	msg_init(s, op);
	struct sh_msg_file *m = &s->msg;
	m->kflags = k;
	m->result = ret;
	m->mode = mode;
	m->arg_uid = uid;
	m->arg_gid = gid;
	m->path_len = copy_path(s, 0);
	file_identity(s, file);
	finish(s, task, ret >= 0 ? enf_bit(op) : 0, enforce, rule);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchmod)
{
	void *r = user_regs();
	return on_fd_exit(args->ret, SH_FILE_CHMOD, (u32)ARG(r, 0), (u32)ARG(r, 1), 0, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_fchown)
{
	void *r = user_regs();
	return on_fd_exit(args->ret, SH_FILE_CHOWN, (u32)ARG(r, 0), 0, (u32)ARG(r, 1), (u32)ARG(r, 2));
}

TRACEPOINT_PROBE(syscalls, sys_exit_ftruncate)
{
	void *r = user_regs();
	return on_fd_exit(args->ret, SH_FILE_TRUNCATE, (u32)ARG(r, 0), 0, 0, 0);
}

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
	struct scratch *s = begin();
	if (!s)
		return 0;
	msg_init(s, SH_FILE_WRITE);
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

/* --- the holding halves (see cache_hold: they do nothing until user space arms the cache) ---------- */

TRACEPOINT_PROBE(syscalls, sys_enter_renameat2) { cache_hold(bpf_get_current_pid_tgid()); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_renameat) { cache_hold(bpf_get_current_pid_tgid()); return 0; }
#if SH_LEGACY_SYSCALLS
TRACEPOINT_PROBE(syscalls, sys_enter_rename) { cache_hold(bpf_get_current_pid_tgid()); return 0; }
#endif

#if SH_IO_URING
TRACEPOINT_PROBE(io_uring, io_uring_submit_req)
{
	if (args->opcode == IORING_OP_RENAMEAT_) {
		cache_invalidate();
		cache_hold((u64)args->req);
	}
	return 0;
}
#endif
