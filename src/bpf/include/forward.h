/* SPDX-License-Identifier: GPL-2.0 */
/* Types of `tracekit forward` (forwarding on the kernel's own tables with bpf_fib_lookup),
 * shared with the Rust side through BTF. */
#ifndef TK_FORWARD_H
#define TK_FORWARD_H

#include "transport.h"

/* Most interfaces one run forwards between (slots of the counters and the devmap). */
#define TK_FWD_MAX_IFACES 32

/* What became of a packet; the counters are per (interface slot, outcome). 1 to 9 are the
 * BPF_FIB_LKUP_RET_* codes of a lookup that did not give a next hop: the packet went up to the
 * stack, which then does what it always does (ICMP error, neighbour resolution, local
 * delivery, fragmentation). */
enum tk_fwd_outcome {
	TK_FWD_REDIRECT = 0,      /* sent out of the route's interface: devmap (XDP), bpf_redirect (TC) */
	TK_FWD_BLACKHOLE = 1,
	TK_FWD_UNREACHABLE = 2,
	TK_FWD_PROHIBIT = 3,
	TK_FWD_NOT_FWDED = 4,     /* for this host (local, broadcast, multicast) */
	TK_FWD_FWD_DISABLED = 5,  /* the interface's forwarding sysctl is off */
	TK_FWD_UNSUPP_LWT = 6,
	TK_FWD_NO_NEIGH = 7,      /* no neighbour entry (yet): the stack resolves it */
	TK_FWD_FRAG_NEEDED = 8,
	TK_FWD_NO_SRC_ADDR = 9,
	TK_FWD_NOT_IP = 10,       /* neither IPv4 nor IPv6 (ARP, VLAN-tagged, ...) */
	TK_FWD_TTL = 11,          /* routed, but TTL or hop limit 1 or 0: up, for the ICMP error */
	TK_FWD_NOT_OURS = 12,     /* the route leaves through an interface tracekit does not forward on */
	TK_FWD_ERROR = 13,        /* a truncated header, or the lookup failed (negative errno) */
	TK_FWD_NEIGH = 14,        /* TC: bpf_redirect_neigh, the kernel fills in the MACs */
	TK_FWD_PEER = 15,         /* TC: bpf_redirect_peer, into the veth peer's namespace */
	TK_FWD_INGRESS = 16,      /* TC: bpf_redirect(BPF_F_INGRESS), into --ingress-to's receive path */
	TK_FWD_ABORTED = 17,      /* the redirect helper refused: dropped */
	TK_FWD_XMIT_DROP = 18,    /* counted at the egress slot: frames its driver dropped after an
	                           * XDP redirect (tracepoint xdp:xdp_devmap_xmit) */
	TK_FWD_SLOW_PATH = 19,    /* left to the stack, which alone handles it right: not addressed to
	                           * this interface's MAC (broadcast, multicast, another host's),
	                           * multicast/broadcast/martian addresses, IPv4 options, an IPv6
	                           * hop-by-hop header, a VLAN tag at TC */
	TK_FWD_NOUTCOMES = 20,
};

/* How TC sends a packet on (--peer, --ingress-to). */
enum tk_fwd_via {
	TK_FWD_VIA_REDIRECT = 0,
	TK_FWD_VIA_PEER = 1,
	TK_FWD_VIA_INGRESS = 2,
};

/* Written into rodata before load. */
struct tk_fwd_config {
	__u32 ifindex[TK_FWD_MAX_IFACES]; /* slot i's interface: those given, then --ingress-to's */
	__u32 nifaces;
	__u32 fib_flags;                  /* BPF_FIB_LOOKUP_DIRECT with --direct */
	__u32 via;                        /* enum tk_fwd_via */
	__u32 ingress_to;                 /* --ingress-to's ifindex */
	__u32 peer_slots;                 /* --peer: bit i set when slot i is a veth (has a peer) */
	__u64 netns;                      /* inode of the interfaces' namespace */
	__u8 mac[TK_FWD_MAX_IFACES][6];   /* slot i's MAC: XDP forwards only frames sent to it */
	__u8 ingress_to_mac[6];           /* its MAC: the frame must be addressed to it */
	__u8 trace;                       /* an event per decision */
	__u8 pad;
};

/* What went out of one interface. Per CPU on the hot path (packets, bytes, and the bytes not yet
 * folded into the shared struct); every TK_FWD_FOLD packets a CPU folds its share into one shared
 * struct per interface under a bpf_spin_lock, with the time: its packets, bytes and first/last
 * times are then from one instant, which is what a rate needs. */
#define TK_FWD_FOLD 64
struct tk_fwd_sent {
	__u64 packets;
	__u64 bytes;
	__u64 first_ns;
	__u64 last_ns;
};

/* One decision (--trace). */
struct tk_fwd_event {
	__u64 ts_ns;
	__u32 ifindex;          /* received on */
	__u32 out_ifindex;      /* the route's interface (0 without one) */
	__u32 len;
	__u32 cpu;
	__u32 saddr[4];         /* IPv4 in [0], network order */
	__u32 daddr[4];
	__u8 smac[6];           /* as sent (after the rewrite); as received when passed up */
	__u8 dmac[6];
	__u8 family;            /* 4, 6, or 0 when not IP */
	__u8 proto;             /* IP protocol / IPv6 next header */
	__u8 ttl;               /* TTL or hop limit as received */
	__u8 outcome;           /* enum tk_fwd_outcome */
	__u8 hook;              /* 0 xdp, 1 tc */
	__u8 pad;
	__u16 ethertype;
	__s32 fib_ret;          /* the lookup's return (BPF_FIB_LKUP_RET_*, or a negative errno), -1000 without one */
	__u32 mtu;              /* the route's MTU, from the lookup (FRAG_NEEDED) */
};

#endif
