/* SPDX-License-Identifier: GPL-2.0 */
/* What every sockops program reads of its connection (sockops, sockmap). */
#ifndef TK_SKOPS_BPF_H
#define TK_SKOPS_BPF_H

#include <bpf/bpf_endian.h>

#define TK_AF_INET 2
#define TK_AF_INET6 10

/* The remote port, in host order: the context keeps it in network byte order in the upper 16
 * bits of a u32 (filter.c shifts it there). */
static __always_inline __u16 tk_skops_dport(const struct bpf_sock_ops *skops)
{
	return bpf_ntohl(skops->remote_port);
}

/* Family, ports (host order) and addresses (16 bytes, IPv4 in the first 4) of the connection,
 * as the socket events carry them. */
static __always_inline void tk_skops_ends(const struct bpf_sock_ops *skops, __u16 *family, __u16 *sport,
					  __u16 *dport, __u8 *saddr, __u8 *daddr)
{
	*family = skops->family;
	*sport = skops->local_port;
	*dport = tk_skops_dport(skops);
	if (*family == TK_AF_INET) {
		__builtin_memcpy(saddr, &skops->local_ip4, 4);
		__builtin_memcpy(daddr, &skops->remote_ip4, 4);
	} else {
		/* one load per word: the verifier only takes constant offsets into the context */
		__u32 l[4] = { skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3] };
		__u32 r[4] = { skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3] };

		__builtin_memcpy(saddr, l, 16);
		__builtin_memcpy(daddr, r, 16);
	}
}

#endif
