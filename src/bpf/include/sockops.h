/* SPDX-License-Identifier: GPL-2.0 */
/* `tracekit sockops`: TCP connections seen by a sockops program on a cgroup. Rust reads this
 * layout through BTF. */
#ifndef TK_SOCKOPS_H
#define TK_SOCKOPS_H

#define TK_SOCKOPS_MAX_PORTS 8
#define TK_SOCKOPS_COMM_LEN 16

enum tk_so_kind {
	TK_SO_ACTIVE = 0,     /* connect() completed: BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB */
	TK_SO_PASSIVE = 1,    /* a listener's connection completed: PASSIVE_ESTABLISHED_CB */
	TK_SO_STATE = 2,      /* STATE_CB: oldstate -> newstate */
	TK_SO_RTT = 3,        /* RTT_CB: one RTT sample (--samples) */
	TK_SO_RETRANS = 4,    /* RETRANS_CB: a segment was sent again */
	TK_SO_SUMMARY = 5,    /* the connection closed: RTT summary (--rtt) */
	TK_SO_NKINDS = 6,
};

struct tk_so_config {
	__u16 lports[TK_SOCKOPS_MAX_PORTS];   /* local ports to keep; empty = all */
	__u16 rports[TK_SOCKOPS_MAX_PORTS];   /* remote ports to keep; empty = all */
	__u32 nlports;
	__u32 nrports;
	__u32 family;                         /* AF_INET / AF_INET6; 0 = both */
	__u32 samples;                        /* an event per RTT sample */
	__u32 summary;                        /* a summary event per connection at close */
	__u32 retrans_only;                   /* only TK_SO_RETRANS events */
	__u32 with_task;                      /* sock_ops may read the current task (a probe) */
	__u32 with_mdev;                      /* sock_ops has bpf_skc_to_tcp_sock() (a probe) */
};

/* Per socket (sk_storage, cloned from a listener to the connections it accepts). */
struct tk_so_sock {
	__u32 pid;                            /* who called connect() or listen(); 0 = unknown */
	char comm[TK_SOCKOPS_COMM_LEN];
	__u32 srtt_min_us;
	__u32 srtt_max_us;
	__u32 samples;
	__u64 srtt_sum_us;
	__u64 established_ns;                 /* 0 = established before tracekit saw it */
};

struct tk_so_event {
	__u64 ts_ns;                          /* first, as in every event: the transport reads it */
	__u64 cookie;                         /* bpf_get_socket_cookie(): one value per socket */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 duration_ns;                    /* summary: since established; 0 = unknown */
	__u32 pid;                            /* 0 = unknown */
	__u32 cpu;
	char comm[TK_SOCKOPS_COMM_LEN];
	__u8 saddr[16];                       /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 family;
	__u16 sport;                          /* host byte order */
	__u16 dport;
	__u8 kind;                            /* enum tk_so_kind */
	__u8 oldstate;                        /* TK_SO_STATE; the state otherwise */
	__u8 newstate;
	__u8 _pad[3];
	__u32 srtt_us;                        /* smoothed RTT; summary: average */
	__u32 mdev_us;                        /* RTT mean deviation; summary: minimum srtt */
	__u32 rtt_max_us;                     /* summary: maximum srtt */
	__u32 samples;                        /* summary: RTT samples */
	__u32 cwnd;
	__u32 ssthresh;
	__u32 total_retrans;
	__u32 retrans_seq;                    /* TK_SO_RETRANS: first sequence number sent again */
	__u32 retrans_segs;                   /* TK_SO_RETRANS: segments */
	__s32 retrans_err;                    /* TK_SO_RETRANS: the transmit's result (0 = sent) */
	__u32 mrtt_us;                        /* TK_SO_RTT: the sample itself (6.10+; else 0) */
};

#endif
