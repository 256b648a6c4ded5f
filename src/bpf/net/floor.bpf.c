// SPDX-License-Identifier: GPL-2.0
/* floor: programs that do nothing, the benchmark's baseline for the cost of a hook. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp__floor(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int tc__floor(struct __sk_buff *skb)
{
	return -1;
}

char LICENSE[] SEC("license") = "GPL";
