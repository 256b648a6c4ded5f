/* SPDX-License-Identifier: GPL-2.0 */
/* Types of `tracekit tcpcc load` (congestion control algorithms in BPF, registered through
 * struct_ops), shared with the Rust side through BTF. */
#ifndef TK_TCPCC_H
#define TK_TCPCC_H

#include "transport.h"

/* The algorithms this object carries; the index of each one's counters. */
enum tk_cc_algo {
	TK_CC_RENO = 0,
	TK_CC_VEGAS = 1,
	TK_CC_NALGOS = 2,
};

/* Why an algorithm changed cwnd or ssthresh (one event each with --events, and a counter). */
enum tk_cc_reason {
	TK_CC_INIT = 0,        /* a socket started using the algorithm */
	TK_CC_RELEASE = 1,     /* ... and stopped (closed, or switched to another algorithm) */
	TK_CC_SLOW_START = 2,  /* cwnd grew by the segments acked (below ssthresh) */
	TK_CC_AVOIDANCE = 3,   /* cwnd grew by one segment after a window's worth of acks */
	TK_CC_LOSS = 4,        /* the kernel saw a loss and asked for ssthresh: half of cwnd */
	TK_CC_UNDO = 5,        /* the loss was spurious: cwnd back to what it was */
	TK_CC_DELAY_DOWN = 6,  /* vegas: queueing delay above beta, cwnd one segment smaller */
	TK_CC_DELAY_HOLD = 7,  /* vegas: left slow start because a queue started to build */
	TK_CC_NREASONS = 8,
};

/* Written into rodata before load. */
struct tk_cc_config {
	__u32 events;          /* --events: one record per decision */
	__u32 select;          /* -- CMD / --cgroup: the sockops program's algorithm (enum tk_cc_algo) */
};

/* One decision of an algorithm. */
struct tk_cc_event {
	__u64 ts_ns;           /* first, as in every event: the transport's wakeup reads it */
	__u64 sk;              /* the socket's kernel address: tells flows apart */
	__u8 saddr[16];        /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 algo;             /* enum tk_cc_algo */
	__u8 reason;           /* enum tk_cc_reason */
	__u32 cwnd_before;     /* segments */
	__u32 cwnd;            /* after the decision */
	__u32 ssthresh;        /* after the decision */
	__u32 srtt_us;
	__u32 in_flight;       /* packets out, minus sacked and lost, plus retransmitted */
	__u32 acked;           /* segments this ack acknowledged (growth decisions) */
	__u32 min_rtt_us;      /* vegas: this round's minimum RTT; 0 for reno */
	__u32 base_rtt_us;     /* vegas: the lowest RTT seen, the path's propagation delay */
	__u32 cpu;
	__u32 _pad;
};

#endif
