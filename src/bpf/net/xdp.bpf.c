// SPDX-License-Identifier: GPL-2.0
/* xdp: every packet an interface receives, parsed, filtered, counted, optionally dropped. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "transport.bpf.h"
#include "pkt.bpf.h"

/* The whole frame: with multi-buffer XDP (5.18+, also what BPF_PROG_RUN builds from frames
 * larger than a page) data_end ends the first buffer only. Older kernels have no such frames
 * and no helper; the check is a CO-RE constant, so the call is dead code there. */
static __always_inline __u32 tk_xdp_len(struct xdp_md *ctx, const struct tk_pkt_ctx *c)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_get_buff_len))
		return bpf_xdp_get_buff_len(ctx);
	return c->data_end - c->data;
}

SEC("xdp")
int xdp__observe(struct xdp_md *ctx)
{
	struct tk_pkt_ctx c = {
		.ctx = ctx,
		.data = (void *)(long)ctx->data,
		.data_end = (void *)(long)ctx->data_end,
	};
	struct tk_pkt_event *e;
	struct tk_pkt p;
	__u8 verdict;

	tk_pkt_count(TK_CNT_SEEN);
	tk_pkt_parse(&c, TK_SRC_XDP, 0, &p);
	if (!tk_pkt_filter_allows(&p))
		return XDP_PASS;
	tk_pkt_count(TK_CNT_MATCHED);
	verdict = tk_pkt_filter.drop ? TK_VERDICT_DROP : TK_VERDICT_PASS;
	tk_pkt_count(verdict == TK_VERDICT_DROP ? TK_CNT_DROP : TK_CNT_PASS);

	e = tk_reserve(sizeof(*e));
	if (e) {
		tk_pkt_fill(e, &p, ctx->ingress_ifindex, tk_xdp_len(ctx, &c), TK_DIR_INGRESS,
			    TK_HOOK_XDP, 0, verdict);
		if (tk_pkt_filter.sock)
			tk_pkt_sock(ctx, &p, TK_DIR_INGRESS, false, e);
		tk_submit(ctx, e, sizeof(*e));
	}
	return verdict == TK_VERDICT_DROP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
