/* SPDX-License-Identifier: GPL-2.0 */
/* What every packet program (xdp, tc, sockfilter) shares: the packet filter, the per-verdict
 * counters, one bounds-checked parser for struct xdp_md and struct __sk_buff, the filter
 * check, the --sock lookup and the event header. Used with transport.bpf.h; no task code.
 *
 * The parser reads every header through tk_pkt_load(): direct packet access for XDP (each
 * read checked against data_end), bpf_skb_load_bytes() for TC (so non-linear skbs decode
 * too) and bpf_skb_load_bytes_relative(BPF_HDR_START_MAC) for socket filters (which cannot
 * see skb->data, and whose skb->data is the network header in BPF_PROG_RUN). A header that
 * does not fit in the captured bytes sets TK_PKT_TRUNCATED and ends the parse: every field
 * after it stays 0. No helper newer than 5.10, no bpf_loop: the loops are unrolled. */
#ifndef TK_PKT_BPF_H
#define TK_PKT_BPF_H

#include "pkt.h"

const volatile struct tk_pkt_filter tk_pkt_filter = {};

/* Keep the event type and the enums in BTF so the Rust side gets them in `types`. */
struct tk_pkt_event _tk_pkt_event = {};
enum tk_dir _tk_dir = 0;
enum tk_verdict _tk_verdict = 0;
enum tk_pkt_hook _tk_pkt_hook = 0;
enum tk_pkt_flag _tk_pkt_flag = 0;
enum tk_pkt_family _tk_pkt_family = 0;
enum tk_sock_state _tk_sock_state = 0;
enum tk_host_side _tk_host_side = 0;
enum tk_pkt_counter _tk_pkt_counter = 0;

/* Packets seen, matched and given each verdict, per CPU (indexed by enum tk_pkt_counter): one
 * map value for all of them, so a packet costs one lookup however many counters it bumps. */
struct tk_pkt_counters {
	__u64 n[TK_CNT_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tk_pkt_counters);
} tk_pkt_counts SEC(".maps");

#define TK_ETH_P_IP 0x0800
#define TK_ETH_P_IPV6 0x86DD
#define TK_ETH_P_8021Q 0x8100
#define TK_ETH_P_8021AD 0x88A8
#define TK_IPPROTO_HOPOPTS 0
#define TK_IPPROTO_ICMP 1
#define TK_IPPROTO_TCP 6
#define TK_IPPROTO_UDP 17
#define TK_IPPROTO_ROUTING 43
#define TK_IPPROTO_FRAGMENT 44
#define TK_IPPROTO_AH 51
#define TK_IPPROTO_ICMPV6 58
#define TK_IPPROTO_DSTOPTS 60
#define TK_IPPROTO_SCTP 132
#define TK_IPV6_EXT_MAX 6        /* extension headers followed before giving up */
#define TK_PKT_MAX_OFF 0x3fff    /* no header starts later (keeps XDP offsets verifiable) */
#define TK_PACKET_OUTGOING 4     /* skb->pkt_type of a packet this host sends */

/* How the parser reads the packet (a compile-time constant at every call). */
enum tk_pkt_src {
	TK_SRC_XDP,     /* struct xdp_md: direct packet access */
	TK_SRC_SKB,     /* struct __sk_buff at tc: offset 0 is the MAC header */
	TK_SRC_SKB_MAC, /* struct __sk_buff of a socket filter: offsets from the MAC header */
};

struct tk_pkt_ctx {
	void *ctx;
	void *data;     /* XDP, tc: the linear part (socket filters have no direct access) */
	void *data_end;
};

/* This CPU's counters (NULL only if the map lookup fails, which a 1-entry array never does). */
static __always_inline struct tk_pkt_counters *tk_pkt_counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&tk_pkt_counts, &zero);
}

static __always_inline void tk_pkt_count(struct tk_pkt_counters *cnt, const __u32 which)
{
	if (cnt)
		cnt->n[which] += 1;
}

/* Headers are copied into 8-aligned stack slots (sizeof unchanged), so that the copies below
 * are word loads and stores rather than byte by byte. */
#define TK_ALIGNED __attribute__((aligned(8)))

/* Copies len (a constant) bytes at off into dst; 0 on success, <0 when they are not there. */
static __always_inline int tk_pkt_load(const struct tk_pkt_ctx *c, const enum tk_pkt_src src,
				       __u32 off, void *dst, const __u32 len)
{
	if (off > TK_PKT_MAX_OFF)
		return -1;
	if (src == TK_SRC_XDP) {
		void *p;

		/* the verifier needs the bound on the register that is added to data */
		asm volatile("%0 &= %1" : "+r"(off) : "i"(TK_PKT_MAX_OFF));
		p = c->data + off;
		if (p + len > c->data_end)
			return -1;
		/* word loads, not byte loads: packet data may be unaligned, which the JITs of the
		 * architectures tracekit builds for (x86-64, arm64) load as they are (the verifier
		 * checks packet alignment only on architectures without efficient unaligned access) */
		__builtin_memcpy(dst, __builtin_assume_aligned(p, 8), len);
		return 0;
	}
	if (src == TK_SRC_SKB) {
		void *p;

		/* the linear part directly (no helper call); what lies beyond it (a non-linear
		 * skb) through bpf_skb_load_bytes, so every header still decodes */
		asm volatile("%0 &= %1" : "+r"(off) : "i"(TK_PKT_MAX_OFF));
		p = c->data + off;
		if (p + len <= c->data_end) {
			__builtin_memcpy(dst, __builtin_assume_aligned(p, 8), len);
			return 0;
		}
		return bpf_skb_load_bytes(c->ctx, off, dst, len);
	}
	return bpf_skb_load_bytes_relative(c->ctx, off, dst, len, BPF_HDR_START_MAC);
}

struct tk_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct tk_vlan {
	__be16 tci;
	__be16 proto;
};

struct tk_ip4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct tk_ip6 {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

/* The first 8 bytes of every IPv6 extension header; for hop-by-hop also the jumbo option. */
struct tk_ip6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
	__u8 opt[6];
};

struct tk_tcp {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 doff;
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urg;
};

struct tk_ports_hdr { /* UDP (8 bytes) */
	__be16 sport;
	__be16 dport;
	__be16 len;
	__be16 check;
};

struct tk_sctp {
	__be16 sport;
	__be16 dport;
	__be32 vtag;
	__be32 check;
};

struct tk_icmp { /* ICMPv4 header: 8 bytes; ICMPv6 uses the first 4 */
	__u8 type;
	__u8 code;
	__be16 check;
	__be32 rest;
};

/* Ports, flags, ICMP type/code of the transport header at off. */
static __always_inline void tk_pkt_parse_l4(const struct tk_pkt_ctx *c, const enum tk_pkt_src src,
					    __u32 off, struct tk_pkt *p)
{
	switch (p->proto) {
	case TK_IPPROTO_TCP: {
		struct tk_tcp t TK_ALIGNED;

		if (tk_pkt_load(c, src, off, &t, sizeof(t)) < 0)
			goto truncated;
		p->sport = bpf_ntohs(t.sport);
		p->dport = bpf_ntohs(t.dport);
		p->tcp_flags = t.flags;
		return;
	}
	case TK_IPPROTO_UDP: {
		struct tk_ports_hdr u TK_ALIGNED;

		if (tk_pkt_load(c, src, off, &u, sizeof(u)) < 0)
			goto truncated;
		p->sport = bpf_ntohs(u.sport);
		p->dport = bpf_ntohs(u.dport);
		return;
	}
	case TK_IPPROTO_SCTP: {
		struct tk_sctp s TK_ALIGNED;

		if (tk_pkt_load(c, src, off, &s, sizeof(s)) < 0)
			goto truncated;
		p->sport = bpf_ntohs(s.sport);
		p->dport = bpf_ntohs(s.dport);
		return;
	}
	case TK_IPPROTO_ICMP: {
		struct tk_icmp i TK_ALIGNED;

		if (tk_pkt_load(c, src, off, &i, sizeof(i)) < 0)
			goto truncated;
		p->icmp_type = i.type;
		p->icmp_code = i.code;
		return;
	}
	case TK_IPPROTO_ICMPV6: {
		struct tk_icmp i TK_ALIGNED;

		if (tk_pkt_load(c, src, off, &i, 4) < 0)
			goto truncated;
		p->icmp_type = i.type;
		p->icmp_code = i.code;
		return;
	}
	default:
		return;
	}
truncated:
	p->flags |= TK_PKT_TRUNCATED;
}

/* IPv4 at off: addresses, length, TTL, TOS; then L4 unless a later fragment. */
static __always_inline void tk_pkt_parse_ip4(const struct tk_pkt_ctx *c, const enum tk_pkt_src src,
					     __u32 off, struct tk_pkt *p)
{
	struct tk_ip4 ip TK_ALIGNED;
	__u32 ihl;
	__u16 frag;

	if (tk_pkt_load(c, src, off, &ip, sizeof(ip)) < 0) {
		p->flags |= TK_PKT_TRUNCATED;
		return;
	}
	p->family = TK_FAMILY_IPV4;
	__builtin_memcpy(p->saddr, ip.saddr, 4);
	__builtin_memcpy(p->daddr, ip.daddr, 4);
	p->ip_len = bpf_ntohs(ip.tot_len);
	p->ttl = ip.ttl;
	p->tos = ip.tos;
	p->proto = ip.proto;
	ihl = (ip.ver_ihl & 0x0f) * 4;
	if (ihl < sizeof(ip))
		return; /* malformed: no transport header to find */
	if (ihl > sizeof(ip))
		p->flags |= TK_PKT_IP_OPTIONS;
	frag = bpf_ntohs(ip.frag_off);
	if (frag & 0x3fff) { /* MF or an offset */
		p->flags |= TK_PKT_FRAGMENT;
		if (frag & 0x1fff) {
			p->flags |= TK_PKT_LATER_FRAG;
			return;
		}
	}
	tk_pkt_parse_l4(c, src, off + ihl, p);
}

/* IPv6 at off, its extension headers (up to TK_IPV6_EXT_MAX), then L4. */
static __always_inline void tk_pkt_parse_ip6(const struct tk_pkt_ctx *c, const enum tk_pkt_src src,
					     __u32 off, struct tk_pkt *p)
{
	struct tk_ip6 ip TK_ALIGNED;
	__u8 next;

	if (tk_pkt_load(c, src, off, &ip, sizeof(ip)) < 0) {
		p->flags |= TK_PKT_TRUNCATED;
		return;
	}
	p->family = TK_FAMILY_IPV6;
	__builtin_memcpy(p->saddr, ip.saddr, 16);
	__builtin_memcpy(p->daddr, ip.daddr, 16);
	p->ip_len = bpf_ntohs(ip.payload_len) + sizeof(ip);
	p->ttl = ip.hop_limit;
	p->tos = (bpf_ntohl(ip.ver_tc_flow) >> 20) & 0xff;
	next = ip.nexthdr;
	off += sizeof(ip);

#pragma unroll
	for (int i = 0; i < TK_IPV6_EXT_MAX; i++) {
		struct tk_ip6_ext x TK_ALIGNED;

		if (next != TK_IPPROTO_HOPOPTS && next != TK_IPPROTO_ROUTING &&
		    next != TK_IPPROTO_DSTOPTS && next != TK_IPPROTO_FRAGMENT && next != TK_IPPROTO_AH)
			break;
		if (tk_pkt_load(c, src, off, &x, sizeof(x)) < 0) {
			p->proto = next;
			p->flags |= TK_PKT_TRUNCATED;
			return;
		}
		p->flags |= TK_PKT_EXT_HEADERS;
		if (next == TK_IPPROTO_FRAGMENT) {
			__u16 fo = ((__u16)x.opt[0] << 8) | x.opt[1];

			p->flags |= TK_PKT_FRAGMENT;
			if (fo & 0xfff8) {
				p->proto = x.nexthdr;
				p->flags |= TK_PKT_LATER_FRAG;
				return;
			}
			off += 8;
		} else if (next == TK_IPPROTO_AH) {
			off += ((__u32)x.hdrlen + 2) * 4;
		} else {
			/* a jumbogram (RFC 2675) has payload length 0 and the length in hop-by-hop;
			 * ip_len cannot hold it and says 0xffff ("65535 or more") */
			if (next == TK_IPPROTO_HOPOPTS && x.opt[0] == 0xc2 && x.opt[1] == 4 &&
			    ip.payload_len == 0)
				p->ip_len = 0xffff;
			off += ((__u32)x.hdrlen + 1) * 8;
		}
		next = x.nexthdr;
	}
	p->proto = next;
	tk_pkt_parse_l4(c, src, off, p);
}

/* Parses the frame of c into p (zeroed here). skb_vlan: a VLAN tag the NIC took out of the
 * frame (skb->vlan_tci when vlan_present), 0 for none; the in-band tags come after it. */
static __always_inline void tk_pkt_parse(const struct tk_pkt_ctx *c, const enum tk_pkt_src src,
					 __u16 skb_vlan, struct tk_pkt *p)
{
	struct tk_eth eth TK_ALIGNED;
	__u32 off = sizeof(eth);
	__u16 proto;
	int tags = 0;

	__builtin_memset(p, 0, sizeof(*p));
	/* keep p in memory: split into one spilled scalar per byte (what clang does to a local
	 * struct it can see whole), it cost hundreds of instructions to build and to copy out */
	asm volatile("" : : "r"(p) : "memory");
	/* a capture that prints nothing and filters only by expression needs no decoded fields */
	if (tk_pkt_filter.no_decode)
		return;
	if (tk_pkt_load(c, src, 0, &eth, sizeof(eth)) < 0) {
		p->flags |= TK_PKT_TRUNCATED;
		return;
	}
	proto = bpf_ntohs(eth.proto);
	p->ethertype = proto;
	if (skb_vlan) {
		p->vlan = skb_vlan & 0x0fff;
		tags = 1;
	}
	/* 802.1Q, or 802.1ad outer + 802.1Q inner (QinQ) */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		struct tk_vlan v TK_ALIGNED;

		if (proto != TK_ETH_P_8021Q && proto != TK_ETH_P_8021AD)
			break;
		if (tk_pkt_load(c, src, off, &v, sizeof(v)) < 0) {
			p->flags |= TK_PKT_TRUNCATED;
			return;
		}
		if (tags == 0)
			p->vlan = bpf_ntohs(v.tci) & 0x0fff;
		else
			p->vlan_inner = bpf_ntohs(v.tci) & 0x0fff;
		tags++;
		proto = bpf_ntohs(v.proto);
		p->ethertype = proto;
		off += sizeof(v);
	}
	if (proto == TK_ETH_P_IP)
		tk_pkt_parse_ip4(c, src, off, p);
	else if (proto == TK_ETH_P_IPV6)
		tk_pkt_parse_ip6(c, src, off, p);
}

/* The user's tcpdump expression (`tracekit xdp IFACE tcp port 80`): before load, tracekit
 * replaces this function's body with the expression, compiled by libpcap to classic BPF and
 * translated to eBPF (src/runtime/pcap). Non-zero: the packet matches. The frame starts at
 * its Ethernet header: at `data` for XDP, at offset 0 of the skb for tc, at the MAC header
 * for a socket filter; `len` is the frame's whole length. Not inlined, so that it can be
 * found and replaced; the placeholder uses every argument, so every call passes them all. */
static __noinline int tk_pcap_filter(void *ctx, void *data, void *data_end, __u32 len)
{
	return ctx != 0 && data != data_end && len != 0;
}

/* Whether the tcpdump expression, if any, matches the frame. */
static __always_inline bool tk_pcap_allows(const struct tk_pkt_ctx *c, __u32 len)
{
	if (!tk_pkt_filter.pcap)
		return true;
	return tk_pcap_filter(c->ctx, c->data, c->data_end, len) != 0;
}

/* Whether the packet filter of rodata lets p through (every part off when zero). */
static __always_inline bool tk_pkt_filter_allows(const struct tk_pkt *p)
{
	const volatile struct tk_pkt_filter *f = &tk_pkt_filter;

	if (f->family && p->family != f->family)
		return false;
	if (f->proto && p->proto != f->proto)
		return false;
	if (f->nports) {
		bool hit = false;

#pragma unroll
		for (int i = 0; i < TK_PKT_MAX_PORTS; i++)
			if (i < f->nports && (f->ports[i] == p->sport || f->ports[i] == p->dport))
				hit = true;
		if (!hit)
			return false;
	}
	if (f->host_family) {
		bool src_ok = true, dst_ok = true;

		if (p->family != f->host_family)
			return false;
#pragma unroll
		for (int i = 0; i < 16; i++) {
			int bits = (int)f->host_prefix - 8 * i;
			__u8 mask;

			if (bits <= 0)
				break;
			mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
			if ((p->saddr[i] & mask) != (f->host[i] & mask))
				src_ok = false;
			if ((p->daddr[i] & mask) != (f->host[i] & mask))
				dst_ok = false;
		}
		if (f->host_side == TK_HOST_SRC)
			return src_ok;
		if (f->host_side == TK_HOST_DST)
			return dst_ok;
		return src_ok || dst_ok;
	}
	return true;
}

/* --sock (XDP and TC): the local TCP socket of the flow, from the packet's point of view (an
 * egress packet's source is the local end, so the tuple is swapped). want_owner: also the
 * socket's cookie and owner uid, read through bpf_skc_to_tcp_sock (full sockets only). */
static __always_inline void tk_pkt_sock(void *ctx, const struct tk_pkt *p, __u8 dir,
					const bool want_owner, struct tk_pkt_event *e)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 tlen;
	bool egress = dir == TK_DIR_EGRESS;

	if (p->proto != TK_IPPROTO_TCP || (p->flags & (TK_PKT_LATER_FRAG | TK_PKT_TRUNCATED)))
		return;
	if (p->family == TK_FAMILY_IPV4) {
		__builtin_memcpy(&t.ipv4.saddr, egress ? p->daddr : p->saddr, 4);
		__builtin_memcpy(&t.ipv4.daddr, egress ? p->saddr : p->daddr, 4);
		t.ipv4.sport = bpf_htons(egress ? p->dport : p->sport);
		t.ipv4.dport = bpf_htons(egress ? p->sport : p->dport);
		tlen = sizeof(t.ipv4);
	} else if (p->family == TK_FAMILY_IPV6) {
		__builtin_memcpy(t.ipv6.saddr, egress ? p->daddr : p->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, egress ? p->saddr : p->daddr, 16);
		t.ipv6.sport = bpf_htons(egress ? p->dport : p->sport);
		t.ipv6.dport = bpf_htons(egress ? p->sport : p->dport);
		tlen = sizeof(t.ipv6);
	} else {
		return;
	}
	sk = bpf_skc_lookup_tcp(ctx, &t, tlen, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return;
	e->sk_found = 1;
	e->sk_state = sk->state;
	if (want_owner) {
		struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);

		if (tp) {
			e->sk_cookie = tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter;
			e->sk_uid = tp->inet_conn.icsk_inet.sk.sk_uid.val;
		}
	}
	bpf_sk_release(sk);
}

/* The event header and the fields every hook fills the same way. */
static __always_inline void tk_pkt_fill(struct tk_pkt_event *e, const struct tk_pkt *p, __u32 ifindex,
					__u32 len, __u8 dir, __u8 hook, __u32 mark, __u8 verdict)
{
	/* every field and pad written: no memset of the record first */
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->hdr.ifindex = ifindex;
	e->hdr.netns = tk_pkt_filter.netns;
	e->hdr.cpu = bpf_get_smp_processor_id();
	e->hdr.len = len;
	e->hdr.dir = dir;
	e->hdr.hook = hook;
	e->hdr._pad = 0;
	e->hdr.caplen = 0;
	e->pkt = *p;
	e->mark = mark;
	e->sk_cookie = 0;
	e->sk_uid = 0;
	e->verdict = verdict;
	e->sk_state = TK_SOCK_NONE;
	e->sk_found = 0;
	e->_pad = 0;
}

/* ---- captures (-w): the event followed by the frame's first bytes ---- */

struct tk_capture {
	struct tk_pkt_event event;
	__u8 frame[TK_CAPTURE_MAX];
};

/* One per CPU: packet programs run in softirq (or with bottom halves off) and never nest. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tk_capture);
} tk_capture_buf SEC(".maps");

/* The capture record to fill, or NULL when -w is off (or the lookup fails). */
static __always_inline struct tk_capture *tk_capture_slot(void)
{
	__u32 zero = 0;

	if (!tk_pkt_filter.snaplen)
		return NULL;
	return bpf_map_lookup_elem(&tk_capture_buf, &zero);
}

/* How many bytes of a frame of `len` to copy: snaplen, at most TK_CAPTURE_MAX, bounded for
 * the verifier. */
static __always_inline __u64 tk_caplen(__u32 len)
{
	__u64 n = len < tk_pkt_filter.snaplen ? len : tk_pkt_filter.snaplen;

	if (n > TK_CAPTURE_MAX)
		n = TK_CAPTURE_MAX;
	return n;
}

/* Whether *n is a length to copy, 1..TK_CAPTURE_MAX, checked so that the verifier learns both
 * bounds on the register passed to the copy helper: two separate tests (clang would fold them
 * into one unsigned test of n - 1, which the verifier cannot follow back to n), the lower one
 * signed (every verifier turns `s> 0` into a minimum of 1). */
static __always_inline bool tk_caplen_ok(__u64 *n)
{
	__u64 v = *n;

	asm volatile("" : "+r"(v));
	if (v > TK_CAPTURE_MAX)
		return false;
	asm volatile("" : "+r"(v));
	if ((__s64)v <= 0)
		return false;
	*n = v;
	return true;
}

/* Sends the event and its `caplen` frame bytes already in `cap` as one record (the variable
 * size is why it is built in the per-CPU buffer and copied out, on both transports). */
static __always_inline void tk_capture_send(void *ctx, struct tk_capture *cap, __u32 caplen)
{
	__u64 size;

	if (caplen > TK_CAPTURE_MAX) /* the copy helpers checked it; the verifier needs it here */
		caplen = TK_CAPTURE_MAX;
	cap->event.hdr.caplen = caplen;
	size = sizeof(cap->event) + caplen;
	if (tk_transport.use_perfbuf) {
		if (bpf_perf_event_output(ctx, &tk_events, BPF_F_CURRENT_CPU, cap, size) < 0)
			tk_count_drop();
	} else if (bpf_ringbuf_output(&tk_events, cap, size, tk_wakeup_flags(cap, size)) < 0) {
		tk_count_drop();
	}
}

#endif
