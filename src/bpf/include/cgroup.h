/* SPDX-License-Identifier: GPL-2.0 */
/* Types of `tracekit cgroup` (the cgroup hooks), shared with the Rust side through BTF. */
#ifndef TK_CGROUP_H
#define TK_CGROUP_H

#include "transport.h"

#define TK_CG_COMM_LEN 16
/* Most rules (--deny and --rewrite together) one run takes: each hook walks them in order. */
#define TK_CG_MAX_RULES 256

/* One value per program of cgroup.bpf.c. */
enum tk_cg_hook {
	TK_CG_INGRESS = 0,
	TK_CG_EGRESS = 1,
	TK_CG_SOCK_CREATE = 2,
	TK_CG_SOCK_RELEASE = 3,
	TK_CG_BIND4 = 4,
	TK_CG_BIND6 = 5,
	TK_CG_POST_BIND4 = 6,
	TK_CG_POST_BIND6 = 7,
	TK_CG_CONNECT4 = 8,
	TK_CG_CONNECT6 = 9,
	TK_CG_SENDMSG4 = 10,
	TK_CG_SENDMSG6 = 11,
	TK_CG_RECVMSG4 = 12,
	TK_CG_RECVMSG6 = 13,
	TK_CG_DEV = 14,
	TK_CG_NHOOKS = 15,
};

/* What a rule decides, and at which hooks it is looked at. */
enum tk_cg_rule_kind {
	TK_RULE_CONNECT = 0,    /* connect4/6: the address the process connects to */
	TK_RULE_SENDMSG = 1,    /* sendmsg4/6: the destination of an unconnected UDP send */
	TK_RULE_BIND = 2,       /* post_bind4/6: the address and port actually bound */
	TK_RULE_EGRESS = 3,     /* cgroup_skb egress: the packet's destination */
	TK_RULE_INGRESS = 4,    /* cgroup_skb ingress: the packet's source */
	TK_RULE_SOCK = 5,       /* sock_create: family, type, protocol */
	TK_RULE_DEV = 6,        /* dev: type, major, minor, access */
	TK_RULE_REWRITE_CONNECT = 7,  /* connect4/6: address → to_addr */
	TK_RULE_REWRITE_SENDMSG = 8,  /* sendmsg4/6: address → to_addr; recvmsg4/6: the reverse */
};

/* A rule, written into rodata before load. Addresses are in network order, masked to the
 * prefix; ports in host order. */
struct tk_cg_rule {
	__u32 addr[4];          /* IPv4 in addr[0] */
	__u32 mask[4];
	__u32 to_addr[4];       /* rewrites: the new address */
	__u32 dev_major;        /* dev: the major, or ~0 for any */
	__u32 dev_minor;        /* dev: the minor, or ~0 for any */
	__u16 port_lo;          /* ports port_lo..=port_hi (0..=65535 for any) */
	__u16 port_hi;
	__u16 to_port;          /* rewrites: the new port, 0 to keep it */
	__u8 kind;              /* enum tk_cg_rule_kind */
	__u8 family;            /* 4, 6, or 0 for both (an address of `*`) */
	__u8 sock_family;       /* sock: AF_INET/AF_INET6, 0 any */
	__u8 sock_type;         /* sock: SOCK_STREAM/DGRAM/RAW, 0 any */
	__u8 sock_proto;        /* sock: IPPROTO_*, 0 any */
	__u8 dev_type;          /* dev: BPF_DEVCG_DEV_BLOCK/CHAR, 0 any */
	__u8 dev_access;        /* dev: BPF_DEVCG_ACC_* bits the rule denies */
	__u8 _pad[3];
};

/* How a program of this kernel learns the task it runs for (probed per program type). */
enum tk_cg_task_mode {
	TK_TASK_NONE = 0,       /* no task helper for this program type: pid 0 */
	TK_TASK_HELPERS = 1,    /* bpf_get_current_pid_tgid and bpf_get_current_comm */
	TK_TASK_CURRENT = 2,    /* bpf_get_current_task, then the fields by CO-RE (older kernels) */
};

#define TK_RULE_KINDS 9

/* A prefilter per rule kind, so that a call no rule of a kind can fit costs no walk of its
 * rules: a bit per 64 ports any of them covers, and a bit per first address byte (per family)
 * any of them covers. Set in user space from the rules; conservative (a set bit only means
 * "walk"). */
#define TK_CG_PORT_BUCKET_SHIFT 6
struct tk_cg_prefilter {
	__u8 ports[65536 >> TK_CG_PORT_BUCKET_SHIFT >> 3];
	__u8 first_byte[2][256 >> 3];   /* [0] IPv4, [1] IPv6 */
};

struct tk_cg_config {
	__u32 observe;          /* bit per enum tk_cg_hook: send an event for each call */
	/* The rules are sorted by kind (stably: each kind's in the order given); kind k's are
	 * kind_start[k] .. kind_start[k + 1], so a hook walks only the rules it can use. */
	__u16 kind_start[TK_RULE_KINDS + 1];
	__u8 task_sock_addr;    /* enum tk_cg_task_mode of cgroup_sock_addr programs */
	__u8 task_sock;         /* ... of cgroup_sock programs */
	__u8 task_dev;          /* ... of cgroup_device programs */
	__u8 _pad[5];
};

/* Per hook, per CPU (map tk_cg_counts). */
struct tk_cg_counts {
	__u64 calls;
	__u64 denied;
	__u64 rewritten;
};

enum tk_cg_verdict {
	TK_CG_ALLOW = 0,
	TK_CG_DENY = 1,
	TK_CG_REWRITE = 2,
};

/* One call of a hook. */
struct tk_cg_event {
	__u64 ts_ns;            /* first, as every event: the transport reads it */
	__u32 pid;              /* tgid, 0 outside process context (skb) or when unknown */
	__u32 cpu;
	char comm[TK_CG_COMM_LEN];
	__u32 laddr[4];         /* local address (network order); IPv4 in [0] */
	__u32 raddr[4];         /* remote address as the process gave it (before a rewrite) */
	__u32 naddr[4];         /* remote address after a rewrite (verdict TK_CG_REWRITE) */
	__u32 len;              /* skb: bytes */
	__u32 dev_major;
	__u32 dev_minor;
	__s32 rule;             /* index of the rule that decided, -1 for none */
	__u16 lport;            /* host order */
	__u16 rport;
	__u16 nport;
	__u16 sock_type;        /* SOCK_STREAM, SOCK_DGRAM, SOCK_RAW */
	__u8 hook;              /* enum tk_cg_hook */
	__u8 verdict;           /* enum tk_cg_verdict */
	__u8 family;            /* 4 or 6 (0: not an inet call, e.g. dev) */
	__u8 proto;             /* IPPROTO_* */
	__u8 dev_type;          /* BPF_DEVCG_DEV_* */
	__u8 dev_access;        /* BPF_DEVCG_ACC_* bits */
	__u8 _pad[6];
};

#endif
