// SPDX-License-Identifier: GPL-2.0
/* profile: a perf_event program on every CPU's cpu-clock; samples are counted in the kernel
 * per process and stack pair, so nothing streams per sample. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "profile.h"

#define MAX_STACKS 16384
#define MAX_KEYS 40960

const volatile __u32 tk_profile_idle = 0; /* count the idle task (pid 0) too */

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, TK_PROFILE_DEPTH * sizeof(__u64));
	__uint(max_entries, MAX_STACKS);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct tk_profile_key);
	__type(value, __u64);
} counts SEC(".maps");

struct tk_profile_key _tk_profile_key = {};

SEC("perf_event")
int profile__sample(struct bpf_perf_event_data *ctx)
{
	struct tk_profile_key key = {};
	__u64 one = 1, *n;

	key.pid = bpf_get_current_pid_tgid() >> 32;
	if (key.pid == 0 && !tk_profile_idle)
		return 0;
	if (!tk_filter_allows())
		return 0;
	key.kstack = bpf_get_stackid(ctx, &stacks, 0);
	key.ustack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	n = bpf_map_lookup_elem(&counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST))
		tk_count_drop(); /* the map is full: the sample is lost, and counted as such */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
