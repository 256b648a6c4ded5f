// SPDX-License-Identifier: GPL-2.0
/* tcpstate: TCP state transitions from inet_sock_set_state (tp_btf, or the classic tracepoint). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "common.bpf.h"
#include "tcpstate.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_CLOSE 7
#define MAX_SOCKETS 16384

const volatile struct tk_tcpstate_config tk_tcpstate = {};

/* When each socket entered its current state, to report the time spent in it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SOCKETS);
	__type(key, __u64);
	__type(value, __u64);
} since SEC(".maps");

/* Keeps the event type in BTF so the Rust side gets it in `types`. */
struct tk_tcpstate_event _tk_tcpstate_event = {};

static __always_inline int port_listed(const volatile __u16 *ports, __u32 n, __u16 port)
{
	for (int i = 0; i < TK_TCPSTATE_MAX_PORTS; i++)
		if (i < n && ports[i] == port)
			return 1;
	return 0;
}

static __always_inline int wanted(__u16 family, __u16 sport, __u16 dport)
{
	if (tk_tcpstate.family && family != tk_tcpstate.family)
		return 0;
	if (tk_tcpstate.nlports && !port_listed(tk_tcpstate.lports, tk_tcpstate.nlports, sport))
		return 0;
	if (tk_tcpstate.nrports && !port_listed(tk_tcpstate.rports, tk_tcpstate.nrports, dport))
		return 0;
	return tk_filter_allows();
}

/*
 * The local port the socket had. On the way to CLOSE the kernel has already released the bound
 * port (inet_put_port zeroes skc_num) when the tracepoint fires, but the source port
 * (inet_sport, network order) is still set, as libbpf-tools tcpstates reads it.
 */
static __always_inline __u16 local_port(const struct sock *sk, __u16 num)
{
	if (num)
		return num;
	return bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
}

/* Everything but the addresses, which the two hooks read differently. */
static __always_inline struct tk_tcpstate_event *
start_event(__u64 skaddr, int oldstate, int newstate, __u16 family, __u16 sport, __u16 dport)
{
	struct tk_tcpstate_event *e;
	__u64 now = bpf_ktime_get_ns(), *then;

	then = bpf_map_lookup_elem(&since, &skaddr);
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&since, &skaddr);
	else
		bpf_map_update_elem(&since, &skaddr, &now, BPF_ANY);

	e = tk_reserve(sizeof(*e));
	if (!e)
		return NULL;
	tk_fill_hdr(&e->hdr);
	e->hdr.ts_ns = now;
	e->skaddr = skaddr;
	e->delta_ns = then ? now - *then : 0;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->family = family;
	e->sport = sport;
	e->dport = dport;
	e->_pad[0] = e->_pad[1] = 0;
	return e;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf__inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	struct tk_tcpstate_event *e;
	__u16 family, sport, dport;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	family = sk->__sk_common.skc_family;
	sport = local_port(sk, sk->__sk_common.skc_num);
	dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (!wanted(family, sport, dport))
		return 0;
	e = start_event((__u64)sk, oldstate, newstate, family, sport, dport);
	if (!e)
		return 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		__u32 s = sk->__sk_common.skc_rcv_saddr, d = sk->__sk_common.skc_daddr;

		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	} else {
		/* through the struct: READ_INTO an array would copy one element only */
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
	}
	tk_submit(ctx, e, sizeof(*e));
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tp__inet_sock_set_state(struct trace_event_raw_inet_sock_set_state *args)
{
	struct tk_tcpstate_event *e;
	__u16 family = args->family, sport;

	if (args->protocol != IPPROTO_TCP)
		return 0;
	/* the tracepoint's own sport is inet_sport as it was when the event was recorded */
	sport = local_port(args->skaddr, args->sport);
	if (!wanted(family, sport, args->dport))
		return 0;
	e = start_event((__u64)args->skaddr, args->oldstate, args->newstate, family, sport,
			args->dport);
	if (!e)
		return 0;
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET) {
		/* the verifier refuses ctx loads at computed offsets: copy with a helper */
		bpf_probe_read_kernel(e->saddr, 4, args->saddr);
		bpf_probe_read_kernel(e->daddr, 4, args->daddr);
	} else {
		bpf_probe_read_kernel(e->saddr, 16, args->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, args->daddr_v6);
	}
	tk_submit(args, e, sizeof(*e));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
