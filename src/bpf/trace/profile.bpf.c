// SPDX-License-Identifier: GPL-2.0
/* profile: a perf_event program on every CPU's cpu-clock; samples are counted in the kernel
 * per process and stack pair (tk_stacks), so nothing streams per sample. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"

#define MAX_KEYS 40960

const volatile __u32 tk_profile_idle = 0; /* count the idle task (pid 0) too */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct tk_stack_key);
	__type(value, __u64);
} counts SEC(".maps");

struct tk_stack_key _tk_stack_key = {};

SEC("perf_event")
int profile__sample(struct bpf_perf_event_data *ctx)
{
	struct tk_stack_key key = {};

	key.pid = bpf_get_current_pid_tgid() >> 32;
	if (key.pid == 0 && !tk_profile_idle)
		return 0;
	if (!tk_filter_allows())
		return 0;
	tk_stack_ids(ctx, &key.kstack, &key.ustack);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	tk_count_in(&counts, &key); /* a full map: the sample is lost, and counted as such */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
