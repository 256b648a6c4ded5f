/* SPDX-License-Identifier: GPL-2.0 */
/* Types of the task tools (events that come from a task: pid, comm, stacks), shared with the
 * Rust side through BTF. */
#ifndef TK_COMMON_H
#define TK_COMMON_H

#include "transport.h"

#define TK_COMM_LEN 16
#define TK_MAX_IDS 8

/* The in-kernel filter, written into rodata before load. Zero means "off" everywhere. */
struct tk_filter {
	__u64 cgroup_id;          /* cgroup v2 id (inode) the task must be in or below */
	__u32 pids[TK_MAX_IDS];   /* thread-group ids (user-space "pid") */
	__u32 tids[TK_MAX_IDS];   /* thread ids */
	__u32 npids;
	__u32 ntids;
	__u32 uid;
	__u32 has_uid;            /* uid 0 is a real value: a separate switch */
	__u32 cgroup_level;       /* depth of cgroup_id below the v2 root */
	__u32 follow;             /* only tasks whose tgid is in tk_follow (-- CMD) */
	char comm[TK_COMM_LEN];   /* exact task comm; empty = off */
};

/* Leads every event: who, when, where. */
struct tk_hdr {
	__u64 ts_ns;              /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 pid;                /* tgid */
	__u32 tid;
	__u32 uid;
	__u32 cpu;
	char comm[TK_COMM_LEN];
};

/* Key of in-kernel counts (count, profile): who, and where when stacks are asked for. */
struct tk_stack_key {
	__u32 pid;            /* 0 when counting per comm */
	__s32 kstack;         /* id in tk_stacks, or a negative errno (none); 0 when not asked */
	__s32 ustack;
	char comm[TK_COMM_LEN];
};

#endif
