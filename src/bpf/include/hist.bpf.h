/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel histograms: a value goes into a log2 or linear slot of the histogram of its key,
 * with its sum and count, in one hash map read by user space (src/runtime/hist.rs).
 *
 * One shared (not per-CPU) value per key, updated with atomic adds: its memory does not grow
 * with the number of CPUs (a per-CPU hash of 544-byte values is 35 KiB per key on 64 CPUs),
 * user space reads it with batch lookups (libbpf-rs refuses those on per-CPU maps), and the
 * adds only contend when many CPUs hit the same key at once. */
#ifndef TK_HIST_BPF_H
#define TK_HIST_BPF_H

#include "counts.bpf.h"
#include "hist.h"

const volatile struct tk_hist_config tk_hist_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_HIST_MAX_KEYS);
	/* allocated as keys appear: most runs have a handful, not 4096 * 544 bytes */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tk_hist_key);
	__type(value, struct tk_hist);
} tk_hists SEC(".maps");

struct tk_hist_key _tk_hist_key = {};
struct tk_hist _tk_hist = {};

/* floor(log2(v)) for v > 0, branch-free halving (BCC's bits.bpf.h). */
static __always_inline __u32 tk_log2_u32(__u32 v)
{
	__u32 r, shift;

	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline __u32 tk_log2_u64(__u64 v)
{
	__u32 hi = v >> 32;

	return hi ? tk_log2_u32(hi) + 32 : tk_log2_u32(v);
}

/* The slot of `v` (see hist.h); `is_signed`: a top bit set means negative. */
static __always_inline __u32 tk_hist_slot(__u64 v, int is_signed)
{
	__u64 i;

	if (is_signed && (__s64)v < 0)
		return 0;
	if (tk_hist_cfg.kind == TK_HIST_LINEAR) {
		i = tk_hist_cfg.step ? v / tk_hist_cfg.step : 0;
		return i > TK_HIST_SLOTS - 2 ? TK_HIST_SLOTS - 1 : i + 1;
	}
	return v ? tk_log2_u64(v) + 2 : 1;
}

/* Adds `v` to the histogram of `key`; a full table counts a drop (as tk_count_in). */
static __always_inline void tk_hist_add(const struct tk_hist_key *key, __u64 v, int is_signed)
{
	static const struct tk_hist zero; /* 544 bytes: more than the BPF stack holds */
	struct tk_hist *h = bpf_map_lookup_elem(&tk_hists, key);
	__u64 slot;

	if (!h) {
		/* EEXIST: another CPU added it first, which is as good */
		bpf_map_update_elem(&tk_hists, key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&tk_hists, key);
		if (!h) {
			tk_count_drop();
			return;
		}
	}
	slot = tk_hist_slot(v, is_signed);
	/* clang can prove slot < TK_HIST_SLOTS and would drop the check; 5.10's verifier cannot
	 * follow the log2 arithmetic and needs it ("unbounded memory access"): the barrier hides
	 * the range from clang, and the 64-bit compare bounds the very register the index uses */
	asm volatile("" : "+r"(slot));
	if (slot >= TK_HIST_SLOTS)
		return;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum, v);
	__sync_fetch_and_add(&h->count, 1);
}

#endif
