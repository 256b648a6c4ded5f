// SPDX-License-Identifier: GPL-2.0
/* kprobe: generic kernel function entry/return (fentry/fexit or kprobe/kretprobe) and raw
 * tracepoints (tp_btf, raw_tp), one program per traced target and kind, each executing the
 * decode plan of its slot from rodata. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#define TK_EVENT_MAX 1024
#include "common.bpf.h"
#include "kprobe.h"

#define MAX_INFLIGHT 8192

const volatile struct tk_kprobe_config tk_kprobe = {};

struct inflight_key {
	__u32 tid;
	__u32 slot;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_INFLIGHT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct inflight_key);
	__type(value, struct tk_kprobe_event);
} inflight SEC(".maps");

struct tk_kprobe_event _tk_kprobe_event = {};

_Static_assert(sizeof(struct tk_kprobe_event) <= TK_EVENT_MAX, "built in a tk_scratch slot");

static __always_inline void read_str(struct tk_kprobe_event *e, __u32 slot, __u64 ptr)
{
	void *dst;

	if (slot >= TK_KP_STRS)
		return;
	dst = &e->str[slot * TK_KP_STR_LEN];
	/* user pointers are the lower half of the address space (x86-64, arm64) */
	if ((__s64)ptr < 0)
		e->str_len[slot] = bpf_probe_read_kernel_str(dst, TK_KP_STR_LEN, (void *)ptr);
	else
		e->str_len[slot] = bpf_probe_read_user_str(dst, TK_KP_STR_LEN, (void *)ptr);
}

static __always_inline __u64 event_size(struct tk_kprobe_event *e)
{
	return tk_used_size(offsetof(struct tk_kprobe_event, str), e->str_len, TK_KP_STRS, TK_KP_STR_LEN);
}

static __always_inline int on_entry(void *ctx, const int slot, __u64 *args)
{
	const volatile struct tk_kfunc *fn = &tk_kprobe.funcs[slot];
	struct tk_kprobe_event *e;
	struct inflight_key key;

	if (!tk_filter_allows())
		return 0;
	e = tk_scratch_get();
	if (!e)
		return 0;
	tk_fill_hdr(&e->hdr);
	e->slot = slot;
	e->flags = TK_KP_F_ENTRY;
	tk_stack_ids(ctx, &e->kstack, &e->ustack);
	e->ret = 0;
	e->latency_ns = 0;
	e->str_len[0] = e->str_len[1] = 0;
	for (int i = 0; i < TK_KP_FETCHES; i++) {
		const volatile struct tk_kfetch *f = &fn->fetch[i];
		__u64 v;

		if (i >= fn->nfetch)
			break;
		v = args[f->arg & 7];
		for (int d = 0; d < TK_KP_DEREFS; d++) {
			if (d >= f->nderef)
				break;
			if (bpf_probe_read_kernel(&v, sizeof(v), (void *)(v + f->off[d])) < 0) {
				v = 0;
				break;
			}
		}
		v += f->tail;
		e->vals[i] = v;
		if (f->str_slot)
			read_str(e, f->str_slot - 1, v);
	}
	if (!tk_kprobe.want_return) {
		tk_output(ctx, e, event_size(e));
	} else {
		key.tid = e->hdr.tid;
		key.slot = slot;
		bpf_map_update_elem(&inflight, &key, e, BPF_ANY);
	}
	tk_scratch_put();
	return 0;
}

static __always_inline int on_return(void *ctx, const int slot, __u64 ret)
{
	struct tk_kprobe_event *e;
	struct inflight_key key;
	__u64 now = bpf_ktime_get_ns();

	if (!tk_filter_allows())
		return 0;
	key.tid = (__u32)bpf_get_current_pid_tgid();
	key.slot = slot;
	e = bpf_map_lookup_elem(&inflight, &key);
	if (!e)
		return 0; /* entered before tracing started */
	e->latency_ns = now - e->hdr.ts_ns;
	e->hdr.ts_ns = now;
	e->ret = ret;
	e->flags |= TK_KP_F_RETURN;
	tk_output(ctx, e, event_size(e));
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

/* fentry/fexit see the arguments as an array of u64; reads past the function's parameter count
 * are refused by the verifier, so each is guarded by the slot's (constant) count. */
static __always_inline void tracing_args(unsigned long long *ctx, const int slot, __u64 *args)
{
	__u32 n = tk_kprobe.funcs[slot].nargs;

	args[0] = n > 0 ? ctx[0] : 0;
	args[1] = n > 1 ? ctx[1] : 0;
	args[2] = n > 2 ? ctx[2] : 0;
	args[3] = n > 3 ? ctx[3] : 0;
	args[4] = n > 4 ? ctx[4] : 0;
	args[5] = n > 5 ? ctx[5] : 0;
}

/* fexit: the return value follows the arguments. The verifier refuses a ctx load at an offset
 * that is not known at compile time, so copy it with a helper. */
static __always_inline __u64 tracing_ret(unsigned long long *ctx, const int slot)
{
	__u32 n = tk_kprobe.funcs[slot].nargs;
	__u64 ret = 0;

	bpf_probe_read_kernel(&ret, sizeof(ret), &ctx[n & 15]);
	return ret;
}

static __always_inline void regs_args(struct pt_regs *ctx, __u64 *args)
{
	args[0] = PT_REGS_PARM1(ctx);
	args[1] = PT_REGS_PARM2(ctx);
	args[2] = PT_REGS_PARM3(ctx);
	args[3] = PT_REGS_PARM4(ctx);
	args[4] = PT_REGS_PARM5(ctx);
	args[5] = PT_REGS_PARM6(ctx);
}

#define TK_KP_SLOT(n)                                                        \
SEC("fentry")                                                                \
int tk_fentry_##n(unsigned long long *ctx)                                   \
{                                                                            \
	__u64 args[6];                                                       \
	tracing_args(ctx, n, args);                                          \
	return on_entry(ctx, n, args);                                       \
}                                                                            \
SEC("fexit")                                                                 \
int tk_fexit_##n(unsigned long long *ctx)                                    \
{                                                                            \
	return on_return(ctx, n, tracing_ret(ctx, n));                       \
}                                                                            \
SEC("kprobe")                                                                \
int tk_kprobe_##n(struct pt_regs *ctx)                                       \
{                                                                            \
	__u64 args[6];                                                       \
	regs_args(ctx, args);                                                \
	return on_entry(ctx, n, args);                                       \
}                                                                            \
SEC("kretprobe")                                                             \
int tk_kretprobe_##n(struct pt_regs *ctx)                                    \
{                                                                            \
	return on_return(ctx, n, PT_REGS_RC(ctx));                           \
}                                                                            \
SEC("tp_btf")                                                                \
int tk_tp_btf_##n(unsigned long long *ctx)                                   \
{                                                                            \
	__u64 args[6];                                                       \
	tracing_args(ctx, n, args);                                          \
	return on_entry(ctx, n, args);                                       \
}                                                                            \
SEC("raw_tp")                                                                \
int tk_raw_tp_##n(struct bpf_raw_tracepoint_args *ctx)                       \
{                                                                            \
	__u64 args[6];                                                       \
	/* the arguments are an array of u64 at the start, as for fentry */  \
	tracing_args((unsigned long long *)ctx->args, n, args);              \
	return on_entry(ctx, n, args);                                       \
}

TK_KP_SLOT(0)
TK_KP_SLOT(1)
TK_KP_SLOT(2)
TK_KP_SLOT(3)
TK_KP_SLOT(4)
TK_KP_SLOT(5)
TK_KP_SLOT(6)
TK_KP_SLOT(7)
TK_KP_SLOT(8)
TK_KP_SLOT(9)
TK_KP_SLOT(10)
TK_KP_SLOT(11)
TK_KP_SLOT(12)
TK_KP_SLOT(13)
TK_KP_SLOT(14)
TK_KP_SLOT(15)

char LICENSE[] SEC("license") = "GPL";
