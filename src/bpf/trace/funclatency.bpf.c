// SPDX-License-Identifier: GPL-2.0
/* funclatency: entry and return of user functions (uprobe/uretprobe), the time between them
 * added to a histogram per function (and per process or comm) in the kernel. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.bpf.h"
#include "hist.bpf.h"
#include "funclatency.h"

/* Threads with calls in flight; LRU: calls that never return (a longjmp past them, a thread
 * that exits inside) cannot fill it up, the oldest are evicted (their return, if it ever
 * comes, is counted as TK_FL_NO_ENTRY). */
#define MAX_THREADS 10240

const volatile struct tk_fl_config tk_fl = {};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, struct tk_fl_key);
	__type(value, struct tk_fl_stack);
} tk_fl_entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_FL_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} tk_fl_counters SEC(".maps");

/* 1 while timing: set by user space once every probe is attached, cleared before any is
 * detached, so that attaching and detaching one probe after the other neither times a call
 * half-seen nor leaves an entry that would never be popped. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tk_fl_on SEC(".maps");

struct tk_fl_stack _tk_fl_stack = {};
struct tk_fl_key _tk_fl_key = {};

static __always_inline int traced(struct pt_regs *ctx, struct tk_fl_key *key)
{
	__u64 id = tk_fl.have_cookie ? bpf_get_attach_cookie(ctx) : 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 zero = 0, *on = bpf_map_lookup_elem(&tk_fl_on, &zero);

	if (!on || !*on)
		return 0;
	if (!tk_filter_allows())
		return 0;
	if (tk_fl.self_tgid && pid_tgid >> 32 == tk_fl.self_tgid)
		return 0;
	key->tid = (__u32)pid_tgid;
	key->idx = id < TK_FL_MAX_PROBES ? id : 0;
	return 1;
}

SEC("uprobe")
int uprobe__funclat(struct pt_regs *ctx)
{
	static const struct tk_fl_stack empty;
	struct tk_fl_key key;
	struct tk_fl_stack *s;
	__u32 d;

	if (!traced(ctx, &key))
		return 0;
	s = bpf_map_lookup_elem(&tk_fl_entries, &key);
	if (!s) {
		bpf_map_update_elem(&tk_fl_entries, &key, &empty, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&tk_fl_entries, &key);
		if (!s)
			return 0;
	}
	d = s->depth;
	s->depth = d + 1;
	if (d >= TK_FL_DEPTH) {
		tk_count_at(&tk_fl_counters, TK_FL_TOO_DEEP);
		return 0;
	}
	/* masked after a barrier, or clang drops the mask and the verifier loses the bound */
	asm volatile("" : "+r"(d));
	s->ts[d & (TK_FL_DEPTH - 1)] = bpf_ktime_get_ns();
	return 0;
}

SEC("uretprobe")
int uretprobe__funclat(struct pt_regs *ctx)
{
	__u64 now = bpf_ktime_get_ns(), lat;
	struct tk_hist_key hkey = {};
	struct tk_fl_key key;
	struct tk_fl_stack *s;
	__u32 d;

	if (!traced(ctx, &key))
		return 0;
	s = bpf_map_lookup_elem(&tk_fl_entries, &key);
	if (!s || s->depth == 0) {
		tk_count_at(&tk_fl_counters, TK_FL_NO_ENTRY);
		return 0;
	}
	d = s->depth - 1;
	s->depth = d;
	if (d >= TK_FL_DEPTH)
		return 0; /* counted at its entry */
	asm volatile("" : "+r"(d)); /* as at the entry */
	lat = now - s->ts[d & (TK_FL_DEPTH - 1)];
	hkey.idx = key.idx;
	if (tk_fl.by_pid)
		hkey.pid = bpf_get_current_pid_tgid() >> 32;
	if (tk_fl.by_pid || tk_fl.by_comm)
		bpf_get_current_comm(hkey.comm, sizeof(hkey.comm));
	tk_hist_add(&hkey, lat / (tk_fl.unit_ns ? tk_fl.unit_ns : 1), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
