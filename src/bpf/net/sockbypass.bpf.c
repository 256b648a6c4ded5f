// SPDX-License-Identifier: GPL-2.0
/* `tracekit sockmap bypass`: the data of local TCP connections goes from the sender's
 * sendmsg() straight into the peer socket's receive queue, skipping TCP/IP and the loopback
 * device (Cilium's "sockops acceleration").
 *
 * A sockops program on the cgroup puts every connection end that completes its handshake
 * (ACTIVE_ and PASSIVE_ESTABLISHED_CB) into a sockhash keyed by its own 4-tuple. The sockhash's
 * sk_msg program runs at each sendmsg() of those sockets: it builds the reversed key (the
 * peer's) and calls bpf_msg_redirect_hash(..., BPF_F_INGRESS), which queues the message on the
 * peer's psock when the peer is in the map (both ends local and in the cgroup). It returns
 * SK_PASS either way: without a redirect target set, SK_PASS is TCP's normal path
 * (net/core/skmsg.c, sk_psock_map_verd).
 *
 * The kernel takes a socket out of the sockhash when it closes (sock_map_close); the program
 * only forgets its own per-socket counters at TCP_CLOSE.
 *
 * Nothing takes a socket out before that, on purpose: a socket leaving the sockhash loses its
 * psock, and with it the messages redirected to it that its application has not read yet (a
 * silent loss, measured on 5.10 and 6.18: the reader sees EOF early). Each socket's psock
 * holds this sk_msg program, which holds the sockhash it uses: so after tracekit exits, even
 * by SIGKILL, the sockhash lives on until the last connection in it closes, and no data is
 * lost. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "transport.bpf.h"
#include "counts.bpf.h"
#include "skops.bpf.h"
#include "sockbypass.h"

#define TK_TCP_CLOSE 7

char LICENSE[] SEC("license") = "GPL";

/* For the generated Rust types. */
struct tk_bp_event _tk_bp_event = {};
enum tk_bp_kind _tk_bp_kind = 0;
enum tk_bp_count _tk_bp_count = 0;

const volatile struct tk_bp_config tk_bp_config = {};

/* Set by user space when it ends: every message of a connection still in the sockhash takes
 * TCP's path from then on. Such a connection keeps this program, and through it the sockhash,
 * loaded until it closes (see the end of the file comment). */
__u32 tk_bp_draining = 0;

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TK_BP_MAX_CONNS);
	__type(key, struct tk_bp_key);
	__type(value, __u64);
} tk_bp_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_BP_MAX_CONNS);
	__type(key, struct tk_bp_key);
	__type(value, struct tk_bp_conn);
} tk_bp_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct tk_bp_task);
} tk_bp_tasks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_BP_NCOUNTS);
	__type(key, __u32);
	__type(value, __u64);
} tk_bp_counts SEC(".maps");

static __always_inline bool tk_bp_port_in(__u16 port)
{
	for (int i = 0; i < TK_BP_MAX_PORTS; i++)
		if (i < tk_bp_config.nports && tk_bp_config.ports[i] == port)
			return true;
	return false;
}

/* This end's key. */
static __always_inline void tk_bp_key_of(struct bpf_sock_ops *skops, struct tk_bp_key *k)
{
	k->family = skops->family;
	k->lport = skops->local_port;
	k->rport = tk_skops_dport(skops);
	if (k->family == TK_AF_INET) {
		k->lip[0] = skops->local_ip4;
		k->rip[0] = skops->remote_ip4;
	} else {
		k->lip[0] = skops->local_ip6[0];
		k->lip[1] = skops->local_ip6[1];
		k->lip[2] = skops->local_ip6[2];
		k->lip[3] = skops->local_ip6[3];
		k->rip[0] = skops->remote_ip6[0];
		k->rip[1] = skops->remote_ip6[1];
		k->rip[2] = skops->remote_ip6[2];
		k->rip[3] = skops->remote_ip6[3];
	}
	/* a dead branch (rodata 0) where sock_ops or sk_msg lack bpf_get_netns_cookie (before 5.15):
	 * then the same 4-tuple in two namespaces of the cgroup could be confused */
	if (tk_bp_config.with_netns)
		k->netns = bpf_get_netns_cookie(skops);
}

static __always_inline void tk_bp_swap(struct tk_bp_key *k)
{
	__u32 t;

	t = k->lport; k->lport = k->rport; k->rport = t;
	for (int i = 0; i < 4; i++) {
		t = k->lip[i]; k->lip[i] = k->rip[i]; k->rip[i] = t;
	}
}

/* connect() and listen() run in the caller's context: the one place the task is known. */
static __always_inline void tk_bp_remember_task(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct task_struct *task;
	struct tk_bp_task *t;

	if (!tk_bp_config.with_task || !sk)
		return;
	t = bpf_sk_storage_get(&tk_bp_tasks, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!t)
		return;
	task = (struct task_struct *)bpf_get_current_task();
	t->pid = BPF_CORE_READ(task, tgid);
	BPF_CORE_READ_STR_INTO(&t->comm, task, comm);
}

static __always_inline struct tk_bp_event *tk_bp_event(struct bpf_sock_ops *skops, __u8 kind)
{
	struct tk_bp_event *e = tk_reserve(sizeof(*e));

	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->kind = kind;
	tk_skops_ends(skops, &e->family, &e->sport, &e->dport, e->saddr, e->daddr);
	return e;
}

static __always_inline void tk_bp_established(struct bpf_sock_ops *skops)
{
	struct tk_bp_conn fresh = {}, *peer;
	struct tk_bp_key key = {};
	struct bpf_sock *sk = skops->sk;
	struct tk_bp_task *t = NULL;
	struct tk_bp_event *e;

	if (skops->family != TK_AF_INET && skops->family != TK_AF_INET6)
		return;
	if (tk_bp_config.nports && !tk_bp_port_in(skops->local_port) && !tk_bp_port_in(tk_skops_dport(skops)))
		return;
	tk_bp_key_of(skops, &key);
	fresh.opened_ns = bpf_ktime_get_ns();
	if (tk_bp_config.with_task && sk)
		t = bpf_sk_storage_get(&tk_bp_tasks, sk, NULL, 0);
	if (t) {
		fresh.pid = t->pid;
		__builtin_memcpy(fresh.comm, t->comm, sizeof(fresh.comm));
	}
	if (bpf_map_update_elem(&tk_bp_conns, &key, &fresh, BPF_ANY) ||
	    bpf_sock_hash_update(skops, &tk_bp_socks, &key, BPF_ANY)) {
		bpf_map_delete_elem(&tk_bp_conns, &key);
		tk_count_at(&tk_bp_counts, TK_BP_C_FULL);
		e = tk_bp_event(skops, TK_BP_FULL);
		if (e)
			tk_submit(skops, e, sizeof(*e));
		return;
	}
	tk_count_at(&tk_bp_counts, TK_BP_C_SOCKETS);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	/* The second end in: the pair is bypassed from now on. */
	tk_bp_swap(&key);
	peer = bpf_map_lookup_elem(&tk_bp_conns, &key);
	if (!peer)
		return;
	tk_count_at(&tk_bp_counts, TK_BP_C_PAIRS);
	e = tk_bp_event(skops, TK_BP_PAIR);
	if (!e)
		return;
	e->pid = fresh.pid;
	__builtin_memcpy(e->comm, fresh.comm, sizeof(e->comm));
	e->peer_pid = peer->pid;
	__builtin_memcpy(e->peer_comm, peer->comm, sizeof(e->peer_comm));
	tk_submit(skops, e, sizeof(*e));
}

static __always_inline void tk_bp_closed(struct bpf_sock_ops *skops)
{
	struct tk_bp_key key = {};
	struct tk_bp_conn *c;
	struct tk_bp_event *e;

	tk_bp_key_of(skops, &key);
	c = bpf_map_lookup_elem(&tk_bp_conns, &key);
	if (!c)
		return;
	tk_count_at(&tk_bp_counts, TK_BP_C_CLOSED);
	e = tk_bp_event(skops, TK_BP_CLOSED);
	if (e) {
		e->bytes = c->bytes;
		e->msgs = c->msgs;
		e->duration_ns = e->ts_ns - c->opened_ns;
		e->pid = c->pid;
		__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
		tk_submit(skops, e, sizeof(*e));
	}
	bpf_map_delete_elem(&tk_bp_conns, &key);
}

SEC("sockops")
int sockbypass__insert(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		tk_bp_remember_task(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		tk_bp_established(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TK_TCP_CLOSE)
			tk_bp_closed(skops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int sockbypass__redirect(struct sk_msg_md *msg)
{
	struct tk_bp_key peer = {};
	struct tk_bp_conn *c;
	__u64 size = msg->size;

	if (tk_bp_draining) {
		tk_count_at(&tk_bp_counts, TK_BP_C_PASSED);
		return SK_PASS;
	}
	/* The peer's key: this end's 4-tuple reversed. */
	peer.family = msg->family;
	peer.lport = bpf_ntohl(msg->remote_port);
	peer.rport = msg->local_port;
	if (peer.family == TK_AF_INET) {
		peer.lip[0] = msg->remote_ip4;
		peer.rip[0] = msg->local_ip4;
	} else {
		peer.lip[0] = msg->remote_ip6[0];
		peer.lip[1] = msg->remote_ip6[1];
		peer.lip[2] = msg->remote_ip6[2];
		peer.lip[3] = msg->remote_ip6[3];
		peer.rip[0] = msg->local_ip6[0];
		peer.rip[1] = msg->local_ip6[1];
		peer.rip[2] = msg->local_ip6[2];
		peer.rip[3] = msg->local_ip6[3];
	}
	if (tk_bp_config.with_netns)
		peer.netns = bpf_get_netns_cookie(msg);
	if (bpf_msg_redirect_hash(msg, &tk_bp_socks, &peer, BPF_F_INGRESS) != SK_PASS) {
		/* the peer is not in the sockhash: no target set, so SK_PASS is TCP's path */
		tk_count_at(&tk_bp_counts, TK_BP_C_PASSED);
		return SK_PASS;
	}
	tk_count_add(&tk_bp_counts, TK_BP_C_BYTES, size);
	tk_count_at(&tk_bp_counts, TK_BP_C_MSGS);
	/* this end's own counters: its key is the peer's reversed back */
	tk_bp_swap(&peer);
	c = bpf_map_lookup_elem(&tk_bp_conns, &peer);
	if (c) {
		__sync_fetch_and_add(&c->bytes, size);
		__sync_fetch_and_add(&c->msgs, 1);
	}
	return SK_PASS;
}

