// SPDX-License-Identifier: GPL-2.0
/* `tracekit sockmap echo` and `proxy`: TCP served with bytes that never leave the kernel (the
 * design of Cloudflare's 2019 "SOCKMAP - TCP splicing of the future", tcp-splice echo).
 *
 * A sockops program on tracekit's cgroup puts each connection its listener accepts into a
 * sockhash the moment the handshake ends, before any data can arrive: data that reached the
 * socket before it was in the map would sit in its receive queue until more came. The
 * sockhash's stream verdict program then sends every byte the connection receives out of
 * the connection's `peer` (itself) with bpf_sk_redirect_hash(): received, and sent again from
 * softirq, never copied to user space. User space only accepts (to keep the accept queue
 * short) and closes a connection once its peer is gone and every byte is acknowledged.
 *
 * The proxy does not use the sockops program: user space inserts both connections of a pair
 * (the accepted one and the one it made to the upstream) once the second one exists, first into
 * tk_sm_peers, then into tk_sm_socks (src/tools/net/sockmap/proxy.rs says why in that order). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "transport.bpf.h"
#include "skops.bpf.h"
#include "sockmap.h"

#define TK_TCP_CLOSE 7
#define TK_SOL_SOCKET 1
#define TK_SO_SNDBUF 7
/* A redirected skb that does not fit the send buffer waits in the psock's backlog and is
 * retried from a workqueue; a large send buffer keeps the echo on the fast path (the fix of
 * the Cloudflare post). The kernel caps this at net.core.wmem_max (as setsockopt(SO_SNDBUF));
 * it covers the bytes before accept(), after which user space sets 8 MiB with SO_SNDBUFFORCE. */
#define TK_SM_SNDBUF (8 << 20)

char LICENSE[] SEC("license") = "GPL";

struct tk_sm_event _tk_sm_event = {};
enum tk_sm_kind _tk_sm_kind = 0;

const volatile struct tk_sm_config tk_sm_config = {};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TK_SM_MAX_CONNS);
	__type(key, __u64);
	__type(value, __u64);
} tk_sm_socks SEC(".maps");

/* The sockets the verdict redirects into: no programs, so entering it creates the socket's psock
 * (what a redirect target needs) without changing how the socket receives. A connection is put
 * here before its peer gets the verdict program in tk_sm_socks: a byte redirected to a peer not
 * yet in the map it is looked up in would be dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, TK_SM_MAX_CONNS);
	__type(key, __u64);
	__type(value, __u64);
} tk_sm_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TK_SM_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct tk_sm_conn);
} tk_sm_conns SEC(".maps");

static __always_inline void tk_sm_emit(struct bpf_sock_ops *skops, __u8 kind, __u64 cookie,
				       const struct tk_sm_conn *c)
{
	struct tk_sm_event *e = tk_reserve(sizeof(*e));

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->cookie = cookie;
	e->kind = kind;
	tk_skops_ends(skops, &e->family, &e->sport, &e->dport, e->saddr, e->daddr);
	if (c) {
		e->bytes = c->bytes;
		e->duration_ns = e->ts_ns - c->opened_ns;
	}
	tk_submit(skops, e, sizeof(*e));
}

SEC("sockops")
int sockmap__insert(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct tk_sm_conn *c;

	switch (skops->op) {
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		struct tk_sm_conn fresh = {};
		int sndbuf = TK_SM_SNDBUF;

		/* only the connections of tracekit's listener: other processes share the cgroup */
		if (skops->local_port != tk_sm_config.port)
			return 1;
		/* a dead branch (rodata 0) where sock_ops has no bpf_get_netns_cookie (before 5.15) */
		if (tk_sm_config.netns_cookie && bpf_get_netns_cookie(skops) != tk_sm_config.netns_cookie)
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		bpf_setsockopt(skops, TK_SOL_SOCKET, TK_SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		fresh.peer = cookie;
		fresh.opened_ns = bpf_ktime_get_ns();
		/* peers first: the verdict redirects into that map (here to the socket itself) */
		if (bpf_map_update_elem(&tk_sm_conns, &cookie, &fresh, BPF_NOEXIST) ||
		    bpf_sock_hash_update(skops, &tk_sm_peers, &cookie, BPF_NOEXIST) ||
		    bpf_sock_hash_update(skops, &tk_sm_socks, &cookie, BPF_NOEXIST)) {
			bpf_map_delete_elem(&tk_sm_conns, &cookie);
			tk_sm_emit(skops, TK_SM_FULL, cookie, NULL);
			return 1;
		}
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		tk_sm_emit(skops, TK_SM_OPEN, cookie, &fresh);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != TK_TCP_CLOSE)
			return 1;
		cookie = bpf_get_socket_cookie(skops);
		c = bpf_map_lookup_elem(&tk_sm_conns, &cookie);
		if (!c)
			return 1;
		tk_sm_emit(skops, TK_SM_CLOSED, cookie, c);
		bpf_map_delete_elem(&tk_sm_conns, &cookie);
		break;
	}
	return 1;
}

/* No framing: every skb is one message, whatever its length. */
SEC("sk_skb/stream_parser")
int sockmap__parser(struct __sk_buff *skb)
{
	return skb->len;
}

SEC("sk_skb/stream_verdict")
int sockmap__verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct tk_sm_conn *c = bpf_map_lookup_elem(&tk_sm_conns, &cookie);
	__u64 peer;

	if (!c)
		return SK_PASS;
	peer = c->peer;
	__sync_fetch_and_add(&c->bytes, skb->len);
	return bpf_sk_redirect_hash(skb, &tk_sm_peers, &peer, 0);
}
