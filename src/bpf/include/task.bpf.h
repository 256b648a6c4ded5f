/* SPDX-License-Identifier: GPL-2.0 */
/* Task state for tools whose events come from a task: the pid/uid/comm/cgroup filter, the
 * task header, and following the children of `-- CMD`. Packet programs do not include it. */
#ifndef TK_TASK_BPF_H
#define TK_TASK_BPF_H

#include "common.h"
#include "transport.bpf.h"

#define TK_FOLLOW_MAX 16384

const volatile struct tk_filter tk_filter = {};

/* Keeps the header type in every tool's BTF (and so in its generated Rust types). */
struct tk_hdr _tk_hdr = {};

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
