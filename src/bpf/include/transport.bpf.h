/* SPDX-License-Identifier: GPL-2.0 */
/* The event transport every tool shares, task or packet: ring buffer or perf buffer (chosen in
 * user space before load), batched wakeups, exact drop counting, per-CPU scratch slots.
 * It uses no task state, so packet programs (softirq context) include it as it is. */
#ifndef TK_TRANSPORT_BPF_H
#define TK_TRANSPORT_BPF_H

#include "transport.h"

#ifndef TK_EVENT_MAX
#define TK_EVENT_MAX 1024         /* largest event of the tool: size of the perf scratch slot */
#endif

const volatile struct tk_transport tk_transport = {};

/* Ring buffer by default; user space switches the type to a perf event array before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tk_events SEC(".maps");

/* Last forced ring-buffer wakeup; racy updates across CPUs only cost an extra wakeup. */
__u64 tk_last_wakeup_ns = 0;

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

static __always_inline void tk_count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&tk_drops, &zero);

	if (n)
		*n += 1;
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
 * "Now" is the event's own time (every event, task or packet, leads with its u64 time): a
 * second clock read per event showed in profiles of the traced workload. */
static __always_inline __u64 tk_wakeup_flags(const void *e, __u64 size)
{
	__u64 now = *(const __u64 *)e;

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

#endif
