// SPDX-License-Identifier: GPL-2.0
/* `tracekit cgroup`: one program per cgroup hook, attached through cgroup links to one cgroup v2
 * directory. Each call is counted per hook; the rules (--deny, --rewrite, in rodata) are walked
 * in order and the first that fits decides; an event goes out only for the hooks the user
 * observes. A tool loads only the programs its hooks and rules need.
 *
 * Verdicts are the kernel's: 1 lets the call go on, 0 fails it with EPERM (the packet is dropped
 * for cgroup_skb; recvmsg hooks must return 1). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#define TK_EVENT_MAX 256
#include "transport.bpf.h"
#include "cgroup.h"

#define TK_ETH_P_IP 0x0800
#define TK_ETH_P_IPV6 0x86DD
#define TK_AF_INET 2
#define TK_AF_INET6 10
#define TK_IP_MF 0x2000
#define TK_IP_OFFSET 0x1FFF
#define TK_IPPROTO_HOPOPTS 0
#define TK_IPPROTO_ROUTING 43
#define TK_IPPROTO_FRAGMENT 44
#define TK_IPPROTO_DSTOPTS 60
#define TK_IPV6_EXT_MAX 4

const volatile struct tk_cg_config tk_cg_config = {};
const volatile struct tk_cg_rule tk_cg_rules[TK_CG_MAX_RULES] = {};
const volatile struct tk_cg_prefilter tk_cg_prefilter[TK_RULE_KINDS] = {};

/* keeps the event type in BTF for the generated Rust types */
struct tk_cg_event _tk_cg_event = {};
struct tk_cg_counts _tk_cg_counts = {};
enum tk_cg_task_mode _tk_cg_task_mode = TK_TASK_NONE;

/* Calls, denials and rewrites per hook, per CPU: counted with or without events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_CG_NHOOKS);
	__type(key, __u32);
	__type(value, struct tk_cg_counts);
} tk_cg_counts SEC(".maps");

/* Calls each rule decided, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_CG_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} tk_cg_rule_hits SEC(".maps");

static __always_inline void tk_cg_count(__u8 hook, __u8 verdict, __s32 rule)
{
	__u32 key = hook;
	struct tk_cg_counts *c = bpf_map_lookup_elem(&tk_cg_counts, &key);
	__u64 *hits;

	/* atomic: cgroup programs run with migration off, not preemption, so two tasks can be
	 * in one CPU's slot at once */
	if (c) {
		__sync_fetch_and_add(&c->calls, 1);
		if (verdict == TK_CG_DENY)
			__sync_fetch_and_add(&c->denied, 1);
		else if (verdict == TK_CG_REWRITE)
			__sync_fetch_and_add(&c->rewritten, 1);
	}
	if (rule >= 0) {
		key = rule;
		hits = bpf_map_lookup_elem(&tk_cg_rule_hits, &key);
		if (hits)
			__sync_fetch_and_add(hits, 1);
	}
}

static __always_inline bool tk_cg_observed(__u8 hook)
{
	return tk_cg_config.observe & (1U << hook);
}

/* The task the hook runs for. `mode` is a rodata constant probed per program type, so the
 * verifier never sees a helper this kernel does not offer to the program. */
static __always_inline void tk_cg_task(struct tk_cg_event *e, const __u8 mode)
{
	struct task_struct *t;

	if (mode == TK_TASK_HELPERS) {
		e->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	} else if (mode == TK_TASK_CURRENT) {
		t = (struct task_struct *)bpf_get_current_task();
		e->pid = BPF_CORE_READ(t, tgid);
		bpf_core_read(e->comm, sizeof(e->comm), &t->comm);
	}
}

/* A zeroed event for `hook`, or NULL (counted as a drop). */
static __always_inline struct tk_cg_event *tk_cg_event_new(__u8 hook, __u8 verdict, __s32 rule)
{
	struct tk_cg_event *e = tk_reserve(sizeof(*e));

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->hook = hook;
	e->verdict = verdict;
	e->rule = rule;
	return e;
}

/* A call without a port (a packet of neither TCP nor UDP) fits only rules for any port. */
static __always_inline bool tk_cg_addr_fits(const volatile struct tk_cg_rule *r, __u8 family,
					    const __u32 *a, __u16 port, bool has_port)
{
	if (r->family && r->family != family)
		return false;
	if (has_port ? port < r->port_lo || port > r->port_hi : r->port_lo != 0 || r->port_hi != 65535)
		return false;
	if ((a[0] & r->mask[0]) != r->addr[0])
		return false;
	if (family == 4)
		return true;
	return (a[1] & r->mask[1]) == r->addr[1] && (a[2] & r->mask[2]) == r->addr[2] &&
	       (a[3] & r->mask[3]) == r->addr[3];
}

/* Kinds first..last, adjacent in enum tk_cg_rule_kind: a hook's rules, `wider` adding the
 * kind after `first` (a UDP connect is judged by the sendmsg rules too). */
struct tk_cg_kinds {
	__u32 lo, hi;
	__u8 first;
	bool wider;
};

static __always_inline struct tk_cg_kinds tk_cg_kinds(const __u8 first, bool wider)
{
	struct tk_cg_kinds k = { .lo = tk_cg_config.kind_start[first], .first = first, .wider = wider };

	/* two constant reads, not one at a variable offset: the verifier keeps the bound exact */
	k.hi = wider ? tk_cg_config.kind_start[first + 2] : tk_cg_config.kind_start[first + 1];
	return k;
}

/* Whether a rule of `kind` may fit (see struct tk_cg_prefilter): 2 loads instead of a walk.
 * Every index is bounded where it is used, for 5.10's verifier. */
static __always_inline bool tk_cg_may_fit(__u32 kind, __u8 family, const __u32 *a, __u16 port)
{
	const volatile __u8 *f;
	__u32 bucket = port >> TK_CG_PORT_BUCKET_SHIFT, byte = *(const __u8 *)a, idx;

	if (kind >= TK_RULE_KINDS)
		return true;
	f = (const volatile __u8 *)&tk_cg_prefilter[kind];
	/* the port came through a byte swap, which 5.10's verifier does not bound, and the
	 * compiler drops a mask it can prove redundant: hide the value, then mask */
	idx = bucket >> 3;
	barrier_var(idx);
	idx &= sizeof(((struct tk_cg_prefilter *)0)->ports) - 1;
	if (!(f[idx] & (1 << (bucket & 7))))
		return false;
	idx = offsetof(struct tk_cg_prefilter, first_byte) + (family == 6 ? 32 : 0) + ((byte & 0xff) >> 3);
	if (idx >= sizeof(struct tk_cg_prefilter))
		return true;
	return f[idx] & (1 << (byte & 7));
}

/* The first rule of `kinds` that fits the address and port, or -1. The bounds are rodata
 * constants, so the verifier walks exactly that many iterations, and a hook walks only the
 * rules of its kinds, and only when the prefilter says one may fit. */
static __always_inline __s32 tk_cg_find(struct tk_cg_kinds kinds, __u8 family, const __u32 *a, __u16 port,
					bool has_port)
{
	if (kinds.lo >= kinds.hi || (!tk_cg_may_fit(kinds.first, family, a, port) &&
				     !(kinds.wider && tk_cg_may_fit(kinds.first + 1, family, a, port))))
		return -1;
#pragma clang loop unroll(disable)
	for (__u32 i = kinds.lo; i < TK_CG_MAX_RULES; i++) {
		if (i >= kinds.hi)
			break;
		if (tk_cg_addr_fits(&tk_cg_rules[i], family, a, port, has_port))
			return i;
	}
	return -1;
}

/* ::ffff:a.b.c.d: an IPv4 peer of a dual-stack (AF_INET6) socket. Only the *6 hooks see such
 * calls, so IPv4 rules are applied to them too: a v6 socket is no way around a v4 rule. */
static __always_inline bool tk_cg_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

static __always_inline bool tk_cg_unspecified6(const __u32 *a)
{
	return !(a[0] | a[1] | a[2] | a[3]);
}

/* tk_cg_find for the address of a socket call; at a *6 hook also the IPv4 rules, on the IPv4
 * part of a v4-mapped address, and on 0.0.0.0 for `::` (a dual-stack bind takes IPv4 too). */
static __always_inline __s32 tk_cg_find_inet(struct tk_cg_kinds kinds, __u8 family, const __u32 *a, __u16 port)
{
	__s32 rule = tk_cg_find(kinds, family, a, port, true);
	__u32 any4 = 0;

	if (rule < 0 && family == 6) {
		if (tk_cg_v4_mapped(a))
			rule = tk_cg_find(kinds, 4, &a[3], port, true);
		else if (tk_cg_unspecified6(a))
			rule = tk_cg_find(kinds, 4, &any4, port, true);
	}
	return rule;
}

/* Where a connect or send really goes: the kernel sends one to 0.0.0.0 (::, ::ffff:0.0.0.0)
 * to the loopback address after the hook, so the rules judge that. */
static __always_inline void tk_cg_effective_dest(const __u8 family, const __u32 *a, __u32 *m)
{
	m[0] = a[0];
	m[1] = a[1];
	m[2] = a[2];
	m[3] = a[3];
	if (family == 4) {
		if (!a[0])
			m[0] = bpf_htonl(0x7f000001);
	} else if (tk_cg_unspecified6(a)) {
		m[3] = bpf_htonl(1);
	} else if (tk_cg_v4_mapped(a) && !a[3]) {
		m[3] = bpf_htonl(0x7f000001);
	}
}

static __always_inline void tk_cg_copy6(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

/* ---- sock_addr: bind, connect, sendmsg, recvmsg ---- */

/* The user's address of a sock_addr call (network order) and its port (host order). */
static __always_inline __u16 tk_cg_user_addr(struct bpf_sock_addr *ctx, __u8 family, __u32 *a)
{
	if (family == 4) {
		a[0] = ctx->user_ip4;
	} else {
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	}
	return bpf_ntohs((__u16)ctx->user_port);
}

static __always_inline void tk_cg_set_user_addr(struct bpf_sock_addr *ctx, __u8 family, const __u32 *a,
						__u16 port)
{
	if (family == 4) {
		ctx->user_ip4 = a[0];
	} else {
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
	}
	ctx->user_port = bpf_htons(port);
}

/* A rewrite's new address (the rule's `addr` or `to_addr`) into `n`, v4-mapped when an IPv4
 * rule met a v4-mapped address at a *6 hook; written into the call with `port`. */
static __always_inline void tk_cg_rewrite(struct bpf_sock_addr *ctx, const __u8 family, __s32 rule,
					  bool reverse, __u32 *n, __u16 port)
{
	const volatile struct tk_cg_rule *r = &tk_cg_rules[rule & (TK_CG_MAX_RULES - 1)];

	tk_cg_copy6(n, (const __u32 *)(reverse ? r->addr : r->to_addr));
	if (family == 6 && r->family == 4) {
		n[3] = n[0];
		n[0] = n[1] = 0;
		n[2] = bpf_htonl(0xffff);
	}
	tk_cg_set_user_addr(ctx, family, n, port);
}

/* The event of a sock_addr call: local side `l`, the user's address `a`, and for a rewrite
 * what the kernel used instead. */
static __always_inline void tk_cg_addr_event(struct bpf_sock_addr *ctx, const __u8 hook, const __u8 family,
					     __u8 verdict, __s32 rule, const __u32 *l, __u16 lport,
					     const __u32 *a, __u16 port, const __u32 *n, __u16 nport)
{
	struct tk_cg_event *e = tk_cg_event_new(hook, verdict, rule);

	if (!e)
		return;
	tk_cg_task(e, tk_cg_config.task_sock_addr);
	e->family = family;
	e->proto = ctx->protocol;
	e->sock_type = ctx->type;
	tk_cg_copy6(e->laddr, l);
	e->lport = lport;
	tk_cg_copy6(e->raddr, a);
	e->rport = port;
	if (verdict == TK_CG_REWRITE) {
		tk_cg_copy6(e->naddr, n);
		e->nport = nport;
	}
	tk_submit(ctx, e, sizeof(*e));
}

/* connect4/6 and sendmsg4/6: deny, or rewrite the destination. A UDP socket's connect() fixes
 * where its sends go, so the sendmsg rules judge it too (glibc's resolver connects). */
static __always_inline int tk_cg_dest(struct bpf_sock_addr *ctx, const __u8 hook, const __u8 family,
				      const __u8 deny_kind, const __u8 rewrite_kind)
{
	__u32 a[4] = {}, m[4], n[4] = {}, l[4] = {};
	__u16 port = tk_cg_user_addr(ctx, family, a), nport = port, lport = 0;
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule;

	bool udp_connect = (hook == TK_CG_CONNECT4 || hook == TK_CG_CONNECT6) && ctx->type == SOCK_DGRAM;

	tk_cg_effective_dest(family, a, m);
	rule = tk_cg_find_inet(tk_cg_kinds(deny_kind, udp_connect), family, m, port);
	struct bpf_sock *sk;

	if (rule >= 0) {
		verdict = TK_CG_DENY;
	} else {
		rule = tk_cg_find_inet(tk_cg_kinds(rewrite_kind, udp_connect), family, a, port);
		if (rule >= 0) {
			verdict = TK_CG_REWRITE;
			if (tk_cg_rules[rule & (TK_CG_MAX_RULES - 1)].to_port)
				nport = tk_cg_rules[rule & (TK_CG_MAX_RULES - 1)].to_port;
			tk_cg_rewrite(ctx, family, rule, false, n, nport);
		}
	}
	tk_cg_count(hook, verdict, rule);
	if (!tk_cg_observed(hook))
		return verdict != TK_CG_DENY;
	/* the local side: the socket's address and port where it is bound (0 until the kernel
	 * picks them), or for a send the source address the process chose for this message */
	sk = ctx->sk;
	if (sk) {
		lport = sk->src_port;
		if (family == 4) {
			l[0] = sk->src_ip4;
		} else {
			l[0] = sk->src_ip6[0];
			l[1] = sk->src_ip6[1];
			l[2] = sk->src_ip6[2];
			l[3] = sk->src_ip6[3];
		}
	}
	if (hook == TK_CG_SENDMSG4 && ctx->msg_src_ip4) {
		l[0] = ctx->msg_src_ip4;
	} else if (hook == TK_CG_SENDMSG6 && (ctx->msg_src_ip6[0] | ctx->msg_src_ip6[1] |
					      ctx->msg_src_ip6[2] | ctx->msg_src_ip6[3])) {
		l[0] = ctx->msg_src_ip6[0];
		l[1] = ctx->msg_src_ip6[1];
		l[2] = ctx->msg_src_ip6[2];
		l[3] = ctx->msg_src_ip6[3];
	}
	tk_cg_addr_event(ctx, hook, family, verdict, rule, l, lport, a, port, n, nport);
	return verdict != TK_CG_DENY;
}

/* bind4/6: the address the process asks for. A port it names is judged here: kernels before
 * 5.17 left a port denied at post_bind in the hash tables (a UDP socket still received on it,
 * a later listen() took it). Port 0 is judged at post_bind, on the port the kernel picked. */
static __always_inline int tk_cg_bind(struct bpf_sock_addr *ctx, const __u8 hook, const __u8 family)
{
	__u32 a[4] = {}, zero[4] = {};
	__u16 port = tk_cg_user_addr(ctx, family, a);
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule = -1;

	if (port) {
		rule = tk_cg_find_inet(tk_cg_kinds(TK_RULE_BIND, false), family, a, port);
		if (rule >= 0)
			verdict = TK_CG_DENY;
	}
	tk_cg_count(hook, verdict, rule);
	if (!tk_cg_observed(hook))
		return verdict != TK_CG_DENY;
	/* the address asked for is the local side; there is no remote one */
	tk_cg_addr_event(ctx, hook, family, verdict, rule, a, port, zero, 0, zero, 0);
	return verdict != TK_CG_DENY;
}

/* recvmsg4/6: a reply from the address a sendmsg rewrite sent to reads as coming from the
 * address the process sent to. Always 1: the kernel allows nothing else here. */
static __always_inline int tk_cg_recvmsg(struct bpf_sock_addr *ctx, const __u8 hook, const __u8 family)
{
	__u32 a[4] = {}, n[4] = {};
	__u16 port = tk_cg_user_addr(ctx, family, a), nport = port;
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule = -1;
	__u32 zero[4] = {};
	struct tk_cg_kinds replies = tk_cg_kinds(TK_RULE_REWRITE_CONNECT, true);

#pragma clang loop unroll(disable)
	/* replies to a rewritten UDP connect, or to a rewritten send */
	for (__u32 i = replies.lo; i < TK_CG_MAX_RULES; i++) {
		const volatile struct tk_cg_rule *r = &tk_cg_rules[i];

		if (i >= replies.hi)
			break;
		if (r->family == family) {
			if (r->to_addr[0] != a[0] || (family == 6 && (r->to_addr[1] != a[1] ||
								    r->to_addr[2] != a[2] ||
								    r->to_addr[3] != a[3])))
				continue;
		} else if (!(family == 6 && r->family == 4 && tk_cg_v4_mapped(a) && r->to_addr[0] == a[3])) {
			continue;
		}
		if (r->to_port ? r->to_port != port : (port < r->port_lo || port > r->port_hi))
			continue;
		rule = i;
		break;
	}
	if (rule >= 0) {
		verdict = TK_CG_REWRITE;
		/* a rewrite to a fixed port came from one port (the parser requires it) */
		if (tk_cg_rules[rule & (TK_CG_MAX_RULES - 1)].to_port)
			nport = tk_cg_rules[rule & (TK_CG_MAX_RULES - 1)].port_lo;
		tk_cg_rewrite(ctx, family, rule, true, n, nport);
	}
	tk_cg_count(hook, verdict, rule);
	if (!tk_cg_observed(hook))
		return 1;
	tk_cg_addr_event(ctx, hook, family, verdict, rule, zero, 0, a, port, n, nport);
	return 1;
}

SEC("cgroup/bind4")
int cg__bind4(struct bpf_sock_addr *ctx)
{
	return tk_cg_bind(ctx, TK_CG_BIND4, 4);
}

SEC("cgroup/bind6")
int cg__bind6(struct bpf_sock_addr *ctx)
{
	return tk_cg_bind(ctx, TK_CG_BIND6, 6);
}

SEC("cgroup/connect4")
int cg__connect4(struct bpf_sock_addr *ctx)
{
	return tk_cg_dest(ctx, TK_CG_CONNECT4, 4, TK_RULE_CONNECT, TK_RULE_REWRITE_CONNECT);
}

SEC("cgroup/connect6")
int cg__connect6(struct bpf_sock_addr *ctx)
{
	return tk_cg_dest(ctx, TK_CG_CONNECT6, 6, TK_RULE_CONNECT, TK_RULE_REWRITE_CONNECT);
}

SEC("cgroup/sendmsg4")
int cg__sendmsg4(struct bpf_sock_addr *ctx)
{
	return tk_cg_dest(ctx, TK_CG_SENDMSG4, 4, TK_RULE_SENDMSG, TK_RULE_REWRITE_SENDMSG);
}

SEC("cgroup/sendmsg6")
int cg__sendmsg6(struct bpf_sock_addr *ctx)
{
	return tk_cg_dest(ctx, TK_CG_SENDMSG6, 6, TK_RULE_SENDMSG, TK_RULE_REWRITE_SENDMSG);
}

SEC("cgroup/recvmsg4")
int cg__recvmsg4(struct bpf_sock_addr *ctx)
{
	return tk_cg_recvmsg(ctx, TK_CG_RECVMSG4, 4);
}

SEC("cgroup/recvmsg6")
int cg__recvmsg6(struct bpf_sock_addr *ctx)
{
	return tk_cg_recvmsg(ctx, TK_CG_RECVMSG6, 6);
}

/* ---- sock: create, release, post_bind ---- */

static __always_inline __u8 tk_cg_family(__u32 af)
{
	return af == TK_AF_INET ? 4 : af == TK_AF_INET6 ? 6 : 0;
}

static __always_inline void tk_cg_sock_fill(struct tk_cg_event *e, struct bpf_sock *sk)
{
	e->family = tk_cg_family(sk->family);
	e->proto = sk->protocol;
	e->sock_type = sk->type;
}

static __always_inline bool tk_cg_sock_fits(const volatile struct tk_cg_rule *r, struct bpf_sock *sk)
{
	return (!r->sock_family || r->sock_family == sk->family) &&
	       (!r->sock_type || r->sock_type == sk->type) && (!r->sock_proto || r->sock_proto == sk->protocol);
}

SEC("cgroup/sock_create")
int cg__sock_create(struct bpf_sock *sk)
{
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule = -1;
	struct tk_cg_event *e;

#pragma clang loop unroll(disable)
	for (__u32 i = tk_cg_config.kind_start[TK_RULE_SOCK]; i < TK_CG_MAX_RULES; i++) {
		if (i >= tk_cg_config.kind_start[TK_RULE_SOCK + 1])
			break;
		if (tk_cg_sock_fits(&tk_cg_rules[i], sk)) {
			rule = i;
			verdict = TK_CG_DENY;
			break;
		}
	}
	tk_cg_count(TK_CG_SOCK_CREATE, verdict, rule);
	if (!tk_cg_observed(TK_CG_SOCK_CREATE))
		return verdict != TK_CG_DENY;
	e = tk_cg_event_new(TK_CG_SOCK_CREATE, verdict, rule);
	if (e) {
		tk_cg_task(e, tk_cg_config.task_sock);
		tk_cg_sock_fill(e, sk);
		tk_submit(sk, e, sizeof(*e));
	}
	return verdict != TK_CG_DENY;
}

SEC("cgroup/sock_release")
int cg__sock_release(struct bpf_sock *sk)
{
	struct tk_cg_event *e;

	tk_cg_count(TK_CG_SOCK_RELEASE, TK_CG_ALLOW, -1);
	if (!tk_cg_observed(TK_CG_SOCK_RELEASE))
		return 1;
	e = tk_cg_event_new(TK_CG_SOCK_RELEASE, TK_CG_ALLOW, -1);
	if (e) {
		tk_cg_task(e, tk_cg_config.task_sock);
		/* family, type and protocol: the kernel lets sock_release read no address */
		tk_cg_sock_fill(e, sk);
		tk_submit(sk, e, sizeof(*e));
	}
	return 1;
}

/* post_bind4/6: the address and port the socket got (the kernel's choice for port 0); the
 * bind rules decide here, so `bind:0-1023` judges the port actually bound. */
static __always_inline int tk_cg_post_bind(struct bpf_sock *sk, const __u8 hook, const __u8 family)
{
	__u32 a[4] = {};
	__u16 port = sk->src_port;
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule;
	struct tk_cg_event *e;

	if (family == 4) {
		a[0] = sk->src_ip4;
	} else {
		a[0] = sk->src_ip6[0];
		a[1] = sk->src_ip6[1];
		a[2] = sk->src_ip6[2];
		a[3] = sk->src_ip6[3];
	}
	rule = tk_cg_find_inet(tk_cg_kinds(TK_RULE_BIND, false), family, a, port);
	if (rule >= 0)
		verdict = TK_CG_DENY;
	tk_cg_count(hook, verdict, rule);
	if (!tk_cg_observed(hook))
		return verdict != TK_CG_DENY;
	e = tk_cg_event_new(hook, verdict, rule);
	if (e) {
		tk_cg_task(e, tk_cg_config.task_sock);
		tk_cg_sock_fill(e, sk);
		tk_cg_copy6(e->laddr, a);
		e->lport = port;
		tk_submit(sk, e, sizeof(*e));
	}
	return verdict != TK_CG_DENY;
}

SEC("cgroup/post_bind4")
int cg__post_bind4(struct bpf_sock *sk)
{
	return tk_cg_post_bind(sk, TK_CG_POST_BIND4, 4);
}

SEC("cgroup/post_bind6")
int cg__post_bind6(struct bpf_sock *sk)
{
	return tk_cg_post_bind(sk, TK_CG_POST_BIND6, 6);
}

/* ---- skb: ingress, egress ---- */

/* Parses the IP header (an skb here starts at the network header) and the ports of TCP and
 * UDP; the remote side is the source on ingress, the destination on egress. */
static __always_inline int tk_cg_skb(struct __sk_buff *skb, const __u8 hook, const __u8 kind)
{
	__u32 src[4] = {}, dst[4] = {};
	__u16 ports[2] = {};
	__u8 family = 0, proto = 0, verdict = TK_CG_ALLOW;
	__u32 l4 = 0;
	__s32 rule = -1;
	struct tk_cg_event *e;
	bool has_ports = false;

	if (skb->protocol == bpf_htons(TK_ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) == 0) {
			family = 4;
			proto = ip.protocol;
			src[0] = ip.saddr;
			dst[0] = ip.daddr;
			l4 = ip.ihl * 4;
			has_ports = !(ip.frag_off & bpf_htons(TK_IP_OFFSET));
		}
	} else if (skb->protocol == bpf_htons(TK_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) == 0) {
			family = 6;
			proto = ip6.nexthdr;
			tk_cg_copy6(src, (const __u32 *)&ip6.saddr);
			tk_cg_copy6(dst, (const __u32 *)&ip6.daddr);
			l4 = sizeof(ip6);
			has_ports = true;
			/* past extension headers (a few: a peer can add them to hide the ports) */
#pragma clang loop unroll(disable)
			for (int h = 0; h < TK_IPV6_EXT_MAX; h++) {
				__u8 ext[4];

				if (proto != TK_IPPROTO_HOPOPTS && proto != TK_IPPROTO_ROUTING &&
				    proto != TK_IPPROTO_DSTOPTS && proto != TK_IPPROTO_FRAGMENT)
					break;
				if (bpf_skb_load_bytes(skb, l4, ext, sizeof(ext)) < 0) {
					has_ports = false;
					break;
				}
				if (proto == TK_IPPROTO_FRAGMENT) {
					/* a later fragment carries no ports */
					if ((ext[2] << 8 | ext[3]) & ~7)
						has_ports = false;
					l4 += 8;
				} else {
					l4 += (ext[1] + 1) * 8;
				}
				proto = ext[0];
			}
		}
	}
	if (has_ports && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) &&
	    bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)) == 0) {
		ports[0] = bpf_ntohs(ports[0]);
		ports[1] = bpf_ntohs(ports[1]);
	} else {
		ports[0] = ports[1] = 0;
	}
	/* the peer's address, and the destination port: the service on egress, the local port
	 * on ingress */
	if (family) {
		has_ports = has_ports && (proto == IPPROTO_TCP || proto == IPPROTO_UDP);
		if (hook == TK_CG_EGRESS)
			rule = tk_cg_find(tk_cg_kinds(kind, false), family, dst, ports[1], has_ports);
		else
			rule = tk_cg_find(tk_cg_kinds(kind, false), family, src, ports[1], has_ports);
		if (rule >= 0)
			verdict = TK_CG_DENY;
	}
	tk_cg_count(hook, verdict, rule);
	if (!tk_cg_observed(hook))
		return verdict != TK_CG_DENY;
	e = tk_cg_event_new(hook, verdict, rule);
	if (e) {
		e->family = family;
		e->proto = proto;
		e->len = skb->len;
		if (hook == TK_CG_EGRESS) {
			tk_cg_copy6(e->laddr, src);
			tk_cg_copy6(e->raddr, dst);
			e->lport = ports[0];
			e->rport = ports[1];
		} else {
			tk_cg_copy6(e->laddr, dst);
			tk_cg_copy6(e->raddr, src);
			e->lport = ports[1];
			e->rport = ports[0];
		}
		tk_submit(skb, e, sizeof(*e));
	}
	return verdict != TK_CG_DENY;
}

SEC("cgroup_skb/ingress")
int cg__ingress(struct __sk_buff *skb)
{
	return tk_cg_skb(skb, TK_CG_INGRESS, TK_RULE_INGRESS);
}

SEC("cgroup_skb/egress")
int cg__egress(struct __sk_buff *skb)
{
	return tk_cg_skb(skb, TK_CG_EGRESS, TK_RULE_EGRESS);
}

/* ---- dev ---- */

#define TK_DEVCG_ACC_SHIFT 16

SEC("cgroup/dev")
int cg__dev(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 type = ctx->access_type & 0xffff, access = ctx->access_type >> TK_DEVCG_ACC_SHIFT;
	__u32 major = ctx->major, minor = ctx->minor;
	__u8 verdict = TK_CG_ALLOW;
	__s32 rule = -1;
	struct tk_cg_event *e;

#pragma clang loop unroll(disable)
	for (__u32 i = tk_cg_config.kind_start[TK_RULE_DEV]; i < TK_CG_MAX_RULES; i++) {
		const volatile struct tk_cg_rule *r = &tk_cg_rules[i];

		if (i >= tk_cg_config.kind_start[TK_RULE_DEV + 1])
			break;
		if ((r->dev_type && r->dev_type != type) ||
		    (r->dev_major != ~0U && r->dev_major != major) ||
		    (r->dev_minor != ~0U && r->dev_minor != minor) || !(r->dev_access & access))
			continue;
		rule = i;
		verdict = TK_CG_DENY;
		break;
	}
	tk_cg_count(TK_CG_DEV, verdict, rule);
	if (!tk_cg_observed(TK_CG_DEV))
		return verdict != TK_CG_DENY;
	e = tk_cg_event_new(TK_CG_DEV, verdict, rule);
	if (e) {
		tk_cg_task(e, tk_cg_config.task_dev);
		e->dev_type = type;
		e->dev_access = access;
		e->dev_major = major;
		e->dev_minor = minor;
		tk_submit(ctx, e, sizeof(*e));
	}
	return verdict != TK_CG_DENY;
}

char LICENSE[] SEC("license") = "GPL";
