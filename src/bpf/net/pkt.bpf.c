// SPDX-License-Identifier: GPL-2.0
/* The packet tools' programs, one per hook, in one object: xdp (every packet an interface
 * receives; may drop: --drop, --drop-every), tc ingress and egress (never decide:
 * TC_ACT_UNSPEC / TCX_NEXT), and a socket filter (on tracekit's own packet socket, which
 * receives nothing). All of them run the same parser and filter (pkt.bpf.h), so the same bytes
 * decode the same at every hook; a tool loads only the programs of its hook. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "transport.bpf.h"
#include "pkt.bpf.h"

/* loopback's index in every namespace (LOOPBACK_IFINDEX) */
#define TK_LOOPBACK_IFINDEX 1

/* ---- xdp ---- */

/* --drop-every N: matched packets since the last one dropped, one count for all CPUs, so that
 * exactly every Nth matched packet is dropped wherever it arrives (a per-CPU count could drop
 * fewer, and which ones would depend on how the flows spread over CPUs). A spin lock, not
 * __sync_fetch_and_add: the drop decision needs the count's old value, and the fetching
 * atomics (BPF_FETCH) came in 5.12, after 5.10 (whose verifier rejects them: "BPF_XADD uses
 * reserved fields"); XDP has had bpf_spin_lock since 5.1. Only xdp__observe may use this map:
 * the verifier refuses a socket filter that uses a map holding a spin lock. */
struct tk_drop_seq {
	struct bpf_spin_lock lock;
	__u32 since_drop;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tk_drop_seq);
} tk_drop_every SEC(".maps");

/* What to do with a matched packet: --drop drops it, --drop-every N the Nth of every N. */
static __always_inline __u8 tk_xdp_verdict(void)
{
	__u32 every = tk_pkt_filter.drop_every;
	struct tk_drop_seq *s;
	__u32 zero = 0;
	bool drop;

	if (tk_pkt_filter.drop)
		return TK_VERDICT_DROP;
	if (!every)
		return TK_VERDICT_PASS;
	s = bpf_map_lookup_elem(&tk_drop_every, &zero);
	if (!s) /* a 1-entry array always has its entry */
		return TK_VERDICT_PASS;
	bpf_spin_lock(&s->lock);
	/* a count that restarts at each drop, not a running count modulo N: no division */
	drop = ++s->since_drop >= every;
	if (drop)
		s->since_drop = 0;
	bpf_spin_unlock(&s->lock);
	return drop ? TK_VERDICT_DROP : TK_VERDICT_PASS;
}

/* The whole frame: with multi-buffer XDP (5.18+, also what BPF_PROG_RUN builds from frames
 * larger than a page) data_end ends the first buffer only. Older kernels have no such frames
 * and no helper; the check is a CO-RE constant, so the call is dead code there. */
static __always_inline __u32 tk_xdp_len(struct xdp_md *ctx, const struct tk_pkt_ctx *c)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_get_buff_len))
		return bpf_xdp_get_buff_len(ctx);
	return c->data_end - c->data;
}

/* The frame's first n bytes into dst (-w); how many were copied. bpf_xdp_load_bytes (5.18+)
 * reads multi-buffer frames whole; before it, the linear part is all there is. */
static __always_inline __u32 tk_xdp_copy(struct xdp_md *ctx, const struct tk_pkt_ctx *c, void *dst, __u64 n)
{
	if (!tk_caplen_ok(&n))
		return 0;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_load_bytes))
		return bpf_xdp_load_bytes(ctx, 0, dst, n) < 0 ? 0 : n;
	return bpf_probe_read_kernel(dst, n, c->data) < 0 ? 0 : n;
}

/* The same for an skb: from offset 0 (tc, where the MAC header is there) or from the MAC
 * header (socket filters, whose offset 0 is the network header). */
static __always_inline __u32 tk_skb_copy(struct __sk_buff *skb, void *dst, __u64 n, bool from_mac)
{
	long err;

	if (!tk_caplen_ok(&n))
		return 0;
	if (from_mac)
		err = bpf_skb_load_bytes_relative(skb, 0, dst, n, BPF_HDR_START_MAC);
	else
		err = bpf_skb_load_bytes(skb, 0, dst, n);
	return err < 0 ? 0 : n;
}

SEC("xdp")
int xdp__observe(struct xdp_md *ctx)
{
	struct tk_pkt_ctx c = {
		.ctx = ctx,
		.data = (void *)(long)ctx->data,
		.data_end = (void *)(long)ctx->data_end,
	};
	struct tk_pkt_counters *cnt = tk_pkt_counters();
	struct tk_capture *cap;
	struct tk_pkt_event *e;
	struct tk_pkt p TK_ALIGNED;
	__u8 verdict;
	__u32 len;

	tk_pkt_count(cnt, TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_XDP, 0, &p);
	if (!tk_pkt_filter_allows(&p))
		return XDP_PASS;
	/* after the field filters: a packet they reject costs no length helper call */
	len = tk_xdp_len(ctx, &c);
	if (!tk_pcap_allows(&c, len))
		return XDP_PASS;
	tk_pkt_count(cnt, TK_CNT_MATCHED);
	verdict = tk_xdp_verdict();
	tk_pkt_count(cnt, verdict == TK_VERDICT_DROP ? TK_CNT_DROP : TK_CNT_PASS);
	/* --drop-every injects loss into traffic at full rate: an event per packet passed would
	 * cost a record each and bury the drops; the counters have the passes */
	if (tk_pkt_filter.drop_every && verdict == TK_VERDICT_PASS)
		return XDP_PASS;

	cap = tk_capture_slot();
	e = cap ? &cap->event : tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, ctx->ingress_ifindex, len, TK_DIR_INGRESS, TK_HOOK_XDP, 0, verdict);
		if (tk_pkt_filter.sock)
			tk_pkt_sock(ctx, &p, TK_DIR_INGRESS, false, e);
		if (cap)
			tk_capture_send(ctx, cap, tk_xdp_copy(ctx, &c, cap->frame, tk_caplen(len)));
		else
			tk_submit(ctx, e, sizeof(*e));
	}
	return verdict == TK_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

/* ---- tc ---- */

#define TK_TC_NEXT -1 /* TC_ACT_UNSPEC for cls_bpf, TCX_NEXT for tcx */

static __always_inline int tk_tc_observe(struct __sk_buff *skb, const __u8 dir)
{
	struct tk_pkt_ctx c = {
		.ctx = skb,
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
	};
	struct tk_pkt_counters *cnt = tk_pkt_counters();
	struct tk_capture *cap;
	struct tk_pkt_event *e;
	struct tk_pkt p TK_ALIGNED;

	tk_pkt_count(cnt, TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_SKB, skb->vlan_present ? skb->vlan_tci : 0, &p);
	if (!tk_pkt_filter_allows(&p) || !tk_pcap_allows(&c, skb->len))
		return TK_TC_NEXT;
	tk_pkt_count(cnt, TK_CNT_MATCHED);
	tk_pkt_count(cnt, TK_CNT_PASS);

	cap = tk_capture_slot();
	e = cap ? &cap->event : tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, skb->ifindex, skb->len, dir, TK_HOOK_TC, skb->mark, TK_VERDICT_PASS);
		if (tk_pkt_filter.sock)
			tk_pkt_sock(skb, &p, dir, true, e);
		if (cap)
			tk_capture_send(skb, cap, tk_skb_copy(skb, cap->frame, tk_caplen(skb->len), false));
		else
			tk_submit(skb, e, sizeof(*e));
	}
	return TK_TC_NEXT;
}

SEC("tc")
int tc__ingress(struct __sk_buff *skb)
{
	return tk_tc_observe(skb, TK_DIR_INGRESS);
}

SEC("tc")
int tc__egress(struct __sk_buff *skb)
{
	return tk_tc_observe(skb, TK_DIR_EGRESS);
}

/* ---- socket filter ---- */

SEC("socket")
int sock__observe(struct __sk_buff *skb)
{
	struct tk_pkt_ctx c = { .ctx = skb };
	struct tk_pkt_counters *cnt;
	struct tk_capture *cap;
	struct tk_pkt_event *e;
	struct tk_pkt p TK_ALIGNED;
	__u8 dir = skb->pkt_type == TK_PACKET_OUTGOING ? TK_DIR_EGRESS : TK_DIR_INGRESS;

	/* on lo every packet is seen leaving and arriving: keep the arrival (as libpcap does) */
	if (tk_pkt_filter.skip_lo_outgoing && dir == TK_DIR_EGRESS &&
	    skb->ifindex == TK_LOOPBACK_IFINDEX)
		return 0;
	cnt = tk_pkt_counters();
	tk_pkt_count(cnt, TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_SKB_MAC, skb->vlan_present ? skb->vlan_tci : 0, &p);
	if (!tk_pkt_filter_allows(&p) || !tk_pcap_allows(&c, skb->len))
		return 0;
	tk_pkt_count(cnt, TK_CNT_MATCHED);
	tk_pkt_count(cnt, TK_CNT_PASS);

	cap = tk_capture_slot();
	e = cap ? &cap->event : tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, skb->ifindex, skb->len, dir, TK_HOOK_SOCKET, skb->mark,
			    TK_VERDICT_PASS);
		if (cap)
			tk_capture_send(skb, cap, tk_skb_copy(skb, cap->frame, tk_caplen(skb->len), true));
		else
			tk_submit(skb, e, sizeof(*e));
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
