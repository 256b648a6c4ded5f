// SPDX-License-Identifier: GPL-2.0
/* sockfilter: every packet a packet socket sees (both directions), parsed, filtered and
 * counted. The socket receives nothing: events go through the transport. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "transport.bpf.h"
#include "pkt.bpf.h"

SEC("socket")
int sock__observe(struct __sk_buff *skb)
{
	struct tk_pkt_ctx c = { .ctx = skb };
	struct tk_pkt_event *e;
	struct tk_pkt p;
	__u8 dir = skb->pkt_type == TK_PACKET_OUTGOING ? TK_DIR_EGRESS : TK_DIR_INGRESS;

	/* on lo every packet is seen leaving and arriving: keep the arrival (as libpcap does) */
	if (tk_pkt_filter.skip_lo_outgoing && dir == TK_DIR_EGRESS)
		return 0;
	tk_pkt_count(TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_SKB_MAC, skb->vlan_present ? skb->vlan_tci : 0, &p);
	if (!tk_pkt_filter_allows(&p))
		return 0;
	tk_pkt_count(TK_CNT_MATCHED);
	tk_pkt_count(TK_CNT_PASS);

	e = tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, skb->ifindex, skb->len, dir, TK_HOOK_SOCKET, skb->mark,
			    TK_VERDICT_PASS);
		tk_submit(skb, e, sizeof(*e));
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
