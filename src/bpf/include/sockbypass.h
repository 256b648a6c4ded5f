/* SPDX-License-Identifier: GPL-2.0 */
/* `tracekit sockmap bypass`: local TCP connections whose data skips the loopback stack. Rust
 * reads this layout through BTF. */
#ifndef TK_SOCKBYPASS_H
#define TK_SOCKBYPASS_H

#define TK_BP_MAX_CONNS 65536
#define TK_BP_MAX_PORTS 8
#define TK_BP_COMM_LEN 16

enum tk_bp_kind {
	TK_BP_PAIR = 0,       /* both ends of a connection are in the sockhash: bypassed */
	TK_BP_CLOSED = 1,     /* one end closed: the bytes its sendmsg() redirected */
	TK_BP_FULL = 2,       /* the sockhash was full: the connection takes the normal path */
};

/* Counters (a per-CPU array, summed by user space). */
enum tk_bp_count {
	TK_BP_C_SOCKETS = 0,  /* sockets put into the sockhash */
	TK_BP_C_PAIRS = 1,    /* connections with both ends in it */
	TK_BP_C_CLOSED = 2,   /* sockets that closed after being put in */
	TK_BP_C_BYTES = 3,    /* bytes redirected to the peer's receive queue */
	TK_BP_C_MSGS = 4,     /* sendmsg() messages redirected */
	TK_BP_C_PASSED = 5,   /* messages left to TCP (peer not in the sockhash, or draining) */
	TK_BP_C_FULL = 6,     /* sockets the sockhash had no room for */
	TK_BP_NCOUNTS = 7,
};

struct tk_bp_config {
	__u16 ports[TK_BP_MAX_PORTS];         /* either end's port must be one of these; empty = all */
	__u32 nports;
	__u32 with_task;                      /* sock_ops may read the current task (a probe) */
	__u32 with_netns;                     /* sock_ops and sk_msg have bpf_get_netns_cookie (5.15) */
};

/* A connection end as seen from its socket; the peer's key swaps the two ends. */
struct tk_bp_key {
	__u64 netns;                          /* netns cookie, or 0 where not available */
	__u32 lip[4];                         /* network order; IPv4 in lip[0] */
	__u32 rip[4];
	__u32 family;
	__u32 lport;                          /* host order */
	__u32 rport;
	__u32 _pad;
};

/* Per socket in the sockhash, keyed like it. */
struct tk_bp_conn {
	__u64 bytes;                          /* bytes its sendmsg() redirected to the peer */
	__u64 msgs;
	__u64 opened_ns;
	__u32 pid;                            /* who called connect() or listen(); 0 = unknown */
	__u32 _pad;
	char comm[TK_BP_COMM_LEN];
};

/* Who made a socket (sk_storage, cloned from a listener to the connections it accepts). */
struct tk_bp_task {
	__u32 pid;
	char comm[TK_BP_COMM_LEN];
};

struct tk_bp_event {
	__u64 ts_ns;                          /* first, as in every event: the transport reads it */
	__u64 bytes;                          /* CLOSED: bytes redirected by this end */
	__u64 msgs;
	__u64 duration_ns;                    /* CLOSED: since it was put into the sockhash */
	__u32 cpu;
	__u32 pid;                            /* this end's task; 0 = unknown */
	__u32 peer_pid;                       /* PAIR: the other end's task */
	__u16 family;
	__u16 sport;                          /* this end, host order */
	__u16 dport;                          /* the other end */
	__u8 kind;                            /* enum tk_bp_kind */
	__u8 _pad[5];
	__u8 saddr[16];                       /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	char comm[TK_BP_COMM_LEN];
	char peer_comm[TK_BP_COMM_LEN];
};

#endif
