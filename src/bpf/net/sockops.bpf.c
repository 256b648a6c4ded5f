// SPDX-License-Identifier: GPL-2.0
/* `tracekit sockops`: the TCP connections of a cgroup, seen by a sockops program
 * (BPF_PROG_TYPE_SOCK_OPS) instead of kprobes: establishment, every state change, RTT samples
 * and retransmissions, with the task that called connect() or listen().
 *
 * TCP calls a cgroup's sockops program at fixed points of a connection's life (the `op`).
 * Some come for every socket: TCP_CONNECT_CB (in connect(), in the caller's context),
 * TCP_LISTEN_CB (in listen()), ACTIVE/PASSIVE_ESTABLISHED_CB (handshake done, in softirq).
 * The others only for sockets that asked for them with bpf_sock_ops_cb_flags_set(): STATE_CB,
 * RTT_CB and RETRANS_CB. So the program asks for them at establishment, only for the
 * connections the filter keeps: connections tracekit does not report cost nothing more.
 *
 * Who made a connection is known only where TCP runs in the caller's context (connect(),
 * listen()); the program keeps it in the socket's storage, which a listener's accepted
 * connections inherit (BPF_F_CLONE). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "transport.bpf.h"
#include "counts.bpf.h"
#include "skops.bpf.h"
#include "sockops.h"

#define TK_TCP_CLOSE 7

char LICENSE[] SEC("license") = "GPL";

/* For the generated Rust types. */
struct tk_so_event _tk_so_event = {};
enum tk_so_kind _tk_so_kind = 0;

const volatile struct tk_so_config tk_so_config = {};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct tk_so_sock);
} tk_so_socks SEC(".maps");

/* Events per kind, whether printed or not, summed over CPUs by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_SO_NKINDS);
	__type(key, __u32);
	__type(value, __u64);
} tk_so_counts SEC(".maps");

static __always_inline void tk_so_count(__u32 kind)
{
	tk_count_at(&tk_so_counts, kind);
}

static __always_inline bool tk_so_port_in(const volatile __u16 *ports, __u32 n, __u16 port)
{
	if (n == 0)
		return true;
	for (int i = 0; i < TK_SOCKOPS_MAX_PORTS; i++)
		if (i < n && ports[i] == port)
			return true;
	return false;
}

static __always_inline bool tk_so_wanted(const struct bpf_sock_ops *skops)
{
	__u32 family = skops->family;

	if (family != TK_AF_INET && family != TK_AF_INET6)
		return false;
	if (tk_so_config.family && family != tk_so_config.family)
		return false;
	return tk_so_port_in(tk_so_config.lports, tk_so_config.nlports, skops->local_port) &&
	       tk_so_port_in(tk_so_config.rports, tk_so_config.nrports, tk_skops_dport(skops));
}

static __always_inline struct tk_so_sock *tk_so_sock(struct bpf_sock_ops *skops, bool create)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return NULL;
	return bpf_sk_storage_get(&tk_so_socks, sk, NULL, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
}

/* connect() and listen() run in the caller's context: the one place the task is known. */
static __always_inline void tk_so_remember_task(struct bpf_sock_ops *skops)
{
	struct task_struct *task;
	struct tk_so_sock *s;

	if (!tk_so_config.with_task)
		return;
	s = tk_so_sock(skops, true);
	if (!s)
		return;
	task = (struct task_struct *)bpf_get_current_task();
	s->pid = BPF_CORE_READ(task, tgid);
	BPF_CORE_READ_STR_INTO(&s->comm, task, comm);
}

/* RTT_CB runs inside the kernel's RTT estimator. Since Linux 6.10 it passes the new sample and
 * the new smoothed RTT (<< 3) as arguments, before skops->srtt_us holds it; before, no
 * arguments (zeros), and skops->srtt_us is the value to take. */
static __always_inline __u32 tk_so_rtt_srtt(const struct bpf_sock_ops *skops)
{
	__u32 srtt = skops->args[1];

	return (srtt ? srtt : skops->srtt_us) >> 3;
}

static __always_inline void tk_so_emit(struct bpf_sock_ops *skops, __u8 kind, const struct tk_so_sock *s)
{
	struct tk_so_event *e;

	tk_so_count(kind);
	if (tk_so_config.retrans_only && kind != TK_SO_RETRANS)
		return;
	e = tk_reserve(sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->cookie = bpf_get_socket_cookie(skops);
	e->kind = kind;
	e->oldstate = e->newstate = skops->state;
	tk_skops_ends(skops, &e->family, &e->sport, &e->dport, e->saddr, e->daddr);
	e->bytes_acked = skops->bytes_acked;
	e->bytes_received = skops->bytes_received;
	e->srtt_us = skops->srtt_us >> 3;
	e->cwnd = skops->snd_cwnd;
	e->ssthresh = skops->snd_ssthresh;
	e->total_retrans = skops->total_retrans;
	if (s) {
		e->pid = s->pid;
		__builtin_memcpy(e->comm, s->comm, sizeof(e->comm));
	}
	switch (kind) {
	case TK_SO_STATE:
		e->oldstate = skops->args[0];
		e->newstate = skops->args[1];
		break;
	case TK_SO_RTT:
		e->srtt_us = tk_so_rtt_srtt(skops);
		e->mrtt_us = skops->args[0];
		if (tk_so_config.with_mdev) {
			struct bpf_sock *sk = skops->sk;
			struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;

			if (tp)
				e->mdev_us = tp->mdev_us >> 2;
		}
		break;
	case TK_SO_RETRANS:
		e->retrans_seq = skops->args[0];
		e->retrans_segs = skops->args[1];
		e->retrans_err = skops->args[2];
		break;
	case TK_SO_SUMMARY:
		if (s && s->samples) {
			e->srtt_us = s->srtt_sum_us / s->samples;
			e->mdev_us = s->srtt_min_us;
			e->rtt_max_us = s->srtt_max_us;
			e->samples = s->samples;
		}
		if (s && s->established_ns)
			e->duration_ns = e->ts_ns - s->established_ns;
		break;
	}
	tk_submit(skops, e, sizeof(*e));
}

SEC("sockops")
int sockops__observe(struct bpf_sock_ops *skops)
{
	struct tk_so_sock *s;
	__u32 op = skops->op;

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		tk_so_remember_task(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		int flags = BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG;

		if (!tk_so_wanted(skops))
			break;
		if (tk_so_config.samples || tk_so_config.summary)
			flags |= BPF_SOCK_OPS_RTT_CB_FLAG;
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | flags);
		s = tk_so_sock(skops, true);
		if (s)
			s->established_ns = bpf_ktime_get_ns();
		tk_so_emit(skops, op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? TK_SO_ACTIVE : TK_SO_PASSIVE, s);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		s = tk_so_sock(skops, false);
		tk_so_emit(skops, TK_SO_STATE, s);
		if (skops->args[1] == TK_TCP_CLOSE && tk_so_config.summary)
			tk_so_emit(skops, TK_SO_SUMMARY, s);
		break;
	case BPF_SOCK_OPS_RTT_CB: {
		__u32 srtt = tk_so_rtt_srtt(skops);

		s = tk_so_sock(skops, false);
		if (s) {
			if (!s->samples || srtt < s->srtt_min_us)
				s->srtt_min_us = srtt;
			if (srtt > s->srtt_max_us)
				s->srtt_max_us = srtt;
			s->samples++;
			s->srtt_sum_us += srtt;
		}
		if (tk_so_config.samples)
			tk_so_emit(skops, TK_SO_RTT, s);
		else
			tk_so_count(TK_SO_RTT);
		break;
	}
	case BPF_SOCK_OPS_RETRANS_CB:
		tk_so_emit(skops, TK_SO_RETRANS, tk_so_sock(skops, false));
		break;
	}
	return 1;
}
