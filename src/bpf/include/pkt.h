/* SPDX-License-Identifier: GPL-2.0 */
/* Packet events and the packet filter, shared by every packet tool (xdp, tc, sockfilter) and,
 * through BTF, by the Rust side. Constants are C enums so that they reach Rust as generated
 * types: there is no second copy to keep in step. */
#ifndef TK_PKT_H
#define TK_PKT_H

#define TK_PKT_MAX_PORTS 8
/* Most frame bytes one event carries (-w): the capture buffer is a per-CPU map value, which
 * the kernel limits to 32 KiB; the event itself comes first. */
#define TK_CAPTURE_MAX (32 * 1024 - 128)

/* Where a packet was seen. */
enum tk_dir {
	TK_DIR_INGRESS = 0,
	TK_DIR_EGRESS = 1,
};

/* What the program did with the packet. */
enum tk_verdict {
	TK_VERDICT_PASS = 0,
	TK_VERDICT_DROP = 1,
};

/* Which hook produced an event (the same parser runs in all of them). */
enum tk_pkt_hook {
	TK_HOOK_XDP = 0,
	TK_HOOK_TC = 1,
	TK_HOOK_SOCKET = 2,
};

/* Facts about the parse, a bit set in tk_pkt.flags. */
enum tk_pkt_flag {
	TK_PKT_TRUNCATED = 1,   /* a header ended past the captured bytes: fields after it are 0 */
	TK_PKT_FRAGMENT = 2,    /* an IPv4/IPv6 fragment: ports only in the first one */
	TK_PKT_IP_OPTIONS = 4,  /* IPv4 header longer than 20 bytes */
	TK_PKT_EXT_HEADERS = 8, /* IPv6 extension headers were skipped */
	TK_PKT_LATER_FRAG = 16, /* a fragment other than the first: no L4 header in it */
};

/* Slots of the per-CPU counter map tk_pkt_counts: every packet the program saw, those the
 * filter let through, and the verdicts given to them. */
enum tk_pkt_counter {
	TK_CNT_SEEN = 0,
	TK_CNT_MATCHED = 1,
	TK_CNT_PASS = 2,
	TK_CNT_DROP = 3,
	TK_CNT_MAX = 4,
};

/* Address family of tk_pkt.family (0: not IP; see ethertype). */
enum tk_pkt_family {
	TK_FAMILY_NONE = 0,
	TK_FAMILY_IPV4 = 4,
	TK_FAMILY_IPV6 = 6,
};

/* TCP state of the socket found with --sock (BPF_TCP_* numbering; 0: no socket). */
enum tk_sock_state {
	TK_SOCK_NONE = 0,
	TK_SOCK_ESTABLISHED = 1,
	TK_SOCK_SYN_SENT = 2,
	TK_SOCK_SYN_RECV = 3,
	TK_SOCK_FIN_WAIT1 = 4,
	TK_SOCK_FIN_WAIT2 = 5,
	TK_SOCK_TIME_WAIT = 6,
	TK_SOCK_CLOSE = 7,
	TK_SOCK_CLOSE_WAIT = 8,
	TK_SOCK_LAST_ACK = 9,
	TK_SOCK_LISTEN = 10,
	TK_SOCK_CLOSING = 11,
	TK_SOCK_NEW_SYN_RECV = 12,
};

/* Leads every packet event (the task header's place in task events): when and where. The
 * first field is the time, as in struct tk_hdr: the transport's wakeup check reads it. */
struct tk_pkt_hdr {
	__u64 ts_ns;            /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 ifindex;          /* interface the packet was seen on */
	__u32 netns;            /* inode of that interface's network namespace (from rodata) */
	__u32 cpu;
	__u32 len;              /* length on the wire (the whole frame, not just the parsed part) */
	__u8 dir;               /* enum tk_dir */
	__u8 hook;              /* enum tk_pkt_hook */
	__u16 _pad;
	__u32 caplen;           /* -w: bytes of the frame that follow the event (0: none) */
};

/* One packet, parsed. Addresses and ports in network byte order as on the wire... except the
 * ports, which are in host order (the parser converts them once). IPv4 addresses use the first
 * 4 bytes of the 16. */
struct tk_pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 ethertype;        /* host order; the inner one after VLAN tags */
	__u16 vlan;             /* outer VLAN id (0: untagged) */
	__u16 vlan_inner;       /* inner VLAN id of QinQ (0: none) */
	__u16 sport;            /* host order; 0 when the protocol has none */
	__u16 dport;
	__u16 ip_len;           /* IPv4 total length / IPv6 payload length + 40 */
	__u8 family;            /* enum tk_pkt_family */
	__u8 proto;             /* IPPROTO_* of the transport header (after IPv6 extensions) */
	__u8 tcp_flags;         /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
	__u8 ttl;               /* TTL / hop limit */
	__u8 tos;               /* DSCP << 2 | ECN (IPv4 TOS, IPv6 traffic class) */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 flags;             /* enum tk_pkt_flag bits */
};

/* What a packet tool sends per packet. */
/* What a packet tool sends per packet: 104 bytes, no implicit padding (every byte is written,
 * so the programs need not clear the record first). */
struct tk_pkt_event {
	struct tk_pkt_hdr hdr;  /* 32 */
	struct tk_pkt pkt;      /* 52 */
	__u32 mark;             /* skb->mark (tc, sockfilter); 0 in XDP */
	__u64 sk_cookie;        /* --sock (tc): socket cookie, 0 when unknown */
	__u32 sk_uid;           /* --sock (tc): owner uid of the socket, when found */
	__u8 verdict;           /* enum tk_verdict */
	__u8 sk_state;          /* --sock: enum tk_sock_state */
	__u8 sk_found;          /* --sock: 1 when a socket owns the flow */
	__u8 _pad;
};

/* Where --host applies. */
enum tk_host_side {
	TK_HOST_EITHER = 0,
	TK_HOST_SRC = 1,
	TK_HOST_DST = 2,
};

/* The in-kernel packet filter, written into rodata before load. Zero means "off" everywhere. */
struct tk_pkt_filter {
	__u8 host[16];          /* --host/--src/--dst address (network order), masked to host_prefix */
	__u16 ports[TK_PKT_MAX_PORTS]; /* --port: src or dst port (host order) */
	__u32 nports;
	__u32 netns;            /* copied into every tk_pkt_hdr.netns */
	__u8 family;            /* -4/-6: enum tk_pkt_family; 0 = both (and non-IP frames) */
	__u8 proto;             /* --proto: IPPROTO_*; 0 = any */
	__u8 host_family;       /* 0 = no host filter */
	__u8 host_prefix;       /* prefix length in bits */
	__u8 host_side;         /* enum tk_host_side */
	__u8 drop;              /* --drop (xdp): matched packets get XDP_DROP */
	__u8 sock;              /* --sock: look up the local TCP socket of each TCP packet */
	__u8 skip_lo_outgoing;  /* sockfilter: skip packets leaving lo (each is seen leaving and arriving) */
	__u8 pcap;              /* a tcpdump expression was given: tk_pcap_filter() was replaced by it */
	__u32 snaplen;          /* -w: copy up to this many bytes of each matched frame (0: none) */
	__u32 drop_every;       /* --drop-every N (xdp): XDP_DROP the Nth, 2Nth, ... matched packet,
				 * counted across CPUs; only those become events (0: off) */
	__u8 no_decode;         /* -w without --print, --sock or field filters: skip the parser */
	__u8 _pad[3];
};

#endif
