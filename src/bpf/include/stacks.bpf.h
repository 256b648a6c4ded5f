/* SPDX-License-Identifier: GPL-2.0 */
/* --stack: kernel and user stacks of task events, recorded by id in one stack map. */
#ifndef TK_STACKS_BPF_H
#define TK_STACKS_BPF_H

/* --stack: record stack ids (user space also creates tk_stacks only then). */
const volatile __u32 tk_want_stack = 0;

/* --stack: kernel and user stacks of events, by id (created only when stacks are asked for). */
#define TK_STACK_DEPTH 127
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, TK_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 4096);
} tk_stacks SEC(".maps");

/* Stack ids of the current event, or -1 without --stack. */
static __always_inline void tk_stack_ids(void *ctx, __s32 *kstack, __s32 *ustack)
{
	if (!tk_want_stack) {
		*kstack = *ustack = -1;
		return;
	}
	*kstack = bpf_get_stackid(ctx, &tk_stacks, 0);
	*ustack = bpf_get_stackid(ctx, &tk_stacks, BPF_F_USER_STACK);
}

#endif
