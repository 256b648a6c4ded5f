/* SPDX-License-Identifier: GPL-2.0 */
/* `tracekit sockmap`: connections spliced in the kernel. Rust reads this layout through BTF. */
#ifndef TK_SOCKMAP_H
#define TK_SOCKMAP_H

#define TK_SM_MAX_CONNS 65536

enum tk_sm_kind {
	TK_SM_OPEN = 0,       /* a connection went into the sockhash */
	TK_SM_CLOSED = 1,     /* it closed: bytes spliced */
	TK_SM_FULL = 2,       /* the sockhash was full: left to user space */
};

struct tk_sm_config {
	__u64 netns_cookie;                   /* the listener's network namespace; 0 = not checked */
	__u16 port;                           /* the listener's port (host order) */
	__u8 _pad[6];
};

/* Per connection, keyed by its socket cookie. */
struct tk_sm_conn {
	__u64 peer;                           /* the cookie its bytes go to (itself: echo; the other
						 * connection of the pair: proxy) */
	__u64 bytes;                          /* bytes the verdict program redirected */
	__u64 opened_ns;
};

struct tk_sm_event {
	__u64 ts_ns;                          /* first, as in every event: the transport reads it */
	__u64 cookie;
	__u64 bytes;
	__u64 duration_ns;
	__u32 cpu;
	__u16 family;
	__u16 sport;                          /* host byte order */
	__u16 dport;
	__u8 kind;                            /* enum tk_sm_kind */
	__u8 _pad[5];
	__u8 saddr[16];                       /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

#endif
