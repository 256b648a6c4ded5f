/* SPDX-License-Identifier: GPL-2.0 */
/* The shared BPF runtime: filter, event transport (ring buffer or perf buffer), drop counting
 * and following the children of `-- CMD`. Every tool includes this once. */
#ifndef TK_COMMON_BPF_H
#define TK_COMMON_BPF_H

#include "common.h"

#ifndef TK_EVENT_MAX
#define TK_EVENT_MAX 1024         /* largest event of the tool: size of the perf scratch slot */
#endif
#define TK_FOLLOW_MAX 16384

const volatile struct tk_filter tk_filter = {};
const volatile struct tk_transport tk_transport = {};

/* Keeps the header type in every tool's BTF (and so in its generated Rust types). */
struct tk_hdr _tk_hdr = {};

/* Last forced ring-buffer wakeup; racy updates across CPUs only cost an extra wakeup. */
__u64 tk_last_wakeup_ns = 0;

/* Ring buffer by default; user space switches the type to a perf event array before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tk_events SEC(".maps");

/* --stack: kernel and user stacks of events, by id (created only when stacks are asked for). */
#define TK_STACK_DEPTH 127
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, TK_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 4096);
} tk_stacks SEC(".maps");

/* Events that could not be delivered (ring buffer full, perf output failed), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tk_drops SEC(".maps");

/* Events too large for the BPF stack, or built before perf output copies them, are built in a
 * per-CPU scratch slot. A program can be interrupted by another on the same CPU (a softirq
 * during a syscall, a preempted uprobe), so each CPU has TK_SCRATCH_NEST slots used as a
 * stack: sharing one slot would let the inner event overwrite the outer one. */
#define TK_SCRATCH_NEST 4
struct tk_scratch {
	__u8 data[TK_EVENT_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_SCRATCH_NEST);
	__type(key, __u32);
	__type(value, struct tk_scratch);
} tk_heap SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tk_heap_depth SEC(".maps");

/* Thread groups of `-- CMD` and their descendants: TK_FOLLOW_ARMED until CMD is exec'ed (the
 * held start is tracekit itself, which must not be traced), then TK_FOLLOW_ON. */
#define TK_FOLLOW_ON 1
#define TK_FOLLOW_ARMED 2
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_FOLLOW_MAX);
	__type(key, __u32);
	__type(value, __u8);
} tk_follow SEC(".maps");

static __always_inline void tk_count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&tk_drops, &zero);

	if (n)
		*n += 1;
}

static __always_inline int tk_ids_contain(const volatile __u32 *ids, __u32 n, __u32 id)
{
	for (int i = 0; i < TK_MAX_IDS; i++)
		if (i < n && ids[i] == id)
			return 1;
	return 0;
}

/* The one filter every tool applies first, before any other work. */
static __always_inline int tk_filter_allows(void)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;

	if (tk_filter.npids && !tk_ids_contain(tk_filter.pids, tk_filter.npids, tgid))
		return 0;
	if (tk_filter.ntids && !tk_ids_contain(tk_filter.tids, tk_filter.ntids, tid))
		return 0;
	if (tk_filter.has_uid && (__u32)bpf_get_current_uid_gid() != tk_filter.uid)
		return 0;
	if (tk_filter.follow) {
		__u8 *state = bpf_map_lookup_elem(&tk_follow, &tgid);

		if (!state || *state != TK_FOLLOW_ON)
			return 0;
	}
	if (tk_filter.comm[0]) {
		char comm[TK_COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < TK_COMM_LEN; i++) {
			if (comm[i] != tk_filter.comm[i])
				return 0;
			if (!comm[i])
				break;
		}
	}
	if (tk_filter.cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(tk_filter.cgroup_level) != tk_filter.cgroup_id)
		return 0;
	return 1;
}

/* Stack ids of the current event, or -1 without --stack. */
static __always_inline void tk_stack_ids(void *ctx, __s32 *kstack, __s32 *ustack)
{
	if (!tk_transport.want_stack) {
		*kstack = *ustack = -1;
		return;
	}
	*kstack = bpf_get_stackid(ctx, &tk_stacks, 0);
	*ustack = bpf_get_stackid(ctx, &tk_stacks, BPF_F_USER_STACK);
}

static __always_inline void tk_fill_hdr(struct tk_hdr *h)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	h->ts_ns = bpf_ktime_get_ns();
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->cpu = bpf_get_smp_processor_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* One more for `key` in a hash map of __u64 counts; a full map counts a drop instead. */
static __always_inline void tk_count_in(void *map, const void *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(map, key);

	if (n)
		__sync_fetch_and_add(n, 1);
	else if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST))
		tk_count_drop();
}

/* A scratch slot of TK_EVENT_MAX bytes, or NULL (counted as a drop when nested too deep).
 * Every non-NULL result is given back with tk_scratch_put(). */
static __always_inline void *tk_scratch_get(void)
{
	__u32 zero = 0, *depth = bpf_map_lookup_elem(&tk_heap_depth, &zero);
	__u32 d;
	void *slot;

	if (!depth)
		return NULL;
	d = *depth;
	if (d >= TK_SCRATCH_NEST) {
		tk_count_drop();
		return NULL;
	}
	slot = bpf_map_lookup_elem(&tk_heap, &d);
	if (slot)
		*depth = d + 1;
	return slot;
}

static __always_inline void tk_scratch_put(void)
{
	__u32 zero = 0, *depth = bpf_map_lookup_elem(&tk_heap_depth, &zero);

	if (depth && *depth > 0)
		*depth -= 1;
}

/* Space for one event, or NULL (counted as a drop). Pair with tk_submit() or tk_discard(). */
static __always_inline void *tk_reserve(__u32 size)
{
	void *e;

	if (tk_transport.use_perfbuf)
		return tk_scratch_get();
	e = bpf_ringbuf_reserve(&tk_events, size, 0);
	if (!e)
		tk_count_drop();
	return e;
}

static __always_inline void tk_discard(void *e)
{
	if (tk_transport.use_perfbuf)
		tk_scratch_put();
	else
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
}

/* Wake the reader only when enough is pending or the last wakeup is old: sparse events are
 * delivered at once, bursts are batched (one wakeup per event is what makes tracers slow).
 * "Now" is the event's own time (every event leads with a tk_hdr): a second clock read per
 * event showed in profiles of the traced workload. */
static __always_inline __u64 tk_wakeup_flags(const void *e, __u64 size)
{
	__u64 now = ((const struct tk_hdr *)e)->ts_ns;

	if (bpf_ringbuf_query(&tk_events, BPF_RB_AVAIL_DATA) + size >= tk_transport.wakeup_bytes ||
	    /* signed: another CPU may have woken the reader after this event's time */
	    (__s64)(now - tk_last_wakeup_ns) >= (__s64)tk_transport.wakeup_ns) {
		tk_last_wakeup_ns = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void tk_perf_output(void *ctx, void *e, __u64 size)
{
	if (size > TK_EVENT_MAX)
		size = TK_EVENT_MAX;
	if (bpf_perf_event_output(ctx, &tk_events, BPF_F_CURRENT_CPU, e, size) < 0)
		tk_count_drop();
}

/* Hands over an event built in place by tk_reserve(). */
static __always_inline void tk_submit(void *ctx, void *e, __u32 size)
{
	if (tk_transport.use_perfbuf) {
		tk_perf_output(ctx, e, size);
		tk_scratch_put();
	} else {
		bpf_ringbuf_submit(e, tk_wakeup_flags(e, size));
	}
}

/* The bytes of an event ending in fixed string slots that are worth sending: up to the end of
 * the last string read. Most events carry one short string or none, and copying the whole
 * event (~1 KiB) per event is what made the traced workload measurably slower. */
static __always_inline __u64 tk_used_size(__u64 head, const __s16 *str_len, const int nslots,
					  const __u64 slot_len)
{
	__u64 end = 0;

	for (int s = 0; s < nslots; s++)
		if (str_len[s] > 0 && str_len[s] <= slot_len)
			end = s * slot_len + str_len[s];
	/* a bound the verifier can see (the compiler folds the one above into arithmetic); 64-bit
	 * all the way, since a bound checked on a zero-extended copy does not carry over */
	asm volatile("" : "+r"(end));
	if (end > nslots * slot_len)
		end = nslots * slot_len;
	return head + end;
}

/* Hands over a copy of an event built elsewhere (a map value too large for the stack). */
static __always_inline void tk_output(void *ctx, void *e, __u64 size)
{
	if (tk_transport.use_perfbuf) {
		tk_perf_output(ctx, e, size);
		return;
	}
	if (bpf_ringbuf_output(&tk_events, e, size, tk_wakeup_flags(e, size)) < 0)
		tk_count_drop();
}

/* -- CMD: a child of a followed thread group is followed too (attached only in that mode). */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(tk_follow_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	__u8 *state;

	if (ptgid == ctgid)
		return 0;
	state = bpf_map_lookup_elem(&tk_follow, &ptgid);
	if (state)
		bpf_map_update_elem(&tk_follow, &ctgid, state, BPF_ANY);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(tk_follow_exec)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 *state = bpf_map_lookup_elem(&tk_follow, &tgid);

	if (state && *state == TK_FOLLOW_ARMED)
		*state = TK_FOLLOW_ON;
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(tk_follow_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 pid = BPF_CORE_READ(task, pid);

	/* the leader exits last... usually; keep the entry until then so late events still pass */
	if (pid == tgid)
		bpf_map_delete_elem(&tk_follow, &tgid);
	return 0;
}

#endif
