// SPDX-License-Identifier: GPL-2.0
/* `tracekit sklookup`: an sk_lookup program (netns link, Linux 5.9) that hands every TCP
 * connection and UDP datagram whose destination port is in a set (and whose destination
 * address is in a prefix set) to one socket per protocol: Jakub Sitnicki's echo_dispatch and
 * Cloudflare's "It's crowded in here". The kernel runs it before the usual listener/UDP socket
 * lookup; SK_PASS without an assigned socket lets the usual lookup go on. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "transport.bpf.h"
#include "counts.bpf.h"
#include "sklookup.h"

#define TK_AF_INET 2
#define TK_AF_INET6 10
#define TK_IPPROTO_TCP 6
#define TK_IPPROTO_UDP 17
#define TK_SK_PASS 1

char LICENSE[] SEC("license") = "GPL";

/* For the generated Rust types. */
struct tk_skl_event _tk_skl_event = {};
struct tk_skl_prefix _tk_skl_prefix = {};
enum tk_skl_slot _tk_skl_slot = 0;
enum tk_skl_verdict _tk_skl_verdict = 0;
enum tk_skl_counter _tk_skl_counter = 0;

const volatile struct tk_skl_config tk_skl_config = {};

/* Destination ports (host order) to steer; user space edits it while running. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_SKL_MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} tk_skl_ports SEC(".maps");

/* Destination prefixes to steer (0.0.0.0/0 and ::/0 when none were given). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, TK_SKL_MAX_ADDRS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tk_skl_prefix);
	__type(value, __u8);
} tk_skl_addrs SEC(".maps");

/* The target sockets, put in by user space (enum tk_skl_slot). A socket leaves the map by
 * itself when it is closed. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, TK_SKL_NSLOTS);
	__type(key, __u32);
	__type(value, __u64);
} tk_skl_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_SKL_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tk_skl_counts SEC(".maps");

static __always_inline void tk_skl_count(__u32 counter)
{
	tk_count_at(&tk_skl_counts, counter);
}

/* The context's fields are read one by one, each at a constant offset: the verifier rejects a
 * load through a moved context pointer (what a loop over local_ip6[i] compiles to). */
static __always_inline void tk_skl_copy_ip6(__u8 *dst, __u32 a, __u32 b, __u32 c, __u32 d)
{
	__builtin_memcpy(dst, &a, 4);
	__builtin_memcpy(dst + 4, &b, 4);
	__builtin_memcpy(dst + 8, &c, 4);
	__builtin_memcpy(dst + 12, &d, 4);
}

static __always_inline void tk_skl_report(struct bpf_sk_lookup *ctx, __u32 verdict, __u32 slot, long err)
{
	struct tk_skl_event *e;

	tk_skl_count(verdict == TK_SKL_STEERED ? TK_SKL_HITS : TK_SKL_MISSES);
	e = tk_reserve(sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->family = ctx->family;
	if (ctx->family == TK_AF_INET) {
		__u32 l = ctx->local_ip4, r = ctx->remote_ip4;

		__builtin_memcpy(e->laddr, &l, 4);
		__builtin_memcpy(e->raddr, &r, 4);
	} else {
		tk_skl_copy_ip6(e->laddr, ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2], ctx->local_ip6[3]);
		tk_skl_copy_ip6(e->raddr, ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2], ctx->remote_ip6[3]);
	}
	e->lport = ctx->local_port;
	/* network order; a 16-bit load, valid on 5.9+ where the field was still 32 bits wide */
	e->rport = bpf_ntohs(ctx->remote_port);
	e->proto = ctx->protocol;
	e->verdict = verdict;
	e->err = err;
	if (verdict == TK_SKL_STEERED && slot < TK_SKL_NSLOTS)
		e->cookie = tk_skl_config.cookie[slot];
	e->cpu = bpf_get_smp_processor_id();
	tk_submit(ctx, e, sizeof(*e));
}

SEC("sk_lookup")
int sklookup__steer(struct bpf_sk_lookup *ctx)
{
	struct tk_skl_prefix key = {};
	__u32 proto = ctx->protocol, family = ctx->family, slot;
	__u16 port = ctx->local_port;
	struct bpf_sock *sk;
	long err;

	if (proto == TK_IPPROTO_TCP) {
		if (!(tk_skl_config.protos & 1))
			return TK_SK_PASS;
		slot = TK_SKL_TCP4;
	} else if (proto == TK_IPPROTO_UDP) {
		if (!(tk_skl_config.protos & 2))
			return TK_SK_PASS;
		slot = TK_SKL_UDP4;
	} else {
		return TK_SK_PASS;
	}
	tk_skl_count(TK_SKL_LOOKUPS);
	if (!bpf_map_lookup_elem(&tk_skl_ports, &port))
		return TK_SK_PASS;

	if (family == TK_AF_INET) {
		__u32 a = ctx->local_ip4;

		key.prefixlen = 8 + 32;
		key.data[0] = 4;
		__builtin_memcpy(&key.data[1], &a, 4);
	} else if (family == TK_AF_INET6) {
		key.prefixlen = 8 + 128;
		key.data[0] = 6;
		tk_skl_copy_ip6(&key.data[1], ctx->local_ip6[0], ctx->local_ip6[1], ctx->local_ip6[2], ctx->local_ip6[3]);
		slot += 1;
	} else {
		return TK_SK_PASS;
	}
	if (!bpf_map_lookup_elem(&tk_skl_addrs, &key)) {
		tk_skl_report(ctx, TK_SKL_PASSED, slot, 0);
		return TK_SK_PASS;
	}

	sk = bpf_map_lookup_elem(&tk_skl_socks, &slot);
	if (!sk) {
		tk_skl_report(ctx, TK_SKL_NO_SOCKET, slot, 0);
		return TK_SK_PASS;
	}
	/* flags 0: an earlier sk_lookup program's choice is kept (-EEXIST) */
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	tk_skl_report(ctx, err ? TK_SKL_FAILED : TK_SKL_STEERED, slot, err);
	/* SK_PASS either way: with a socket assigned the lookup returns it, without one the
	 * usual lookup runs (as if tracekit were not there) */
	return TK_SK_PASS;
}
