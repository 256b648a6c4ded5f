/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel counting: one more for a key (count, profile; a full table counted as a drop), or
 * at an index of a per-CPU array (a tool's counters). */
#ifndef TK_COUNTS_BPF_H
#define TK_COUNTS_BPF_H

#include "transport.bpf.h"

/* One more for `key` in a hash map of __u64 counts; a full map counts a drop instead. */
static __always_inline void tk_count_in(void *map, const void *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(map, key);

	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST))
		tk_count_drop();
}

/* `add` more at `index` of a per-CPU array of __u64 counts (a tool's counters, summed by user
 * space): no atomics needed, each CPU has its own slot. */
static __always_inline void tk_count_add(void *map, __u32 index, __u64 add)
{
	__u64 *n = bpf_map_lookup_elem(map, &index);

	if (n)
		*n += add;
}

/* One more at `index` (tk_count_add). */
static __always_inline void tk_count_at(void *map, __u32 index)
{
	tk_count_add(map, index, 1);
}

#endif
