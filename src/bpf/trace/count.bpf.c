// SPDX-License-Identifier: GPL-2.0
/* count: a tracepoint's events counted in a hash map per comm, process or stack, read by user
 * space at the end or every --interval: bpftrace's `@[comm] = count()` without streaming.
 * With --hist FIELD, the distribution of one integer field instead: `@[comm] = hist(args.f)`. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "hist.bpf.h"

#define MAX_KEYS 10240

const volatile __u32 tk_count_by_pid = 0; /* per process (also with stacks, to name user frames) */
/* --hist: the field's place in the record, its size (1, 2, 4, 8 bytes; 0 = off) and sign */
const volatile __u32 tk_count_hist_off = 0;
const volatile __u32 tk_count_hist_size = 0;
const volatile __u32 tk_count_hist_signed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct tk_stack_key);
	__type(value, __u64);
} counts SEC(".maps");

struct tk_stack_key _tk_stack_key = {};

/* The field, sign-extended when signed. The record is read with probe_read at an offset known
 * only at load time (the verifier takes constant offsets into the context). */
static __always_inline int hist_field(void *ctx)
{
	struct tk_hist_key key = {};
	__u64 v = 0;
	__u32 off = tk_count_hist_off;

	if (off > 4096)
		return 0;
	switch (tk_count_hist_size) {
	case 1: {
		__u8 x = 0;
		bpf_probe_read_kernel(&x, 1, ctx + off);
		v = tk_count_hist_signed ? (__u64)(__s64)(__s8)x : x;
		break;
	}
	case 2: {
		__u16 x = 0;
		bpf_probe_read_kernel(&x, 2, ctx + off);
		v = tk_count_hist_signed ? (__u64)(__s64)(__s16)x : x;
		break;
	}
	case 4: {
		__u32 x = 0;
		bpf_probe_read_kernel(&x, 4, ctx + off);
		v = tk_count_hist_signed ? (__u64)(__s64)(__s32)x : x;
		break;
	}
	default:
		bpf_probe_read_kernel(&v, 8, ctx + off);
	}
	if (tk_count_by_pid)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	tk_hist_add(&key, v, tk_count_hist_signed);
	return 0;
}

SEC("tracepoint")
int count__tp(void *ctx)
{
	struct tk_stack_key key = {};

	if (!tk_filter_allows())
		return 0;
	if (tk_count_hist_size)
		return hist_field(ctx);
	if (tk_count_by_pid)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	if (tk_want_stack)
		tk_stack_ids(ctx, &key.kstack, &key.ustack);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	tk_count_in(&counts, &key);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
