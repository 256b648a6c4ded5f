/* SPDX-License-Identifier: GPL-2.0 */
/* In-kernel counting (count, profile): one more for a key, a full table counted as a drop. */
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

#endif
