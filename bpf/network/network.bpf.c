/* Network sensor: TCP connect (outbound), accept (inbound) and close, IPv4 and IPv6.
 *
 * sock:inet_sock_set_state carries family, ports and addresses, but only the CLOSE -> SYN_SENT step of a
 * connect runs in the connecting process; the rest of a connection's life runs in softirq, where the
 * current task is whoever the CPU was interrupted in. So the process is taken where it is right and
 * remembered per socket (`conns`, an LRU hash keyed by the socket's address):
 *   CLOSE -> SYN_SENT       connect(): remember the process
 *   SYN_SENT -> ESTABLISHED emit SH_NET_CONNECT with the remembered process (a failed connect emits nothing)
 *   sys_exit_accept4/accept the accepting process: returned fd -> file -> socket -> sock, addresses from
 *                           struct sock (BTF offsets), emit SH_NET_ACCEPT, remember the process
 *   any -> CLOSE            a remembered socket: emit SH_NET_CLOSE with tcp_sock byte counters and forget it
 * Filtering happens here: a connection whose remote address is in `ignore_cidrs` (an LPM trie of
 * IPv6 or IPv4-mapped addresses) or whose destination port is in `ignore_ports` is never remembered,
 * so neither it nor its close reach user space.
 *
 * DNS queries: sys_enter_sendto (send() is sendto), sys_enter_sendmsg and sys_enter_sendmmsg (glibc
 * sends A and AAAA in one sendmmsg on a connected socket). The destination is the sockaddr the call
 * names or, when it names none, the connected socket's (fd -> file -> socket -> sock, BTF offsets).
 * Only UDP datagrams to SH_DNS_PORT go further: a datagram with a sockaddr costs one 4-byte user read
 * to reject, one without costs the descriptor walk. What passes (and the ignore filters) gets a
 * bounded prefix of its payload copied into an sh_msg_dns; user space parses the query.
 * write()/writev() on a connected UDP socket (Go's resolver sends that way) are far too hot for a
 * descriptor walk each: sys_enter_connect remembers (process, fd) of sockets connected to the DNS port
 * in `dns_fds`, and a write costs one hash lookup unless it is on one of those.
 */
#include "siemhub.h"
#include "sh_bpf.h"

#ifndef SH_RINGBUF_PAGES
#define SH_RINGBUF_PAGES 1024
#endif
#ifndef SH_WAKEUP_EVERY
#define SH_WAKEUP_EVERY 64                 /* power of two */
#endif
#ifndef SH_MAX_CONNS
#define SH_MAX_CONNS 65536
#endif

#define SH_AF_INET 2
#define SH_AF_INET6 10
#define SH_IPPROTO_TCP 6
#define SH_IPPROTO_UDP 17
#define SH_SOCK_STREAM 1
#define SH_SOCK_DGRAM 2
#ifndef SH_DNS_PORT
#define SH_DNS_PORT 53
#endif
#ifndef SH_DNS_MMSG_MAX
#define SH_DNS_MMSG_MAX 8                  /* sendmmsg: messages looked at per call */
#endif
#define SH_NET_DNS 4                       /* index of DNS messages in `lost` */
#define SH_TCP_ESTABLISHED 1
#define SH_TCP_SYN_SENT 2
#define SH_TCP_CLOSE 7
#define SH_RCV_SHUTDOWN 1
#define SH_SEND_SHUTDOWN 2

struct conn {
	u32 pid;
	u32 tid;
	u64 start_boottime;
	u64 ktime;
	u8 outbound;
	u8 established;
	u8 pad[6];
};

struct cidr_key {
	u32 prefixlen;
	u8 addr[16];                       /* IPv6, or IPv4 as ::ffff:a.b.c.d */
};

BPF_RINGBUF_OUTPUT(events, SH_RINGBUF_PAGES);
BPF_TABLE("lru_hash", u64, struct conn, conns, SH_MAX_CONNS);
BPF_LPM_TRIE(ignore_cidrs, struct cidr_key, u8, 1024);
BPF_ARRAY(ignore_ports, u8, 65536);
BPF_ARRAY(filters_on, u32, 1);             /* set by user space once any filter exists */
BPF_TABLE("lru_hash", u64, u8, dns_fds, 4096);  /* tgid << 32 | fd of sockets connect()ed to the DNS port */
BPF_PERCPU_ARRAY(filtered, u64, 1);        /* connections dropped by the filters */
BPF_PERCPU_ARRAY(wakeups, u64, 1);
BPF_PERCPU_ARRAY(lost, u64, 6);            /* indexed by SH_NET_*, SH_NET_DNS, SH_NET_UDP */

static __always_inline u64 wake_flag(void)
{
	u32 k = 0;
	u64 *n = wakeups.lookup(&k);
	if (!n)
		return 0;
	*n += 1;
	return (*n & (SH_WAKEUP_EVERY - 1)) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void submit(struct sh_msg_net *m)
{
	if (events.ringbuf_output(m, sizeof(*m), wake_flag()) != 0) {
		u32 k = m->kind;
		u64 *n = lost.lookup(&k);
		if (n)
			*n += 1;
	}
}

/* True when the connection must not be reported (remote address or destination port ignored). */
static __always_inline bool ignored(const u8 *remote, u16 family, u16 dport)
{
	u32 zero = 0;
	u32 *on = filters_on.lookup(&zero);
	if (!on || !*on)
		return false;
	struct cidr_key k = {.prefixlen = 128};
	if (family == SH_AF_INET) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], remote, 4);
	} else {
		__builtin_memcpy(k.addr, remote, 16);
	}
	u32 port = dport;
	u8 *p = ignore_ports.lookup(&port);
	if ((p && *p) || ignore_cidrs.lookup(&k)) {
		u64 *f = filtered.lookup(&zero);
		if (f)
			*f += 1;
		return true;
	}
	return false;
}

static __always_inline void fill_process(struct sh_msg_net *m, const struct conn *c)
{
	m->pid = c->pid;
	m->tid = c->tid;
	m->start_boottime = c->start_boottime;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
	if (args->protocol != SH_IPPROTO_TCP)
		return 0;
	u64 sk = (u64)args->skaddr;
	int from = args->oldstate, to = args->newstate;

	if (to == SH_TCP_SYN_SENT) {
		/* connect(): this runs in the connecting task */
		void *task = (void *)bpf_get_current_task();
		u64 pid_tgid = bpf_get_current_pid_tgid();
		struct conn c = {};
		c.pid = pid_tgid >> 32;
		c.tid = (u32)pid_tgid;
		c.start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);  /* the process, not this thread */
		c.ktime = bpf_ktime_get_boot_ns();
		c.outbound = 1;
		conns.update(&sk, &c);
		return 0;
	}
	if (to != SH_TCP_ESTABLISHED && to != SH_TCP_CLOSE)
		return 0;
	struct conn *c = conns.lookup(&sk);
	if (!c)
		return 0;

	struct sh_msg_net m = {};
	m.hdr.type = SH_MSG_NET;
	m.hdr.size = sizeof(m);
	m.hdr.ktime = bpf_ktime_get_boot_ns();
	m.family = args->family;
	m.local_port = args->sport;
	m.remote_port = args->dport;
	if (args->family == SH_AF_INET) {
		__builtin_memcpy(m.local_addr, args->saddr, 4);
		__builtin_memcpy(m.remote_addr, args->daddr, 4);
	} else {
		__builtin_memcpy(m.local_addr, args->saddr_v6, 16);
		__builtin_memcpy(m.remote_addr, args->daddr_v6, 16);
	}
	m.sock = sk;
	m.flags = c->outbound ? SH_NET_OUTBOUND : 0;
	fill_process(&m, c);

	if (to == SH_TCP_ESTABLISHED) {
		if (from != SH_TCP_SYN_SENT || c->established)
			return 0;
		if (ignored(m.remote_addr, m.family, m.remote_port)) {
			conns.delete(&sk);
			return 0;
		}
		c->established = 1;
		m.kind = SH_NET_CONNECT;
		m.open_ktime = c->ktime;
		submit(&m);
		return 0;
	}
	/* -> CLOSE */
	if (c->established) {
		m.kind = SH_NET_CLOSE;
		m.open_ktime = c->ktime;
		/* The counters are in sequence space: bytes_acked also counts our SYN (active open only) and
		 * our FIN once acknowledged, bytes_received the peer's FIN. Take those out to get data bytes. */
		u64 acked = rd_u64((void *)sk, OFF_TCP_BYTES_ACKED);
		u64 received = rd_u64((void *)sk, OFF_TCP_BYTES_RECEIVED);
		u8 shutdown = 0;
		bpf_probe_read_kernel(&shutdown, 1, (char *)sk + OFF_SOCK_SHUTDOWN);
		u32 snd_una = 0, write_seq = 0;
		bpf_probe_read_kernel(&snd_una, 4, (char *)sk + OFF_TCP_SND_UNA);
		bpf_probe_read_kernel(&write_seq, 4, (char *)sk + OFF_TCP_WRITE_SEQ);
		u64 ctl = c->outbound ? 1 : 0;
		if ((shutdown & SH_SEND_SHUTDOWN) && snd_una == write_seq)
			ctl += 1;  /* our FIN was sent and is the last sequence number acknowledged */
		m.bytes_sent = acked > ctl ? acked - ctl : 0;
		ctl = (shutdown & SH_RCV_SHUTDOWN) ? 1 : 0;  /* set by tcp_fin() when the peer's FIN arrived */
		m.bytes_received = received > ctl ? received - ctl : 0;
		submit(&m);
	}
	conns.delete(&sk);  /* a connect that never established is forgotten silently */
	return 0;
}

/* The struct file behind descriptor fd of the current task (0 when there is none). */
static __always_inline void *fd_file(void *task, u64 fd)
{
	void *files = rd_ptr(task, OFF_TASK_FILES);
	void *fdt = rd_ptr(files, OFF_FILES_FDT);
	void **fdarr = rd_ptr(fdt, OFF_FDT_FD);
	void *file = 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fdarr[fd & 0xFFFFF]);
	return file;
}

/* The struct sock of a socket's file. private_data of any other file is something else: callers that
 * do not know the descriptor is a socket confirm it with is_socket() before trusting what they read. */
static __always_inline void *file_sock(void *file)
{
	void *socket = file ? rd_ptr(file, OFF_FILE_PRIVATE_DATA) : 0;
	return socket ? rd_ptr(socket, OFF_SOCKET_SK) : 0;
}

#define SH_S_IFMT 0170000
#define SH_S_IFSOCK 0140000
static __always_inline bool is_socket(void *file)
{
	return (rd_u16(rd_ptr(file, OFF_FILE_INODE), OFF_INODE_MODE) & SH_S_IFMT) == SH_S_IFSOCK;
}

/* accept(2)/accept4(2) returned a descriptor: find its socket and report the connection. */
static __always_inline int on_accept(long ret)
{
	if (ret < 0)
		return 0;
	void *task = (void *)bpf_get_current_task();
	void *sk = file_sock(fd_file(task, ret));  /* accept returned it: a socket */
	if (!sk)
		return 0;
	if (rd_u16(sk, OFF_SOCK_PROTOCOL) != SH_IPPROTO_TCP || rd_u16(sk, OFF_SOCK_TYPE) != SH_SOCK_STREAM)
		return 0;
	u16 family = rd_u16(sk, OFF_SKC_FAMILY);
	if (family != SH_AF_INET && family != SH_AF_INET6)
		return 0;

	struct sh_msg_net m = {};
	m.hdr.type = SH_MSG_NET;
	m.hdr.size = sizeof(m);
	m.hdr.ktime = bpf_ktime_get_boot_ns();
	m.kind = SH_NET_ACCEPT;
	m.family = family;
	m.local_port = rd_u16(sk, OFF_SKC_NUM);                       /* host byte order */
	m.remote_port = __builtin_bswap16(rd_u16(sk, OFF_SKC_DPORT));  /* network byte order */
	if (family == SH_AF_INET) {
		bpf_probe_read_kernel(m.local_addr, 4, (char *)sk + OFF_SKC_RCV_SADDR);
		bpf_probe_read_kernel(m.remote_addr, 4, (char *)sk + OFF_SKC_DADDR);
	} else {
		bpf_probe_read_kernel(m.local_addr, 16, (char *)sk + OFF_SKC_V6_RCV_SADDR);
		bpf_probe_read_kernel(m.remote_addr, 16, (char *)sk + OFF_SKC_V6_DADDR);
	}
	/* inbound: the port that matters is ours (the service), the address the peer's */
	if (ignored(m.remote_addr, family, m.local_port))
		return 0;
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct conn c = {};
	c.pid = pid_tgid >> 32;
	c.tid = (u32)pid_tgid;
	c.start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);  /* the process, not this thread */
	c.ktime = m.hdr.ktime;
	c.established = 1;
	u64 key = (u64)sk;
	conns.update(&key, &c);
	m.sock = key;
	m.open_ktime = c.ktime;
	fill_process(&m, &c);
	submit(&m);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
	return on_accept(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
	return on_accept(args->ret);
}

/* --- DNS queries ------------------------------------------------------------------------------------ */

/* The user-space ABI structs the send calls take (x86_64 and every 64-bit Linux ABI). */
struct sh_user_msghdr {
	void *name;
	int namelen;
	int pad;
	void *iov;
	u64 iovlen;
};
struct sh_iovec {
	void *base;
	u64 len;
};
#define SH_MMSGHDR_SIZE 64                 /* struct mmsghdr: user_msghdr (56) + msg_len + padding */

/* One datagram the process is sending on fd: to the sockaddr `uaddr` when it names one, else to the
 * socket's peer. Reports it when it is UDP to the DNS port and not filtered. Returns -1 when fd is not
 * a UDP socket at all (sendmmsg then skips the rest of its vector), -2 when it is a UDP socket that
 * is not connected to the DNS port and no sockaddr was given. */
static __always_inline int dns_send(u64 fd, const void *uaddr, const void *buf, u64 len, u8 call, u8 index,
				     u8 flags)
{
	u16 family = 0;
	u8 remote[16] = {};
	if (uaddr) {
		u16 sa[2] = {};  /* sa_family, sin_port/sin6_port (network byte order) */
		if (bpf_probe_read_user(sa, sizeof(sa), uaddr) != 0 || sa[1] != __builtin_bswap16(SH_DNS_PORT))
			return 0;
		family = sa[0];
		if (family == SH_AF_INET)
			bpf_probe_read_user(remote, 4, (const char *)uaddr + 4);
		else if (family == SH_AF_INET6)
			bpf_probe_read_user(remote, 16, (const char *)uaddr + 8);
		else
			return 0;
	}
	void *task = (void *)bpf_get_current_task();
	void *file = fd_file(task, fd);
	void *sk = file_sock(file);
	/* UDP datagram sockets only (a raw socket of protocol UDP carries the UDP header in its payload) */
	if (!sk || rd_u16(sk, OFF_SOCK_PROTOCOL) != SH_IPPROTO_UDP || rd_u16(sk, OFF_SOCK_TYPE) != SH_SOCK_DGRAM)
		return -1;
	if (!uaddr) {
		if (rd_u16(sk, OFF_SKC_DPORT) != __builtin_bswap16(SH_DNS_PORT))
			return -2;
		family = rd_u16(sk, OFF_SKC_FAMILY);
		if (family == SH_AF_INET)
			bpf_probe_read_kernel(remote, 4, (char *)sk + OFF_SKC_DADDR);
		else if (family == SH_AF_INET6)
			bpf_probe_read_kernel(remote, 16, (char *)sk + OFF_SKC_V6_DADDR);
		else
			return 0;
	}
	if (!is_socket(file))
		return -1;
	if (ignored(remote, family, SH_DNS_PORT))
		return 0;

	struct sh_msg_dns *m = events.ringbuf_reserve(sizeof(struct sh_msg_dns));
	if (!m) {
		u32 k = SH_NET_DNS;
		u64 *n = lost.lookup(&k);
		if (n)
			*n += 1;
		return 0;
	}
	u64 pid_tgid = bpf_get_current_pid_tgid();
	m->hdr.type = SH_MSG_DNS;
	m->hdr.pad0 = 0;
	m->hdr.pad1 = 0;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = pid_tgid >> 32;
	m->tid = (u32)pid_tgid;
	m->start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	m->len = len > 0xFFFFFFFF ? 0xFFFFFFFF : len;
	m->family = family;
	m->local_port = rd_u16(sk, OFF_SKC_NUM);  /* host byte order; 0 until bound */
	m->remote_port = SH_DNS_PORT;
	m->call = call;
	m->index = index;
	m->pad = 0;
	__builtin_memcpy(m->remote_addr, remote, 16);
	__builtin_memset(m->local_addr, 0, 16);
	if (family == SH_AF_INET)
		bpf_probe_read_kernel(m->local_addr, 4, (char *)sk + OFF_SKC_RCV_SADDR);
	else
		bpf_probe_read_kernel(m->local_addr, 16, (char *)sk + OFF_SKC_V6_RCV_SADDR);
	u32 n = len < SH_DNS_PAYLOAD ? len : SH_DNS_PAYLOAD;
	if (n > SH_DNS_PAYLOAD)  /* cannot happen; tells the verifier the bound */
		n = SH_DNS_PAYLOAD;
	if (bpf_probe_read_user(m->payload, n, buf) != 0) {
		n = 0;
		flags |= SH_DNS_UNREADABLE;
	}
	m->payload_len = n;
	m->flags = flags;
	events.ringbuf_submit(m, wake_flag());
	return 0;
}

/* The first iovec of a user_msghdr at `umsg`, then dns_send. */
static __always_inline int dns_msghdr(u64 fd, const void *umsg, u8 call, u8 index)
{
	struct sh_user_msghdr h = {};
	struct sh_iovec iov = {};
	if (bpf_probe_read_user(&h, sizeof(h), umsg) != 0)
		return 0;
	if (h.iovlen > 0)
		bpf_probe_read_user(&iov, sizeof(iov), h.iov);
	return dns_send(fd, h.name, iov.base, iov.len, call, index, h.iovlen > 1 ? SH_DNS_MORE_IOV : 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
	dns_send(args->fd, args->addr, args->buff, args->len, SH_DNS_SENDTO, 0, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
	dns_msghdr(args->fd, args->msg, SH_DNS_SENDMSG, 0);
	return 0;
}

#ifndef SH_NO_UDP_FLOWS
static __always_inline void udp_mmsg_begin(const void *vec);  /* UDP flows, below */
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
#ifndef SH_NO_UDP_FLOWS
	udp_mmsg_begin(args->mmsg);
#endif
	u32 vlen = args->vlen;
	const char *v = (const char *)args->mmsg;
	for (u32 i = 0; i < SH_DNS_MMSG_MAX; i++) {
		if (i >= vlen || dns_msghdr(args->fd, v + i * SH_MMSGHDR_SIZE, SH_DNS_SENDMMSG, i) < 0)
			break;
	}
	return 0;
}

/* connect() of a socket to the DNS port: remember it, so that its write()s are looked at. What was
 * connected before the agent started, or is written through another descriptor (dup, fork), is not seen
 * by write() (sendto/sendmsg/sendmmsg do not depend on this). */
TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	u16 sa[2] = {};
	if (!args->uservaddr || bpf_probe_read_user(sa, sizeof(sa), args->uservaddr) != 0)
		return 0;
	if (sa[1] != __builtin_bswap16(SH_DNS_PORT) || (sa[0] != SH_AF_INET && sa[0] != SH_AF_INET6))
		return 0;
	u64 key = (bpf_get_current_pid_tgid() & 0xFFFFFFFF00000000ULL) | (u32)args->fd;
	u8 one = 1;
	dns_fds.update(&key, &one);
	return 0;
}

/* write()/writev() on a descriptor connect()ed to the DNS port (one hash lookup otherwise). */
static __always_inline void dns_write(u64 fd, const void *buf, u64 len, u8 call, u8 flags)
{
	u64 key = (bpf_get_current_pid_tgid() & 0xFFFFFFFF00000000ULL) | (u32)fd;
	if (!dns_fds.lookup(&key))
		return;
	if (dns_send(fd, 0, buf, len, call, 0, flags) < 0)
		dns_fds.delete(&key);  /* closed and reused, reconnected elsewhere, or not UDP: forget it */
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
	dns_write(args->fd, args->buf, args->count, SH_DNS_WRITE, 0);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
	u64 key = (bpf_get_current_pid_tgid() & 0xFFFFFFFF00000000ULL) | (u32)args->fd;
	if (!dns_fds.lookup(&key))
		return 0;
	struct sh_iovec iov = {};
	if (args->vlen > 0)
		bpf_probe_read_user(&iov, sizeof(iov), args->vec);
	dns_write(args->fd, iov.base, iov.len, SH_DNS_WRITE, args->vlen > 1 ? SH_DNS_MORE_IOV : 0);
	return 0;
}

/* --- UDP flows -------------------------------------------------------------------------------------- *
 * One flow per (process, socket, peer), counted here: sock:sock_send_length / sock:sock_recv_length fire
 * in the sending or receiving task for every datagram, whatever the call (sendto, sendmsg, sendmmsg,
 * write, writev; recvfrom, recvmsg, recvmmsg, read, readv), with the socket and the byte count. A
 * datagram costs one lookup in `udp_flows` and a few atomic adds; only a flow's first datagram sends a
 * message (SH_UDP_NEW: its key and process). The peer is the address the call names, else the connected
 * socket's: which call is running, and its arguments, come from the task's saved syscall registers
 * (bpf_task_pt_regs; x86-64 syscall numbers). A received datagram's address is written to the caller's
 * buffer only after the receive, so recvfrom/recvmsg/recvmmsg keep it pending in `udp_recv` and count
 * it at the syscall's exit (recvmmsg: at the next datagram's receive, then at the exit).
 * The end: close() of a descriptor remembered at the flow's start (`udp_fds`), or the process' exit,
 * sends SH_UDP_CLOSE / SH_UDP_EXIT; user space then reads and deletes the flows. User space also reads
 * them every report interval. Ignore filters as for TCP (peer address; the peer's port when this
 * process sent first, else ours). */
#ifndef SH_NO_UDP_FLOWS                   /* -DSH_NO_UDP_FLOWS: sensors.network.udp.enabled false */
#ifndef SH_MAX_UDP_FLOWS
#define SH_MAX_UDP_FLOWS 16384
#endif
#define SH_NET_UDP 5                       /* index of UDP flow messages (and full flow map) in `lost` */
#define SH_NR_READ 0
#define SH_NR_WRITE 1
#define SH_NR_READV 19
#define SH_NR_WRITEV 20
#define SH_NR_SENDTO 44
#define SH_NR_RECVFROM 45
#define SH_NR_SENDMSG 46
#define SH_NR_RECVMSG 47
#define SH_NR_RECVMMSG 299
#define SH_NR_SENDMMSG 307
#define SH_MSG_PEEK 2

struct udp_recv {
	u64 sk;
	u64 uaddr;                         /* where the call will find the sender's address */
	u64 fd;
	u32 len;
	u32 index;                         /* recvmmsg: datagrams received so far in this call */
	u8 pending;                        /* a datagram waits for its address */
	u8 pad[7];
};
struct udp_send {
	u64 vec;
	u32 index;                         /* sendmmsg: datagrams sent so far in this call */
	u32 pad;
};

BPF_HASH(udp_flows, struct sh_udp_key, struct sh_udp_val, SH_MAX_UDP_FLOWS);
BPF_TABLE("lru_hash", u64, struct udp_recv, udp_recv, 4096);   /* pid_tgid -> receive in progress */
BPF_TABLE("lru_hash", u64, struct udp_send, udp_mmsg, 4096);   /* pid_tgid -> sendmmsg in progress */
BPF_TABLE("lru_hash", u64, u64, udp_fds, 65536);              /* tgid << 32 | fd -> socket with flows */
BPF_TABLE("lru_hash", u32, u8, udp_pids, 65536);              /* processes with flows */

static __always_inline void count_lost(u32 k)
{
	u64 *n = lost.lookup(&k);
	if (n)
		*n += 1;
}

/* The peer named by a user sockaddr. False when it is not IPv4/IPv6 or unreadable. */
static __always_inline bool user_peer(const void *uaddr, struct sh_udp_key *k)
{
	u16 sa[2] = {};
	if (!uaddr || bpf_probe_read_user(sa, sizeof(sa), uaddr) != 0)
		return false;
	k->family = sa[0];
	k->port = sa[1];
	if (sa[0] == SH_AF_INET)
		return bpf_probe_read_user(k->addr, 4, (const char *)uaddr + 4) == 0;
	if (sa[0] == SH_AF_INET6)
		return bpf_probe_read_user(k->addr, 16, (const char *)uaddr + 8) == 0;
	return false;
}

/* The connected peer of a socket (port 0 when it is not connected). */
static __always_inline void sock_peer(void *sk, u16 family, struct sh_udp_key *k)
{
	k->family = family;
	k->port = rd_u16(sk, OFF_SKC_DPORT);
	if (family == SH_AF_INET)
		bpf_probe_read_kernel(k->addr, 4, (char *)sk + OFF_SKC_DADDR);
	else
		bpf_probe_read_kernel(k->addr, 16, (char *)sk + OFF_SKC_V6_DADDR);
}

/* The flow's first datagram: filters, the flow's entry, the descriptor to watch for its close, and the
 * SH_UDP_NEW message. */
static __always_inline void udp_new_flow(void *sk, struct sh_udp_key *k, u32 len, bool sent, u64 fd, u64 now)
{
	u8 v4map[16] = {};
	const u8 *remote = k->addr;
	u16 lport = rd_u16(sk, OFF_SKC_NUM);
	if (ignored(remote, k->family, sent ? __builtin_bswap16(k->port) : lport))
		return;
	struct sh_udp_val v = {};
	v.first_ktime = now;
	v.last_ktime = now;
	if (sent) {
		v.bytes_sent = len;
		v.datagrams_sent = 1;
	} else {
		v.bytes_received = len;
		v.datagrams_received = 1;
	}
	if (udp_flows.insert(k, &v) != 0) {
		/* full (counted), or another CPU created it meanwhile: count this datagram there */
		struct sh_udp_val *old = udp_flows.lookup(k);
		if (!old) {
			count_lost(SH_NET_UDP);
			return;
		}
		__sync_fetch_and_add(sent ? &old->bytes_sent : &old->bytes_received, len);
		__sync_fetch_and_add(sent ? &old->datagrams_sent : &old->datagrams_received, 1);
		return;
	}
	void *task = (void *)bpf_get_current_task();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	if (fd < 0x100000 && file_sock(fd_file(task, fd)) == sk) {
		u64 fkey = (pid_tgid & 0xFFFFFFFF00000000ULL) | (u32)fd;
		u64 skv = (u64)sk;
		udp_fds.update(&fkey, &skv);
	}
	u8 one = 1;
	udp_pids.update(&tgid, &one);

	struct sh_msg_udp *m = events.ringbuf_reserve(sizeof(struct sh_msg_udp));
	if (!m) {
		count_lost(SH_NET_UDP);
		return;
	}
	m->hdr.type = SH_MSG_UDP;
	m->hdr.pad0 = 0;
	m->hdr.pad1 = 0;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = now;
	m->pid = tgid;
	m->tid = (u32)pid_tgid;
	m->start_boottime = rd_u64(rd_ptr(task, OFF_TASK_GROUP_LEADER), OFF_TASK_START_BOOTTIME);
	m->sock = (u64)sk;
	m->kind = SH_UDP_NEW;
	m->flags = sent ? SH_UDP_SENT_FIRST : 0;
	m->family = k->family;
	m->local_port = lport;
	m->remote_port = __builtin_bswap16(k->port);
	__builtin_memcpy(m->remote_addr, k->addr, 16);
	__builtin_memset(m->local_addr, 0, 16);
	if (rd_u16(sk, OFF_SKC_FAMILY) == SH_AF_INET)
		bpf_probe_read_kernel(m->local_addr, 4, (char *)sk + OFF_SKC_RCV_SADDR);
	else
		bpf_probe_read_kernel(m->local_addr, 16, (char *)sk + OFF_SKC_V6_RCV_SADDR);
	events.ringbuf_submit(m, wake_flag());
}

/* One datagram of this process on socket sk to or from the peer in k. */
static __always_inline void udp_count(void *sk, struct sh_udp_key *k, u32 len, bool sent, u64 fd)
{
	k->sock = (u64)sk;
	k->pid = bpf_get_current_pid_tgid() >> 32;
	u64 now = bpf_ktime_get_boot_ns();
	struct sh_udp_val *v = udp_flows.lookup(k);
	if (!v) {
		udp_new_flow(sk, k, len, sent, fd, now);
		return;
	}
	if (sent) {
		__sync_fetch_and_add(&v->bytes_sent, len);
		__sync_fetch_and_add(&v->datagrams_sent, 1);
	} else {
		__sync_fetch_and_add(&v->bytes_received, len);
		__sync_fetch_and_add(&v->datagrams_received, 1);
	}
	v->last_ktime = now;
}

static __always_inline bool udp_socket(u16 family, u16 protocol)
{
	return protocol == SH_IPPROTO_UDP && (family == SH_AF_INET || family == SH_AF_INET6);
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
	if (!udp_socket(args->family, args->protocol) || args->ret < 0)
		return 0;
	void *sk = args->sk;
	void *regs = (void *)bpf_task_pt_regs(sh_current_task());
	u64 nr = ld_u64(regs, OFF_REGS_ORIG_AX);
	const void *uaddr = 0;
	if (nr == SH_NR_SENDTO) {
		uaddr = (const void *)ld_u64(regs, OFF_REGS_R8);
	} else if (nr == SH_NR_SENDMSG) {
		bpf_probe_read_user(&uaddr, sizeof(uaddr), (const void *)ld_u64(regs, OFF_REGS_SI));  /* msg_name */
	} else if (nr == SH_NR_SENDMMSG) {
		u64 tid = bpf_get_current_pid_tgid();
		struct udp_send *s = udp_mmsg.lookup(&tid);
		if (s) {
			bpf_probe_read_user(&uaddr, sizeof(uaddr), (const char *)s->vec + (u64)s->index * SH_MMSGHDR_SIZE);
			s->index += 1;
		}
	}
	struct sh_udp_key k = {};
	if (!user_peer(uaddr, &k))
		sock_peer(sk, args->family, &k);
	udp_count(sk, &k, args->ret, true, ld_u64(regs, OFF_REGS_DI));
	return 0;
}

/* sys_enter_sendmmsg (above, shared with DNS): a new vector, counted from its first message */
static __always_inline void udp_mmsg_begin(const void *vec)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct udp_send s = {.vec = (u64)vec};
	udp_mmsg.update(&tid, &s);
}

/* A received datagram whose sender's address the call has written to user memory by now. */
static __always_inline void udp_recv_done(struct udp_recv *r)
{
	struct sh_udp_key k = {};
	void *sk = (void *)r->sk;
	if (!user_peer((const void *)r->uaddr, &k))
		sock_peer(sk, rd_u16(sk, OFF_SKC_FAMILY), &k);
	udp_count(sk, &k, r->len, false, r->fd);
	r->pending = 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
	if (!udp_socket(args->family, args->protocol) || args->ret < 0 || (args->flags & SH_MSG_PEEK))
		return 0;
	void *sk = args->sk;
	void *regs = (void *)bpf_task_pt_regs(sh_current_task());
	u64 nr = ld_u64(regs, OFF_REGS_ORIG_AX);
	u64 fd = ld_u64(regs, OFF_REGS_DI);
	u64 uaddr = 0;
	u64 tid = bpf_get_current_pid_tgid();
	if (nr == SH_NR_RECVFROM) {
		uaddr = ld_u64(regs, OFF_REGS_R8);
	} else if (nr == SH_NR_RECVMSG) {
		bpf_probe_read_user(&uaddr, sizeof(uaddr), (const void *)ld_u64(regs, OFF_REGS_SI));
	} else if (nr == SH_NR_RECVMMSG) {
		struct udp_recv *r = udp_recv.lookup(&tid);
		u32 index = 0;
		if (r) {
			if (r->pending)
				udp_recv_done(r);
			index = r->index;
		}
		bpf_probe_read_user(&uaddr, sizeof(uaddr), (const char *)ld_u64(regs, OFF_REGS_SI) + (u64)index * SH_MMSGHDR_SIZE);
		if (uaddr) {
			struct udp_recv n = {.sk = (u64)sk, .uaddr = uaddr, .fd = fd, .len = args->ret, .index = index + 1,
					     .pending = 1};
			udp_recv.update(&tid, &n);
			return 0;
		}
		if (r)
			r->index = index + 1;
	}
	if (uaddr && nr != SH_NR_RECVMMSG) {
		struct udp_recv n = {.sk = (u64)sk, .uaddr = uaddr, .fd = fd, .len = args->ret, .pending = 1};
		udp_recv.update(&tid, &n);
		return 0;
	}
	struct sh_udp_key k = {};
	sock_peer(sk, args->family, &k);
	udp_count(sk, &k, args->ret, false, fd);
	return 0;
}

static __always_inline int udp_recv_exit(void)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct udp_recv *r = udp_recv.lookup(&tid);
	if (!r)
		return 0;
	if (r->pending)
		udp_recv_done(r);
	udp_recv.delete(&tid);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
	return udp_recv_exit();
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
	return udp_recv_exit();
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg)
{
	return udp_recv_exit();
}

/* close() of a descriptor whose socket has flows: user space reads and deletes them. */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 key = (pid_tgid & 0xFFFFFFFF00000000ULL) | (u32)args->fd;
	u64 *sk = udp_fds.lookup(&key);
	if (!sk)
		return 0;
	u64 sock = *sk;
	udp_fds.delete(&key);
	struct sh_msg_udp *m = events.ringbuf_reserve(sizeof(struct sh_msg_udp));
	if (!m) {
		count_lost(SH_NET_UDP);
		return 0;
	}
	__builtin_memset(m, 0, sizeof(*m));
	m->hdr.type = SH_MSG_UDP;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = pid_tgid >> 32;
	m->tid = (u32)pid_tgid;
	m->sock = sock;
	m->kind = SH_UDP_CLOSE;
	events.ringbuf_submit(m, wake_flag());
	return 0;
}

/* The last thread of a process with flows: its sockets are closed without close(). */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	if (!udp_pids.lookup(&tgid))
		return 0;
	void *task = sh_current_task();
	if (ld_u32(ld_ptr(task, OFF_TASK_SIGNAL), OFF_SIGNAL_LIVE) != 0)
		return 0;
	udp_pids.delete(&tgid);
	struct sh_msg_udp *m = events.ringbuf_reserve(sizeof(struct sh_msg_udp));
	if (!m) {
		count_lost(SH_NET_UDP);
		return 0;
	}
	__builtin_memset(m, 0, sizeof(*m));
	m->hdr.type = SH_MSG_UDP;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = tgid;
	m->tid = (u32)pid_tgid;
	m->kind = SH_UDP_EXIT;
	events.ringbuf_submit(m, wake_flag());
	return 0;
}
#endif
