/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel histograms (count --hist, funclatency): types shared with the Rust side
 * (src/runtime/hist.rs) through BTF. */
#ifndef TK_HIST_H
#define TK_HIST_H

#include "common.h"

/* Slot 0: values below zero (log2) or below the first step (linear): `(..., 0)`.
 * log2: slot 1 is [0], slot 2 + n is [2^n, 2^(n+1)) for n = 0..63: every __u64 has a slot.
 * linear: slot 1 + i is [i*step, (i+1)*step) for i = 0..63, the last slot [64*step, ...). */
#define TK_HIST_SLOTS 66
#define TK_HIST_MAX_KEYS 4096

#define TK_HIST_LOG2 0
#define TK_HIST_LINEAR 1

/* Whose distribution a value goes into: a function (its probe index), and a process or comm
 * when the tool is asked to split by them (zero / empty otherwise). */
struct tk_hist_key {
	__u32 idx;
	__u32 pid;
	char comm[TK_COMM_LEN];
};

struct tk_hist {
	__u64 slots[TK_HIST_SLOTS];
	__u64 sum;   /* of the values added (negative ones wrap: only sums of counts/latencies mean something) */
	__u64 count;
};

/* Written into rodata before load. */
struct tk_hist_config {
	__u64 step;  /* linear: bucket width (> 0) */
	__u32 kind;  /* TK_HIST_LOG2 or TK_HIST_LINEAR */
	__u32 _pad;
};

#endif
