// SPDX-License-Identifier: GPL-2.0
/* count: a tracepoint's events counted in a hash map per comm, process or stack, read by user
 * space at the end or every --interval: bpftrace's `@[comm] = count()` without streaming. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"

#define MAX_KEYS 10240

const volatile __u32 tk_count_by_pid = 0; /* per process (also with stacks, to name user frames) */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct tk_stack_key);
	__type(value, __u64);
} counts SEC(".maps");

struct tk_stack_key _tk_stack_key = {};

SEC("tracepoint")
int count__tp(void *ctx)
{
	struct tk_stack_key key = {};

	if (!tk_filter_allows())
		return 0;
	if (tk_count_by_pid)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	if (tk_want_stack)
		tk_stack_ids(ctx, &key.kstack, &key.ustack);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	tk_count_in(&counts, &key);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
