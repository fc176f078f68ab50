/* Helpers every siemhub BPF program uses (BPF side only; siemhub.h is shared with user space).
 *
 * Kernel struct fields are read at byte offsets resolved from BTF (-DOFF_* cflags), never through the
 * installed headers: rd_*() read one field; a NULL or unreadable base yields 0.
 * (Map helpers such as wake_flag() stay in each program: bcc rewrites map calls in the program's
 * own text only, not inside macros.)
 */
#ifndef SH_BPF_H
#define SH_BPF_H

static __always_inline void *rd_ptr(const void *base, int off)
{
	void *v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u16 rd_u16(const void *base, int off)
{
	u16 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u32 rd_u32(const void *base, int off)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

static __always_inline u64 rd_u64(const void *base, int off)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const char *)base + off);
	return v;
}

/* Loads through BTF-typed pointers, for the current task and what hangs off it.
 *
 * bpf_get_current_task_btf() gives a pointer the verifier knows as a struct task_struct; a field of it
 * is then read with one load instruction (checked at load time against the kernel's BTF, and turned
 * into a faulting-safe load by the JIT: an unreadable or NULL address reads as 0, as with
 * bpf_probe_read_kernel), and a pointer field read that way is typed in turn. That is several times
 * cheaper than a bpf_probe_read_kernel helper call per field. The offsets are the same -DOFF_* from BTF.
 * Only exact fields can be read so (no container_of: negative offsets are refused), and only from such
 * typed pointers: a pointer that came out of bpf_probe_read_kernel is a plain number to the verifier.
 * The loads are volatile so that the compiler never merges two adjacent fields into one wider load,
 * which the verifier would refuse. Compiled with -DSH_PROBE_READ_ONLY (kernels before 5.11, which lack
 * the helper), every ld_*() is a bpf_probe_read_kernel instead, with the same results. */
#ifndef SH_PROBE_READ_ONLY
#define sh_current_task() ((void *)bpf_get_current_task_btf())
static __always_inline void *ld_ptr(const void *base, int off)
{
	return *(void *const volatile *)((const char *)base + off);
}
static __always_inline u16 ld_u16(const void *base, int off)
{
	return *(const volatile u16 *)((const char *)base + off);
}
static __always_inline u32 ld_u32(const void *base, int off)
{
	return *(const volatile u32 *)((const char *)base + off);
}
static __always_inline u64 ld_u64(const void *base, int off)
{
	return *(const volatile u64 *)((const char *)base + off);
}
#else
#define sh_current_task() ((void *)bpf_get_current_task())
#define ld_ptr rd_ptr
#define ld_u16 rd_u16
#define ld_u32 rd_u32
#define ld_u64 rd_u64
#endif

/* Several fields of one object in one bpf_probe_read_kernel, for pointers that are not BTF-typed: the
 * window [SH_WIN_LO(..), SH_WIN_HI(..)) covers the fields (8-byte aligned start, so every field keeps its
 * natural alignment in the copy); SH_WIN_FITS says whether it fits SH_WIN_MAX bytes. Users keep a
 * field-by-field fallback for when it does not (another kernel's layout), chosen at compile time. */
#ifndef SH_WIN_MAX
#define SH_WIN_MAX 64                      /* bytes; -DSH_WIN_MAX=8 forces the field-by-field reads */
#endif
#define SH_MIN2(a, b) ((a) < (b) ? (a) : (b))
#define SH_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define SH_WIN_FITS(lo, hi) ((hi) - (lo) <= SH_WIN_MAX)
#define SH_WIN_FIELD(type, win, lo, off) (*(type *)((char *)(win) + (off) - (lo)))

#endif
