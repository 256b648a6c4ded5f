// SPDX-License-Identifier: GPL-2.0
/* uprobe: generic user-space function entry/return, configured per probe through rodata. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#define TK_EVENT_MAX 1024
#include "common.bpf.h"
#include "uprobe.h"

#define MAX_INFLIGHT 8192

const volatile struct tk_uprobe_config tk_uprobe = {};

struct inflight_key {
	__u32 tid;
	__u32 probe_id;
};

/* Calls whose return is pending, per thread and probe (recursion keeps the innermost). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_INFLIGHT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct inflight_key);
	__type(value, struct tk_uprobe_event);
} inflight SEC(".maps");

struct tk_uprobe_event _tk_uprobe_event = {};

_Static_assert(sizeof(struct tk_uprobe_event) <= TK_EVENT_MAX, "built in a tk_scratch slot");

static __always_inline __u32 probe_id(struct pt_regs *ctx)
{
	__u64 id = tk_uprobe.have_cookie ? bpf_get_attach_cookie(ctx) : 0;

	return id < TK_UPROBE_MAX_PROBES ? id : 0;
}

/* A fresh event: header, probe, nothing read yet. */
static __always_inline void start_event(struct tk_uprobe_event *e, __u32 id, __u32 flags)
{
	tk_fill_hdr(&e->hdr);
	e->probe_id = id;
	e->flags = flags;
	e->ret = 0;
	e->latency_ns = 0;
	e->str_len[0] = e->str_len[1] = e->str_len[2] = 0;
}

static __always_inline void read_str(struct tk_uprobe_event *e, __u32 slot, __u64 ptr)
{
	if (slot >= TK_UPROBE_STRS)
		return;
	e->str_len[slot] = bpf_probe_read_user_str(&e->str[slot * TK_UPROBE_STR_LEN], TK_UPROBE_STR_LEN,
						   (void *)ptr);
}

static __always_inline __u64 event_size(struct tk_uprobe_event *e)
{
	return tk_used_size(offsetof(struct tk_uprobe_event, str), e->str_len, TK_UPROBE_STRS,
			    TK_UPROBE_STR_LEN);
}

/* Both ends start alike: the filter, a scratch slot (NULL: nothing to do), the probe. */
static __always_inline struct tk_uprobe_event *begin(struct pt_regs *ctx, __u32 *id)
{
	struct tk_uprobe_event *e;

	if (!tk_filter_allows())
		return NULL;
	/* tracekit calls what it traces (memcpy, strlen): each event it prints would make more. */
	if (tk_uprobe.self_tgid && bpf_get_current_pid_tgid() >> 32 == tk_uprobe.self_tgid)
		return NULL;
	e = tk_scratch_get();
	if (e)
		*id = probe_id(ctx);
	return e;
}

SEC("uprobe")
int uprobe__generic(struct pt_regs *ctx)
{
	struct inflight_key key;
	struct tk_uprobe_event *e;
	__u32 id = 0, slot = 0;

	e = begin(ctx, &id);
	if (!e)
		return 0;
	start_event(e, id, TK_UPROBE_F_ENTRY);
	tk_stack_ids(ctx, &e->kstack, &e->ustack);
	e->args[0] = PT_REGS_PARM1(ctx);
	e->args[1] = PT_REGS_PARM2(ctx);
	e->args[2] = PT_REGS_PARM3(ctx);
	e->args[3] = PT_REGS_PARM4(ctx);
	e->args[4] = PT_REGS_PARM5(ctx);
	e->args[5] = PT_REGS_PARM6(ctx);
	for (int i = 0; i < TK_UPROBE_ARGS; i++) {
		if (tk_uprobe.probes[id].str_arg[i]) {
			read_str(e, slot, e->args[i]);
			slot++;
		}
	}
	if (!tk_uprobe.want_return) {
		tk_output(ctx, e, event_size(e));
	} else {
		key.tid = e->hdr.tid;
		key.probe_id = id;
		bpf_map_update_elem(&inflight, &key, e, BPF_ANY);
	}
	tk_scratch_put();
	return 0;
}

SEC("uretprobe")
int uretprobe__generic(struct pt_regs *ctx)
{
	struct inflight_key key;
	struct tk_uprobe_event *e, *entry;
	__u32 id = 0, slot = 0;
	__u64 now;

	e = begin(ctx, &id);
	if (!e)
		return 0;
	key.tid = (__u32)bpf_get_current_pid_tgid();
	key.probe_id = id;
	now = bpf_ktime_get_ns();
	if (tk_uprobe.want_entry) {
		entry = bpf_map_lookup_elem(&inflight, &key);
		if (!entry) {
			tk_scratch_put();
			return 0; /* entered before tracing started */
		}
		__builtin_memcpy(e, entry, sizeof(*e));
		bpf_map_delete_elem(&inflight, &key);
		e->latency_ns = now - e->hdr.ts_ns;
		e->hdr.ts_ns = now;
		e->flags |= TK_UPROBE_F_RETURN;
	} else {
		start_event(e, id, TK_UPROBE_F_RETURN);
		tk_stack_ids(ctx, &e->kstack, &e->ustack);
		for (int i = 0; i < TK_UPROBE_ARGS; i++)
			e->args[i] = 0;
	}
	e->ret = PT_REGS_RC(ctx);
	if (tk_uprobe.probes[id].str_ret) {
		/* the same slot in every mode: after the string arguments' */
		for (int i = 0; i < TK_UPROBE_ARGS; i++)
			if (tk_uprobe.probes[id].str_arg[i])
				slot++;
		read_str(e, slot, e->ret);
	}
	tk_output(ctx, e, event_size(e));
	tk_scratch_put();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
