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

#endif
