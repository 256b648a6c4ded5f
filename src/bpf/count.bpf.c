// SPDX-License-Identifier: GPL-2.0
/* count: a tracepoint's events counted in a hash map per comm (or per process), read by user
 * space at the end or every --interval: bpftrace's `@[comm] = count()` without streaming. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "count.h"

#define MAX_KEYS 10240

const volatile __u32 tk_count_by_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct tk_count_key);
	__type(value, __u64);
} counts SEC(".maps");

struct tk_count_key _tk_count_key = {};

SEC("tracepoint")
int count__tp(void *ctx)
{
	struct tk_count_key key = {};
	__u64 one = 1, *n;

	if (!tk_filter_allows())
		return 0;
	if (tk_count_by_pid)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	n = bpf_map_lookup_elem(&counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST))
		tk_count_drop(); /* the table is full: counted as lost */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
