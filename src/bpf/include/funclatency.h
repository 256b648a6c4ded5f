/* SPDX-License-Identifier: GPL-2.0 */
/* funclatency: time from a function's entry to its return, into in-kernel histograms. */
#ifndef TK_FUNCLATENCY_H
#define TK_FUNCLATENCY_H

#include "hist.h"

#define TK_FL_MAX_PROBES 64
/* Nested entries timed per thread and function (recursion); deeper ones are counted, not timed. */
#define TK_FL_DEPTH 16        /* a power of two: indexes are masked with it */

struct tk_fl_config {
	__u64 unit_ns;        /* latencies are divided by this before slotting: 1, 1000, 1000000 */
	__u32 have_cookie;    /* bpf_get_attach_cookie() tells the function apart (5.15+) */
	__u32 self_tgid;      /* tracekit itself: never timed (0 = off) */
	__u32 by_pid;         /* histogram key: pid and comm */
	__u32 by_comm;        /* histogram key: comm */
};

/* Counters (a per-CPU array) of calls that could not be timed. */
#define TK_FL_NO_ENTRY 0      /* a return without its entry: entered before tracing, or evicted */
#define TK_FL_TOO_DEEP 1      /* nested deeper than TK_FL_DEPTH */
#define TK_FL_COUNTERS 2

/* The entry times of one thread's pending calls of one function, innermost last. */
struct tk_fl_stack {
	__u64 ts[TK_FL_DEPTH];
	__u32 depth;          /* calls entered and not returned (may exceed TK_FL_DEPTH) */
	__u32 _pad;
};

struct tk_fl_key {
	__u32 tid;
	__u32 idx;
};

#endif
