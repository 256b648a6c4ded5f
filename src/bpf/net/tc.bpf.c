// SPDX-License-Identifier: GPL-2.0
/* tc: every packet of an interface, ingress and egress, parsed, filtered and counted; the
 * programs never decide (TC_ACT_UNSPEC / TCX_NEXT), so programs after them still run. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "transport.bpf.h"
#include "pkt.bpf.h"

#define TK_TC_NEXT -1 /* TC_ACT_UNSPEC for cls_bpf, TCX_NEXT for tcx */

static __always_inline int tk_tc_observe(struct __sk_buff *skb, const __u8 dir)
{
	struct tk_pkt_ctx c = { .ctx = skb };
	struct tk_pkt_event *e;
	struct tk_pkt p;

	tk_pkt_count(TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_SKB, skb->vlan_present ? skb->vlan_tci : 0, &p);
	if (!tk_pkt_filter_allows(&p))
		return TK_TC_NEXT;
	tk_pkt_count(TK_CNT_MATCHED);
	tk_pkt_count(TK_CNT_PASS);

	e = tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, skb->ifindex, skb->len, dir, TK_HOOK_TC, skb->mark, TK_VERDICT_PASS);
		if (tk_pkt_filter.sock)
			tk_pkt_sock(skb, &p, dir, true, e);
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

char LICENSE[] SEC("license") = "GPL";
