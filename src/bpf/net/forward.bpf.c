// SPDX-License-Identifier: GPL-2.0
/* `tracekit forward`: forwarding on the kernel's own routing and neighbour tables
 * (bpf_fib_lookup), the design of David Ahern's "Leveraging Kernel Tables with XDP" (LPC 2018)
 * and xdp-tools' xdp-forward. A packet the lookup gives a next hop for gets its MACs rewritten,
 * its TTL / hop limit decremented and is sent out of the route's interface; anything else
 * (no route, no neighbour yet, needs fragmenting, for this host, TTL expiring, not IP) goes up
 * to the stack unchanged, which does what it always does. `ip route` and `ip neigh` changes
 * apply to the next packet: there is no table of tracekit's own.
 *
 * Counters: per-CPU per (interface, outcome), the hot path, plain increments (a CPU runs one
 * XDP/TC program at a time, in softirq). What went out of each interface (packets, bytes, first
 * and last time) is one struct under a bpf_spin_lock: its fields are read together (BPF_F_LOCK)
 * for a rate, and per-CPU copies summed at different moments would not be one instant. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "transport.bpf.h"
#include "forward.h"

/* Not in vmlinux.h: macros of the uapi headers. */
#define TK_AF_INET 2
#define TK_AF_INET6 10
#define TK_ETH_P_IP 0x0800
#define TK_ETH_P_IPV6 0x86DD
#define TK_ETH_ALEN 6
#define TK_XDP_PASS 2
#define TK_XDP_DROP 1
#define TK_XDP_REDIRECT 4
#define TK_TC_ACT_NEXT (-1)     /* TC_ACT_UNSPEC / TCX_NEXT: on to the next program, then the stack */
#define TK_TC_ACT_SHOT 2
#define TK_BPF_F_INGRESS 1
#define TK_NO_LOOKUP (-1000)

/* For the generated Rust types. */
struct tk_fwd_event _tk_fwd_event = {};
struct tk_fwd_sent _tk_fwd_sent = {};
enum tk_fwd_outcome _tk_fwd_outcome = 0;
enum tk_fwd_via _tk_fwd_via = 0;

const volatile struct tk_fwd_config tk_fwd_config = {};

/* The last error of a frame the egress refused (a veth whose peer has no NAPI: -EOPNOTSUPP at
 * the redirect on 6.3+, -ENXIO from the driver before), for the hint in user space. */
int tk_fwd_xmit_err = 0;
/* xdp__forward's id, set by user space after load: the redirect errors counted are its own. */
__u32 tk_fwd_prog_id = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_FWD_MAX_IFACES * TK_FWD_NOUTCOMES);
	__type(key, __u32);
	__type(value, __u64);
} tk_fwd_counts SEC(".maps");

struct tk_fwd_sent_locked {
	struct bpf_spin_lock lock;
	struct tk_fwd_sent sent;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TK_FWD_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct tk_fwd_sent_locked);
} tk_fwd_sent SEC(".maps");

/* The hot path's share of tk_fwd_sent, per CPU (first_ns: bytes not yet folded in). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_FWD_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct tk_fwd_sent);
} tk_fwd_sent_cpu SEC(".maps");

/* XDP's way out: the interfaces forwarded between, by ifindex (filled from user space). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, TK_FWD_MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} tk_fwd_ports SEC(".maps");

/* Slot of an interface, or -1 when tracekit does not forward on it. */
static __always_inline int tk_fwd_slot(__u32 ifindex)
{
	for (int i = 0; i < TK_FWD_MAX_IFACES; i++) {
		if (i >= tk_fwd_config.nifaces)
			break;
		if (tk_fwd_config.ifindex[i] == ifindex)
			return i;
	}
	return -1;
}

static __always_inline void tk_fwd_count(int slot, __u32 outcome, __u64 n)
{
	__u32 key;
	__u64 *v;

	if (slot < 0 || slot >= TK_FWD_MAX_IFACES || outcome >= TK_FWD_NOUTCOMES)
		return;
	key = slot * TK_FWD_NOUTCOMES + outcome;
	v = bpf_map_lookup_elem(&tk_fwd_counts, &key);
	if (v)
		*v += n;
}

static __always_inline void tk_fwd_count_sent(int slot, __u64 len)
{
	struct tk_fwd_sent_locked *s;
	struct tk_fwd_sent *mine;
	__u32 key = slot;
	__u64 now, unfolded;

	if (slot < 0)
		return;
	mine = bpf_map_lookup_elem(&tk_fwd_sent_cpu, &key);
	if (!mine)
		return;
	mine->packets++;
	mine->bytes += len;
	/* first_ns holds this CPU's bytes not yet folded (the per-CPU copy needs no times) */
	mine->first_ns += len;
	if (mine->packets % TK_FWD_FOLD)
		return;
	unfolded = mine->first_ns;
	mine->first_ns = 0;
	s = bpf_map_lookup_elem(&tk_fwd_sent, &key);
	if (!s)
		return;
	now = bpf_ktime_get_ns();
	bpf_spin_lock(&s->lock);
	s->sent.packets += TK_FWD_FOLD;
	s->sent.bytes += unfolded;
	if (!s->sent.first_ns)
		s->sent.first_ns = now;
	s->sent.last_ns = now;
	bpf_spin_unlock(&s->lock);
}

/* The parsed headers (pointers into the packet). */
struct tk_fwd_pkt {
	struct ethhdr *eth;
	struct iphdr *ip4;
	struct ipv6hdr *ip6;
	__u8 ttl;
};

/* Not for the fast path, whatever the route says: what the kernel's forwarding refuses or
 * treats specially (multicast, broadcast, martians, link-local sources). */
static __always_inline bool tk_fwd_ip4_special(__be32 saddr, __be32 daddr)
{
	__u32 s = bpf_ntohl(saddr), d = bpf_ntohl(daddr);

	return (d >> 28) == 0xe || d == 0xffffffff || (d >> 24) == 0 || (s >> 28) == 0xe || (s >> 24) == 0 ||
	       (s >> 24) == 127 || s == 0xffffffff || (d >> 24) == 127;
}

static __always_inline bool tk_fwd_ip6_special(const struct in6_addr *saddr, const struct in6_addr *daddr)
{
	/* multicast ff00::/8 either way, link-local fe80::/10 source or destination, :: or ::1 */
	__u8 s0 = saddr->in6_u.u6_addr8[0], s1 = saddr->in6_u.u6_addr8[1];
	__u8 d0 = daddr->in6_u.u6_addr8[0], d1 = daddr->in6_u.u6_addr8[1];

	return s0 == 0xff || d0 == 0xff || (s0 == 0xfe && (s1 & 0xc0) == 0x80) ||
	       (d0 == 0xfe && (d1 & 0xc0) == 0x80) || (s0 == 0 && s1 == 0 && saddr->in6_u.u6_addr32[1] == 0 &&
						    saddr->in6_u.u6_addr32[2] == 0 &&
						    (saddr->in6_u.u6_addr32[3] | bpf_htonl(1)) == bpf_htonl(1));
}

/* TCP and UDP ports into the lookup, for policy rules that match them (`ip rule … dport`). */
static __always_inline void tk_fwd_l4_ports(void *l4, void *data_end, __u8 proto, struct bpf_fib_lookup *fib)
{
	__be16 *ports = l4;

	if ((proto == 6 || proto == 17) && (void *)(ports + 2) <= data_end) {
		fib->sport = ports[0];
		fib->dport = ports[1];
	}
}

/* Fills the lookup's parameters from the headers: TK_FWD_REDIRECT when a lookup can run, else
 * the outcome that sends the packet up. `want_len`: the packet's own length for the lookup's MTU
 * check (0 lets an skb helper check the skb itself, for GSO skbs). */
static __always_inline __u32 tk_fwd_prepare(void *data, void *data_end, __u32 ifindex, bool want_len,
					    struct bpf_fib_lookup *fib, struct tk_fwd_pkt *p)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return TK_FWD_ERROR;
	p->eth = eth;
	if (eth->h_proto == bpf_htons(TK_ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return TK_FWD_ERROR;
		p->ip4 = ip;
		p->ttl = ip->ttl;
		/* options (record route, router alert, …) are the stack's to update */
		if (ip->version != 4 || ip->ihl != 5 || tk_fwd_ip4_special(ip->saddr, ip->daddr))
			return TK_FWD_SLOW_PATH;
		fib->family = TK_AF_INET;
		fib->tos = ip->tos;
		fib->l4_protocol = ip->protocol;
		fib->tot_len = want_len ? bpf_ntohs(ip->tot_len) : 0;
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
		/* ports only from a first (or only) fragment */
		if (!(ip->frag_off & bpf_htons(0x1fff)))
			tk_fwd_l4_ports(ip + 1, data_end, ip->protocol, fib);
	} else if (eth->h_proto == bpf_htons(TK_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TK_FWD_ERROR;
		p->ip6 = ip6;
		p->ttl = ip6->hop_limit;
		/* a hop-by-hop header (router alert, jumbograms) is for every router to read */
		if (ip6->nexthdr == 0 || tk_fwd_ip6_special(&ip6->saddr, &ip6->daddr))
			return TK_FWD_SLOW_PATH;
		fib->family = TK_AF_INET6;
		fib->flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
		fib->l4_protocol = ip6->nexthdr;
		/* from the network header on, as for IPv4: the payload plus the 40-byte header */
		fib->tot_len = want_len ? bpf_ntohs(ip6->payload_len) + sizeof(*ip6) : 0;
		__builtin_memcpy(fib->ipv6_src, &ip6->saddr, sizeof(fib->ipv6_src));
		__builtin_memcpy(fib->ipv6_dst, &ip6->daddr, sizeof(fib->ipv6_dst));
		tk_fwd_l4_ports(ip6 + 1, data_end, ip6->nexthdr, fib);
	} else {
		return TK_FWD_NOT_IP;
	}
	fib->ifindex = ifindex;
	return TK_FWD_REDIRECT;
}

/* After a lookup that found a route: TK_FWD_REDIRECT with the egress slot in *out, or why the
 * packet goes up instead. TTL is checked only here: a packet for this host may come with any. */
static __always_inline __u32 tk_fwd_routed(const struct tk_fwd_pkt *p, __u32 egress, int *out)
{
	if (p->ttl <= 1)
		return TK_FWD_TTL;
	*out = tk_fwd_slot(egress);
	return *out < 0 ? TK_FWD_NOT_OURS : TK_FWD_REDIRECT;
}

/* Whether the frame is addressed to slot `slot`'s MAC. */
static __always_inline bool tk_fwd_to_slot_mac(const struct ethhdr *eth, int slot)
{
	if (slot < 0 || slot >= TK_FWD_MAX_IFACES)
		return false;
	for (int i = 0; i < TK_ETH_ALEN; i++)
		if (eth->h_dest[i] != tk_fwd_config.mac[slot][i])
			return false;
	return true;
}

/* The hop: TTL or hop limit down by one (RFC 1624 incremental checksum for IPv4). */
static __always_inline void tk_fwd_hop(struct tk_fwd_pkt *p)
{
	if (p->ip4) {
		__u32 check = p->ip4->check;

		check += bpf_htons(0x0100);
		p->ip4->check = (__sum16)(check + (check >= 0xFFFF));
		p->ip4->ttl--;
	} else if (p->ip6) {
		p->ip6->hop_limit--;
	}
}

/* The hop at TC: as above, and the IPv6 hop limit's change reflected in a CHECKSUM_COMPLETE
 * skb's csum (the kernel's skb_forward_csum() does that for its own forwarding; bpf_redirect
 * does not, and the receiver would report a hardware checksum failure). IPv4's TTL and header
 * checksum change cancel out in the sum. */
static __always_inline void tk_fwd_hop_skb(struct __sk_buff *skb, struct tk_fwd_pkt *p)
{
	__be32 before, after;

	if (!p->ip6) {
		tk_fwd_hop(p);
		return;
	}
	/* the 32-bit word with payload length, next header and hop limit */
	before = *((__be32 *)p->ip6 + 1);
	tk_fwd_hop(p);
	after = *((__be32 *)p->ip6 + 1);
	bpf_csum_update(skb, bpf_csum_diff(&before, sizeof(before), &after, sizeof(after), 0));
}

static __always_inline void tk_fwd_set_macs(struct tk_fwd_pkt *p, const __u8 *smac, const __u8 *dmac)
{
	__builtin_memcpy(p->eth->h_source, smac, TK_ETH_ALEN);
	__builtin_memcpy(p->eth->h_dest, dmac, TK_ETH_ALEN);
}

/* Outcome of a lookup that gave no next hop: the BPF_FIB_LKUP_RET_* code is the outcome. */
static __always_inline __u32 tk_fwd_missed(long rc)
{
	return rc > 0 && rc <= TK_FWD_NO_SRC_ADDR ? rc : TK_FWD_ERROR;
}

static __always_inline void tk_fwd_trace(void *ctx, __u8 hook, __u32 ifindex, __u32 len, struct tk_fwd_pkt *p,
					 const struct bpf_fib_lookup *fib, long rc, __u32 outcome)
{
	struct tk_fwd_event *e;

	if (!tk_fwd_config.trace)
		return;
	e = tk_reserve(sizeof(*e));
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	/* The lookup writes the egress and the MTU only where it found a route: on a miss the
	 * fields still hold the input (the ingress ifindex, the packet's length). */
	e->out_ifindex = rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH ||
					 (rc == TK_NO_LOOKUP && outcome == TK_FWD_INGRESS) ?
				 fib->ifindex : 0;
	e->len = len;
	e->cpu = bpf_get_smp_processor_id();
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	e->family = 0;
	e->proto = 0;
	e->ethertype = 0;
	e->ttl = p->ttl;
	e->outcome = outcome;
	e->hook = hook;
	e->pad = 0;
	e->fib_ret = rc;
	/* mtu_result (5.12+) shares tot_len's place; before it the lookup returned no MTU */
	e->mtu = 0;
	if (bpf_core_field_exists(fib->mtu_result) &&
	    (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED))
		e->mtu = fib->mtu_result;
	if (p->eth) {
		__builtin_memcpy(e->smac, p->eth->h_source, TK_ETH_ALEN);
		__builtin_memcpy(e->dmac, p->eth->h_dest, TK_ETH_ALEN);
		e->ethertype = bpf_ntohs(p->eth->h_proto);
	} else {
		__builtin_memset(e->smac, 0, TK_ETH_ALEN);
		__builtin_memset(e->dmac, 0, TK_ETH_ALEN);
	}
	if (p->ip4) {
		e->family = 4;
		e->proto = p->ip4->protocol;
		e->saddr[0] = p->ip4->saddr;
		e->daddr[0] = p->ip4->daddr;
	} else if (p->ip6) {
		e->family = 6;
		e->proto = p->ip6->nexthdr;
		__builtin_memcpy(e->saddr, &p->ip6->saddr, sizeof(e->saddr));
		__builtin_memcpy(e->daddr, &p->ip6->daddr, sizeof(e->daddr));
	}
	tk_submit(ctx, e, sizeof(*e));
}

SEC("xdp")
int xdp__forward(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup fib = {};
	struct tk_fwd_pkt p = {};
	__u32 len = data_end - data;
	__u32 ifindex = ctx->ingress_ifindex;
	int in = tk_fwd_slot(ifindex), out;
	long rc = TK_NO_LOOKUP;
	__u32 outcome;
	int action = TK_XDP_PASS;

	outcome = tk_fwd_prepare(data, data_end, ifindex, true, &fib, &p);
	if (outcome != TK_FWD_REDIRECT)
		goto done;
	/* Only frames sent to this interface (the kernel forwards PACKET_HOST only): not broadcast,
	 * multicast, nor another host's frames a promiscuous or veth interface also receives. */
	if (in < 0 || !tk_fwd_to_slot_mac(p.eth, in)) {
		outcome = TK_FWD_SLOW_PATH;
		goto done;
	}
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), tk_fwd_config.fib_flags);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		outcome = tk_fwd_missed(rc);
		goto done;
	}
	outcome = tk_fwd_routed(&p, fib.ifindex, &out);
	if (outcome != TK_FWD_REDIRECT)
		goto done;
	tk_fwd_hop(&p);
	tk_fwd_set_macs(&p, fib.smac, fib.dmac);
	action = bpf_redirect_map(&tk_fwd_ports, fib.ifindex, 0);
	if (action != TK_XDP_REDIRECT) {
		outcome = TK_FWD_ABORTED;
		action = TK_XDP_DROP;
		goto done;
	}
	tk_fwd_count_sent(out, len);
done:
	tk_fwd_count(in, outcome, 1);
	tk_fwd_trace(ctx, 0, ifindex, len, &p, &fib, rc, outcome);
	return action;
}

/* TC reads and writes the headers in place: the first bytes are made linear (and private, for
 * the writes) first. 14 + 40 covers Ethernet and either IP header. */
#define TK_FWD_PULL (sizeof(struct ethhdr) + sizeof(struct ipv6hdr))

SEC("tc")
int tc__forward(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	struct tk_fwd_pkt p = {};
	__u32 ifindex = skb->ingress_ifindex;
	__u32 len = skb->len;
	int in = tk_fwd_slot(ifindex), out = -1;
	long rc = TK_NO_LOOKUP;
	__u32 outcome;
	int action = TK_TC_ACT_NEXT;
	void *data, *data_end;

	if (skb->len >= TK_FWD_PULL && (long)skb->data_end - (long)skb->data < (long)TK_FWD_PULL)
		bpf_skb_pull_data(skb, TK_FWD_PULL);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	/* A packet is checked by its own length against the route's MTU. A GSO skb's length is the
	 * whole train: it goes with tot_len 0, and the helper then accepts it whatever its segment
	 * size (is_skb_forwardable), so smaller MTUs on the way out are not caught (README). */
	outcome = tk_fwd_prepare(data, data_end, ifindex, skb->gso_size == 0, &fib, &p);
	if (outcome != TK_FWD_REDIRECT)
		goto done;
	/* The kernel forwards PACKET_HOST frames only; a VLAN tag (taken off before TC) would stay
	 * on the frame through the redirect: both are the stack's. */
	if (skb->pkt_type != 0 || skb->vlan_present) {
		outcome = TK_FWD_SLOW_PATH;
		goto done;
	}
	if (tk_fwd_config.via == TK_FWD_VIA_INGRESS) {
		/* Delivery, not a hop: only the destination MAC changes (a frame for another MAC
		 * would be dropped as PACKET_OTHERHOST). */
		/* byte by byte through the volatile: a memcpy from rodata with the qualifier cast
		 * away is folded to the all-zero initializer by the compiler */
		for (int i = 0; i < TK_ETH_ALEN; i++)
			p.eth->h_dest[i] = tk_fwd_config.ingress_to_mac[i];
		fib.ifindex = tk_fwd_config.ingress_to;
		action = bpf_redirect(tk_fwd_config.ingress_to, TK_BPF_F_INGRESS);
		outcome = action == TK_TC_ACT_SHOT ? TK_FWD_ABORTED : TK_FWD_INGRESS;
		out = tk_fwd_slot(tk_fwd_config.ingress_to);
		goto sent;
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), tk_fwd_config.fib_flags);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		outcome = tk_fwd_missed(rc);
		goto done;
	}
	outcome = tk_fwd_routed(&p, fib.ifindex, &out);
	if (outcome != TK_FWD_REDIRECT)
		goto done;
	tk_fwd_hop_skb(skb, &p);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel resolves the neighbour and fills in the MACs. 5.11+ takes the next hop
		 * the lookup found; 5.10's two-argument form (NULL reads as flags 0) looks it up again. */
		if (bpf_core_type_exists(struct bpf_redir_neigh)) {
			struct bpf_redir_neigh nh = {};

			nh.nh_family = fib.family;
			if (fib.family == TK_AF_INET)
				nh.ipv4_nh = fib.ipv4_dst;
			else
				__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, sizeof(nh.ipv6_nh));
			action = bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
		} else {
			action = bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
		}
		outcome = TK_FWD_NEIGH;
	} else {
		tk_fwd_set_macs(&p, fib.smac, fib.dmac);
		if (tk_fwd_config.via == TK_FWD_VIA_PEER && out >= 0 && out < 32 &&
		    (tk_fwd_config.peer_slots & (1u << out))) {
			action = bpf_redirect_peer(fib.ifindex, 0);
			outcome = TK_FWD_PEER;
		} else {
			action = bpf_redirect(fib.ifindex, 0);
			outcome = TK_FWD_REDIRECT;
		}
	}
	if (action == TK_TC_ACT_SHOT)
		outcome = TK_FWD_ABORTED;
sent:
	if (outcome != TK_FWD_ABORTED)
		tk_fwd_count_sent(out, len);
done:
	tk_fwd_count(in, outcome, 1);
	tk_fwd_trace(skb, 1, ifindex, len, &p, &fib, rc, outcome);
	return action;
}

/* Redirects that failed after the program returned XDP_REDIRECT (the egress cannot take XDP
 * frames: since 6.3 a veth whose peer has no NAPI is refused here), counted at the egress. */
SEC("tp/xdp/xdp_redirect_err")
int tk_fwd_redirect_err(struct trace_event_raw_xdp_redirect_template *ctx)
{
	int slot;

	if (ctx->prog_id != tk_fwd_prog_id)
		return 0;
	slot = tk_fwd_slot(ctx->to_ifindex);
	if (slot < 0)
		slot = tk_fwd_slot(ctx->ifindex);
	tk_fwd_count(slot, TK_FWD_XMIT_DROP, 1);
	tk_fwd_xmit_err = ctx->err;
	return 0;
}

/* Frames an XDP redirect handed to a driver that it dropped (a veth whose peer has no NAPI
 * returns -ENXIO): counted at the egress interface, when it is one of ours in our namespace. */
SEC("raw_tp/xdp_devmap_xmit")
int BPF_PROG(tk_fwd_xmit, const struct net_device *from_dev, const struct net_device *to_dev, int sent, int drops,
	     int err)
{
	int slot;

	if (drops <= 0)
		return 0;
	slot = tk_fwd_slot(BPF_CORE_READ(to_dev, ifindex));
	if (slot < 0 || tk_fwd_slot(BPF_CORE_READ(from_dev, ifindex)) < 0 ||
	    BPF_CORE_READ(to_dev, nd_net.net, ns.inum) != tk_fwd_config.netns)
		return 0;
	tk_fwd_count(slot, TK_FWD_XMIT_DROP, drops);
	tk_fwd_xmit_err = err;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
