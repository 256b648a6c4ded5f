/* SPDX-License-Identifier: GPL-2.0 */
/* Types of `tracekit sklookup` (one socket for many ports and addresses, chosen at socket
 * lookup), shared with the Rust side through BTF. */
#ifndef TK_SKLOOKUP_H
#define TK_SKLOOKUP_H

#include "transport.h"

/* The port set (user space adds and removes ports while running). */
#define TK_SKL_MAX_PORTS 1024
/* The destination prefix set. */
#define TK_SKL_MAX_ADDRS 64

/* SOCKMAP slots: one per protocol and family (a dual-stack IPv6 socket fills both of its
 * protocol's slots). */
enum tk_skl_slot {
	TK_SKL_TCP4 = 0,
	TK_SKL_TCP6 = 1,
	TK_SKL_UDP4 = 2,
	TK_SKL_UDP6 = 3,
	TK_SKL_NSLOTS = 4,
};

/* What the program did with a lookup whose destination port is in the set. */
enum tk_skl_verdict {
	TK_SKL_STEERED = 0,    /* bpf_sk_assign: the lookup returns the slot's socket */
	TK_SKL_PASSED = 1,     /* destination address outside every prefix: the usual lookup */
	TK_SKL_NO_SOCKET = 2,  /* the slot is empty (no socket of that protocol and family, or it closed) */
	TK_SKL_FAILED = 3,     /* bpf_sk_assign refused (err): the usual lookup */
};

/* Per-CPU counters, summed by user space. */
enum tk_skl_counter {
	TK_SKL_LOOKUPS = 0,    /* every lookup of a steered protocol in the namespace */
	TK_SKL_HITS = 1,       /* steered */
	TK_SKL_MISSES = 2,     /* port in the set, not steered (passed, no socket, failed) */
	TK_SKL_NCOUNTERS = 3,
};

/* A key of the prefix set (LPM trie): data[0] is the family (4 or 6), data[1..] the address
 * (IPv4 in the first 4 bytes); prefixlen counts the family byte's 8 bits. */
struct tk_skl_prefix {
	__u32 prefixlen;
	__u8 data[20];         /* 1 + 16 used, 3 bytes of explicit padding */
};

/* Written into rodata before load. */
struct tk_skl_config {
	__u64 cookie[TK_SKL_NSLOTS]; /* SO_COOKIE of each slot's socket, 0 when empty */
	__u32 protos;          /* bit 0: TCP lookups, bit 1: UDP lookups */
	__u32 _pad;
};

/* One lookup whose destination port is in the set. */
struct tk_skl_event {
	__u64 ts_ns;           /* first, as in every event: the transport's wakeup reads it */
	__u64 cookie;          /* the socket it was steered to; 0 unless steered */
	__u8 laddr[16];        /* the destination (IPv4 in the first 4 bytes) */
	__u8 raddr[16];        /* the source */
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u8 proto;            /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 verdict;          /* enum tk_skl_verdict */
	__s32 err;             /* bpf_sk_assign's error with TK_SKL_FAILED (negative errno) */
	__u32 cpu;
};

#endif
