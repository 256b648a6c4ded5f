// SPDX-License-Identifier: GPL-2.0
/* tcpwatch: each TCP connection's congestion state over time (`tracekit tcpcc watch`), sampled
 * at tcp:tcp_probe.
 *
 * tcp_probe fires at the top of tcp_rcv_established, for every segment an established socket
 * receives: on a sender, every ACK (tens of thousands a second per busy flow). Most of those
 * carry nothing new, so a probe becomes a sample only when the congestion state changed (ca_state
 * or ssthresh changed, or cwnd fell: a loss, a recovery, an undo) or when --every has passed since
 * the flow's last sample (cwnd growth, RTT drift); --all keeps every probe. The probe sees the
 * state left by the previous segment: this one is processed after it.
 *
 * The probe runs in softirq context on ACK arrival: the current task is whatever was interrupted,
 * not the socket's owner, so there is no task filter and no task header. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "transport.bpf.h"
#include "tcpwatch.h"

#define TK_AF_INET 2
#define TK_AF_INET6 10
/* Flows whose last state is remembered; an evicted one only gets its next sample early. */
#define TK_TCPWATCH_MAX_FLOWS 16384

const volatile struct tk_tcpwatch_config tk_tcpwatch = {};

/* Per socket (keyed by its address): what the last probe saw and when the last sample was. LRU:
 * closed sockets are never removed explicitly, they age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TK_TCPWATCH_MAX_FLOWS);
	__type(key, __u64);
	__type(value, struct tk_tcpwatch_flow);
} tk_tcpwatch_flows SEC(".maps");

/* Keeps the event type in BTF so the Rust side gets it in `types`. */
struct tk_tcpwatch_event _tk_tcpwatch_event = {};

/* A socket's family and addresses, IPv4 in the first word. */
struct tk_tcpwatch_ends {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 family;
};

static __always_inline int port_listed(const volatile __u16 *ports, __u32 n, __u16 port)
{
	for (int i = 0; i < TK_TCPWATCH_MAX_PORTS; i++)
		if (i < n && ports[i] == port)
			return 1;
	return 0;
}

static __always_inline int host_matches(const __u32 *addr)
{
	const volatile __u32 *host = (const volatile __u32 *)tk_tcpwatch.host;
	const volatile __u32 *mask = (const volatile __u32 *)tk_tcpwatch.host_mask;

	for (int i = 0; i < 4; i++)
		if ((addr[i] & mask[i]) != host[i])
			return 0;
	return 1;
}

/*
 * The socket's addresses, read directly (tp_btf's `sk` is BTF-typed: plain loads, no helper).
 * A v4-mapped IPv6 socket (an IPv4 client of a server listening on [::]) carries IPv4 on the
 * wire: it is reported, and filtered, as the IPv4 flow it is.
 */
static __always_inline void read_ends(const struct sock *sk, struct tk_tcpwatch_ends *e)
{
	__builtin_memset(e, 0, sizeof(*e));
	e->family = sk->__sk_common.skc_family;
	if (e->family == TK_AF_INET) {
		e->saddr[0] = sk->__sk_common.skc_rcv_saddr;
		e->daddr[0] = sk->__sk_common.skc_daddr;
		return;
	}
	/* absent on kernels built without IPv6, where no socket is AF_INET6 */
	if (!bpf_core_field_exists(sk->__sk_common.skc_v6_daddr))
		return;
	for (int i = 0; i < 4; i++) {
		e->saddr[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
		e->daddr[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
	}
	if (e->daddr[0] == 0 && e->daddr[1] == 0 && e->daddr[2] == bpf_htonl(0xffff)) {
		e->family = TK_AF_INET;
		e->saddr[0] = e->saddr[3];
		e->daddr[0] = e->daddr[3];
		e->saddr[1] = e->saddr[2] = e->saddr[3] = 0;
		e->daddr[1] = e->daddr[2] = e->daddr[3] = 0;
	}
}

static __always_inline int wanted(const struct tk_tcpwatch_ends *e, __u16 lport, __u16 rport)
{
	if (tk_tcpwatch.family && e->family != tk_tcpwatch.family)
		return 0;
	if (tk_tcpwatch.nports && !port_listed(tk_tcpwatch.ports, tk_tcpwatch.nports, lport) &&
	    !port_listed(tk_tcpwatch.ports, tk_tcpwatch.nports, rport))
		return 0;
	if (tk_tcpwatch.nlports && !port_listed(tk_tcpwatch.lports, tk_tcpwatch.nlports, lport))
		return 0;
	if (tk_tcpwatch.nrports && !port_listed(tk_tcpwatch.rports, tk_tcpwatch.nrports, rport))
		return 0;
	if (tk_tcpwatch.host_family) {
		if (e->family != tk_tcpwatch.host_family)
			return 0;
		if (!host_matches(e->saddr) && !host_matches(e->daddr))
			return 0;
	}
	return 1;
}

/*
 * Whether this probe becomes a sample; remembers what it saw either way. The socket lock is held
 * in tcp_rcv_established, so one CPU at a time updates a flow's entry in place.
 */
static __always_inline int sample_due(__u64 skaddr, __u64 now, __u32 cwnd, __u32 ssthresh, __u8 ca_state)
{
	struct tk_tcpwatch_flow *f = bpf_map_lookup_elem(&tk_tcpwatch_flows, &skaddr);
	int due;

	if (!f) {
		struct tk_tcpwatch_flow first = { .last_ns = now, .cwnd = cwnd, .ssthresh = ssthresh,
						  .ca_state = ca_state };

		bpf_map_update_elem(&tk_tcpwatch_flows, &skaddr, &first, BPF_ANY);
		return 1;
	}
	/* a fall of cwnd is a reaction (loss, ECN, undo); its growth is sampled every --every */
	due = tk_tcpwatch.all || ca_state != f->ca_state || ssthresh != f->ssthresh || cwnd < f->cwnd ||
	      now - f->last_ns >= tk_tcpwatch.every_ns;
	f->cwnd = cwnd;
	f->ssthresh = ssthresh;
	f->ca_state = ca_state;
	if (due)
		f->last_ns = now;
	return due;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tp_btf__tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tk_tcpwatch_event *ev;
	struct tk_tcpwatch_ends ends;
	__u32 cwnd, ssthresh;
	__u16 lport, rport;
	__u8 ca_state;
	__u64 now;

	lport = sk->__sk_common.skc_num;
	rport = bpf_ntohs(sk->__sk_common.skc_dport);
	read_ends(sk, &ends);
	if (!wanted(&ends, lport, rport))
		return 0;

	/* beyond struct sock: `sk` is typed as one, so these go through bpf_probe_read_kernel */
	cwnd = BPF_CORE_READ(tp, snd_cwnd);
	ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	now = bpf_ktime_get_ns();
	if (!sample_due((__u64)sk, now, cwnd, ssthresh, ca_state))
		return 0;

	ev = tk_reserve(sizeof(*ev));
	if (!ev)
		return 0;
	ev->ts_ns = now;
	ev->skaddr = (__u64)sk;
	ev->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	ev->bytes_received = BPF_CORE_READ(tp, bytes_received);
	__builtin_memcpy(ev->saddr, ends.saddr, sizeof(ev->saddr));
	__builtin_memcpy(ev->daddr, ends.daddr, sizeof(ev->daddr));
	ev->cwnd = cwnd;
	ev->ssthresh = ssthresh;
	ev->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	ev->rttvar_us = BPF_CORE_READ(tp, mdev_us) >> 2;
	ev->min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
	ev->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	ev->rcv_wnd = BPF_CORE_READ(tp, rcv_wnd);
	ev->packets_out = BPF_CORE_READ(tp, packets_out);
	ev->sacked_out = BPF_CORE_READ(tp, sacked_out);
	ev->lost_out = BPF_CORE_READ(tp, lost_out);
	ev->retrans_out = BPF_CORE_READ(tp, retrans_out);
	ev->mss = BPF_CORE_READ(tp, mss_cache);
	ev->total_retrans = BPF_CORE_READ(tp, total_retrans);
	ev->cpu = bpf_get_smp_processor_id();
	ev->family = ends.family;
	ev->sport = lport;
	ev->dport = rport;
	ev->ca_state = ca_state;
	ev->_pad = 0;
	/* a registered algorithm's name (struct_ops ones included), NUL-terminated */
	__builtin_memset(ev->algo, 0, sizeof(ev->algo));
	BPF_CORE_READ_STR_INTO(&ev->algo, icsk, icsk_ca_ops, name);
	tk_submit(ctx, ev, sizeof(*ev));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
