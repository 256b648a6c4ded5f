// SPDX-License-Identifier: GPL-2.0
/* `tracekit tcpcc load`: TCP congestion control algorithms written in BPF, registered with the
 * kernel through struct_ops (`struct tcp_congestion_ops`), plus a sockops program that puts the
 * sockets of one cgroup on an algorithm.
 *
 * The kernel calls an algorithm at fixed points of TCP's ack processing; the algorithm only
 * decides cwnd (how many segments may be in flight) and ssthresh (where slow start ends):
 *   ssthresh()    a loss was detected: the new ssthresh (the kernel then sets cwnd from it);
 *   cong_avoid()  an ack arrived that acknowledged new data: grow cwnd (or not);
 *   undo_cwnd()   the loss turned out spurious (DSACK, timestamps): the cwnd to go back to;
 *   pkts_acked(), set_state(), cwnd_event(): RTT samples and state changes, for delay-based
 *                 algorithms.
 * Each socket's private state lives in the socket itself (inet_csk_ca(), 104 bytes), so an
 * algorithm needs no map per connection.
 *
 * Both algorithms are written for this project from their papers and RFCs, not copied from the
 * kernel's tcp_cong.c / tcp_vegas.c. tk_reno follows the same rules as the kernel's reno, so
 * that it is a fair yardstick; where tk_vegas differs from the kernel's vegas is said below. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "transport.bpf.h"
#include "counts.bpf.h"
#include "tcpcc.h"

#define TK_AF_INET 2
#define TK_SOL_TCP 6
#define TK_TCP_CONGESTION 13
#define TK_TCP_INFINITE_SSTHRESH 0x7fffffff
#define TK_TCP_CA_NAME_MAX 16
/* Selectable by anyone and as the default of any network namespace, as the kernel's reno and
 * cubic are (without it only the initial namespace may make it its default: EPERM). */
#define TK_TCP_CONG_NON_RESTRICTED 0x1

char LICENSE[] SEC("license") = "GPL";

/* For the generated Rust types. */
struct tk_cc_event _tk_cc_event = {};
enum tk_cc_algo _tk_cc_algo = 0;
enum tk_cc_reason _tk_cc_reason = 0;

const volatile struct tk_cc_config tk_cc_config = {};

/* Decisions per (algorithm, reason), summed over CPUs by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TK_CC_NALGOS * TK_CC_NREASONS);
	__type(key, __u32);
	__type(value, __u64);
} tk_cc_counts SEC(".maps");

static __always_inline struct tcp_sock *tk_tcp_sk(struct sock *sk)
{
	/* struct_ops hands a struct sock the verifier already treats as the tcp_sock it is */
	return (struct tcp_sock *)sk;
}

static __always_inline __u32 tk_in_flight(const struct tcp_sock *tp)
{
	return tp->packets_out - (tp->sacked_out + tp->lost_out) + tp->retrans_out;
}

static __always_inline int tk_in_slow_start(const struct tcp_sock *tp)
{
	return tp->snd_cwnd < tp->snd_ssthresh;
}

/* Growing cwnd only makes sense when cwnd is what limits the sender (RFC 7661): an
 * application that sends less than cwnd allows would otherwise inflate it without end. In slow
 * start, cwnd may still grow to twice what was in flight at most. */
static __always_inline int tk_cwnd_limited(const struct tcp_sock *tp)
{
	if (BPF_CORE_READ_BITFIELD(tp, is_cwnd_limited))
		return 1;
	if (tk_in_slow_start(tp))
		return tp->snd_cwnd < 2 * tp->max_packets_out;
	return 0;
}

static __always_inline void tk_set_cwnd(struct tcp_sock *tp, __u32 cwnd)
{
	if (cwnd > tp->snd_cwnd_clamp)
		cwnd = tp->snd_cwnd_clamp;
	tp->snd_cwnd = cwnd;
}

/* Slow start (RFC 5681 3.1, with RFC 3465's byte counting in segments): cwnd grows by every
 * segment acked, up to ssthresh. Returns the acked segments left over past ssthresh. */
static __always_inline __u32 tk_slow_start(struct tcp_sock *tp, __u32 acked)
{
	__u32 cwnd = tp->snd_cwnd + acked;

	if (cwnd > tp->snd_ssthresh)
		cwnd = tp->snd_ssthresh;
	acked -= cwnd - tp->snd_cwnd;
	tk_set_cwnd(tp, cwnd);
	return acked;
}

/* Congestion avoidance (RFC 5681 3.1): one segment more per window of `w` segments acked.
 * snd_cwnd_cnt counts acked segments towards the next increase. */
static __always_inline void tk_additive_increase(struct tcp_sock *tp, __u32 w, __u32 acked)
{
	__u32 cnt = tp->snd_cwnd_cnt + acked;

	if (!w)
		w = 1;
	if (cnt >= w) {
		__u32 delta = cnt / w;

		cnt -= delta * w;
		tk_set_cwnd(tp, tp->snd_cwnd + delta);
	}
	tp->snd_cwnd_cnt = cnt;
}

static __always_inline void tk_count(__u32 algo, __u32 reason)
{
	tk_count_at(&tk_cc_counts, algo * TK_CC_NREASONS + reason);
}

/* Counts a decision and, with --events, reports it. The new `cwnd` and `ssthresh` are passed
 * in: at a loss or an undo the kernel stores them only after the algorithm returned. */
static __always_inline void tk_decided(void *ctx, struct sock *sk, __u32 algo, __u32 reason, __u32 cwnd_before,
				       __u32 cwnd, __u32 ssthresh, __u32 acked, __u32 min_rtt, __u32 base_rtt)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	struct tk_cc_event *e;

	tk_count(algo, reason);
	if (!tk_cc_config.events)
		return;
	e = tk_reserve(sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->sk = (__u64)sk;
	e->family = sk->__sk_common.skc_family;
	if (e->family == TK_AF_INET) {
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_rcv_saddr, 4);
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_daddr, 4);
	} else if (bpf_core_field_exists(sk->__sk_common.skc_v6_rcv_saddr)) {
		/* absent from kernels built without IPv6: the program must still load there */
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	/* At release the kernel has already given the port back (inet_put_port zeroes skc_num);
	 * inet_sport (network order) still holds it. */
	e->sport = sk->__sk_common.skc_num;
	if (!e->sport)
		e->sport = __builtin_bswap16(((struct inet_sock *)sk)->inet_sport);
	e->dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	e->algo = algo;
	e->reason = reason;
	e->cwnd_before = cwnd_before;
	e->cwnd = cwnd;
	e->ssthresh = ssthresh;
	e->srtt_us = tp->srtt_us >> 3;
	e->in_flight = tk_in_flight(tp);
	e->acked = acked;
	e->min_rtt_us = min_rtt;
	e->base_rtt_us = base_rtt;
	e->cpu = bpf_get_smp_processor_id();
	tk_submit(ctx, e, sizeof(*e));
}

/* ---- tk_reno: slow start and AIMD (RFC 5681), the smallest complete algorithm ---- */

SEC("struct_ops/tk_reno_init")
void BPF_PROG(tk_reno_init, struct sock *sk)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);

	tk_decided(ctx, sk, TK_CC_RENO, TK_CC_INIT, tp->snd_cwnd, tp->snd_cwnd, tp->snd_ssthresh, 0, 0, 0);
}

SEC("struct_ops/tk_reno_release")
void BPF_PROG(tk_reno_release, struct sock *sk)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);

	tk_decided(ctx, sk, TK_CC_RENO, TK_CC_RELEASE, tp->snd_cwnd, tp->snd_cwnd, tp->snd_ssthresh, 0, 0, 0);
}

/* Multiplicative decrease: half of cwnd, at least two segments (RFC 5681 eq. 4 takes half of
 * the data in flight; cwnd is what the kernel's reno and cubic halve as well). The kernel sets
 * ssthresh to the value returned, and cwnd from it as recovery proceeds. */
static __always_inline __u32 tk_half_cwnd(void *ctx, struct sock *sk, __u32 algo)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	__u32 half = tp->snd_cwnd >> 1;

	if (half < 2)
		half = 2;
	tk_decided(ctx, sk, algo, TK_CC_LOSS, tp->snd_cwnd, tp->snd_cwnd, half, 0, 0, 0);
	return half;
}

SEC("struct_ops/tk_reno_ssthresh")
__u32 BPF_PROG(tk_reno_ssthresh, struct sock *sk)
{
	return tk_half_cwnd(ctx, sk, TK_CC_RENO);
}

/* Reno's growth (RFC 5681): slow start below ssthresh, then one segment per window acked; only
 * while cwnd limits the sender. `min_rtt`/`base_rtt` only go into the events (vegas uses this
 * too, for rounds without enough RTT samples and while recovering). */
static __always_inline void tk_reno_grow(void *ctx, struct sock *sk, __u32 algo, __u32 acked, __u32 min_rtt,
					 __u32 base_rtt)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	__u32 before = tp->snd_cwnd;

	if (!tk_cwnd_limited(tp))
		return;
	if (tk_in_slow_start(tp)) {
		__u32 left = tk_slow_start(tp, acked);

		if (tp->snd_cwnd != before)
			tk_decided(ctx, sk, algo, TK_CC_SLOW_START, before, tp->snd_cwnd, tp->snd_ssthresh, acked,
				   min_rtt, base_rtt);
		acked = left;
		if (!acked)
			return;
		before = tp->snd_cwnd;
	}
	tk_additive_increase(tp, tp->snd_cwnd, acked);
	if (tp->snd_cwnd != before)
		tk_decided(ctx, sk, algo, TK_CC_AVOIDANCE, before, tp->snd_cwnd, tp->snd_ssthresh, acked, min_rtt,
			   base_rtt);
}

SEC("struct_ops/tk_reno_cong_avoid")
void BPF_PROG(tk_reno_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	tk_reno_grow(ctx, sk, TK_CC_RENO, acked, 0, 0);
}

/* A spurious loss: back to the cwnd before it (prior_cwnd, kept by the kernel). */
static __always_inline __u32 tk_undo(void *ctx, struct sock *sk, __u32 algo)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	__u32 cwnd = tp->snd_cwnd > tp->prior_cwnd ? tp->snd_cwnd : tp->prior_cwnd;

	tk_decided(ctx, sk, algo, TK_CC_UNDO, tp->snd_cwnd, cwnd, tp->snd_ssthresh, 0, 0, 0);
	return cwnd;
}

SEC("struct_ops/tk_reno_undo_cwnd")
__u32 BPF_PROG(tk_reno_undo_cwnd, struct sock *sk)
{
	return tk_undo(ctx, sk, TK_CC_RENO);
}

SEC(".struct_ops.link")
struct tcp_congestion_ops tk_reno = {
	.init = (void *)tk_reno_init,
	.release = (void *)tk_reno_release,
	.ssthresh = (void *)tk_reno_ssthresh,
	.cong_avoid = (void *)tk_reno_cong_avoid,
	.undo_cwnd = (void *)tk_reno_undo_cwnd,
	.flags = TK_TCP_CONG_NON_RESTRICTED,
	.name = "tk_reno",
};

/* ---- tk_vegas: delay-based (Brakmo & Peterson, "TCP Vegas", SIGCOMM 1994) ----
 *
 * Once per round trip, compare the throughput cwnd would give on an empty path (cwnd /
 * base_rtt) with what the last round got (cwnd / rtt). Their difference, in segments,
 * diff = cwnd * (rtt - base_rtt) / rtt, is how many of our segments sit in queues. Keep it
 * between alpha and beta: grow by one below alpha, shrink by one above beta. In slow start, leave
 * it as soon as more than gamma segments queue up. Losses are handled as by reno.
 *
 * Differences from the kernel's tcp_vegas.c: diff divides by rtt, the paper's "Expected -
 * Actual" in segments (the kernel divides by base_rtt, which counts more queued segments the
 * longer the queue); ssthresh is not raised towards 3/4 cwnd at the end of a round
 * (tcp_current_ssthresh), so it stays where the last loss or delay_hold put it; and avoidance
 * grows only while cwnd limits the sender. */

#define TK_VEGAS_ALPHA 2
#define TK_VEGAS_BETA 4
#define TK_VEGAS_GAMMA 1
#define TK_VEGAS_NO_RTT 0x7fffffff

struct tk_vegas {
	__u32 round_end;       /* snd_nxt when this round began: an ack beyond it ends the round */
	__u32 base_rtt;        /* lowest RTT seen (µs): the path without queues */
	__u32 min_rtt;         /* lowest RTT of this round: its queues, without delayed-ack noise */
	__u32 samples;         /* RTT samples this round */
	__u32 on;              /* 0 in loss recovery: reno's rules meanwhile */
};

static __always_inline struct tk_vegas *tk_vegas_of(struct sock *sk)
{
	return (struct tk_vegas *)((struct inet_connection_sock *)sk)->icsk_ca_priv;
}

static __always_inline void tk_vegas_new_round(struct sock *sk)
{
	struct tk_vegas *v = tk_vegas_of(sk);

	v->round_end = tk_tcp_sk(sk)->snd_nxt;
	v->min_rtt = TK_VEGAS_NO_RTT;
	v->samples = 0;
}

SEC("struct_ops/tk_vegas_init")
void BPF_PROG(tk_vegas_init, struct sock *sk)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	struct tk_vegas *v = tk_vegas_of(sk);

	v->base_rtt = TK_VEGAS_NO_RTT;
	v->on = 1;
	tk_vegas_new_round(sk);
	tk_decided(ctx, sk, TK_CC_VEGAS, TK_CC_INIT, tp->snd_cwnd, tp->snd_cwnd, tp->snd_ssthresh, 0, 0, 0);
}

SEC("struct_ops/tk_vegas_release")
void BPF_PROG(tk_vegas_release, struct sock *sk)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	struct tk_vegas *v = tk_vegas_of(sk);

	tk_decided(ctx, sk, TK_CC_VEGAS, TK_CC_RELEASE, tp->snd_cwnd, tp->snd_cwnd, tp->snd_ssthresh, 0, v->min_rtt, v->base_rtt);
}

SEC("struct_ops/tk_vegas_pkts_acked")
void BPF_PROG(tk_vegas_pkts_acked, struct sock *sk, const struct ack_sample *sample)
{
	struct tk_vegas *v = tk_vegas_of(sk);
	__s32 rtt = sample->rtt_us;

	if (rtt < 0)
		return;
	/* +1: a zero RTT on a fast path must not look like "no sample" */
	rtt += 1;
	if ((__u32)rtt < v->base_rtt)
		v->base_rtt = rtt;
	if ((__u32)rtt < v->min_rtt)
		v->min_rtt = rtt;
	v->samples++;
}

/* Recovery and loss are reno's business; delay measurements resume when the state is open. */
SEC("struct_ops/tk_vegas_set_state")
void BPF_PROG(tk_vegas_set_state, struct sock *sk, __u8 new_state)
{
	struct tk_vegas *v = tk_vegas_of(sk);

	v->on = new_state == TCP_CA_Open;
	if (v->on)
		tk_vegas_new_round(sk);
}

/* After an idle period or at the start of sending, start over, base_rtt included: the path
 * may have changed while nothing was measured (as the kernel's vegas does). */
SEC("struct_ops/tk_vegas_cwnd_event")
void BPF_PROG(tk_vegas_cwnd_event, struct sock *sk, enum tcp_ca_event event)
{
	struct tk_vegas *v = tk_vegas_of(sk);

	if (event == CA_EVENT_CWND_RESTART || event == CA_EVENT_TX_START) {
		v->base_rtt = TK_VEGAS_NO_RTT;
		v->on = 1;
		tk_vegas_new_round(sk);
	}
}

SEC("struct_ops/tk_vegas_ssthresh")
__u32 BPF_PROG(tk_vegas_ssthresh, struct sock *sk)
{
	return tk_half_cwnd(ctx, sk, TK_CC_VEGAS);
}

SEC("struct_ops/tk_vegas_undo_cwnd")
__u32 BPF_PROG(tk_vegas_undo_cwnd, struct sock *sk)
{
	return tk_undo(ctx, sk, TK_CC_VEGAS);
}

/* Reno's growth, for the rounds without enough samples and while vegas is off. */
static __always_inline void tk_vegas_reno(void *ctx, struct sock *sk, __u32 acked)
{
	struct tk_vegas *v = tk_vegas_of(sk);

	tk_reno_grow(ctx, sk, TK_CC_VEGAS, acked, v->min_rtt, v->base_rtt);
}

SEC("struct_ops/tk_vegas_cong_avoid")
void BPF_PROG(tk_vegas_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	struct tcp_sock *tp = tk_tcp_sk(sk);
	struct tk_vegas *v = tk_vegas_of(sk);
	__u32 before = tp->snd_cwnd, cwnd = tp->snd_cwnd, ssthresh_before = tp->snd_ssthresh, rtt, base, reason;
	__u64 diff;

	if (!v->on) {
		tk_vegas_reno(ctx, sk, acked);
		return;
	}
	/* Within a round: only slow start grows (exponentially, as reno's). */
	if ((__s32)(ack - v->round_end) <= 0) {
		if (tk_in_slow_start(tp) && tk_cwnd_limited(tp)) {
			tk_slow_start(tp, acked);
			if (tp->snd_cwnd != before)
				tk_decided(ctx, sk, TK_CC_VEGAS, TK_CC_SLOW_START, before, tp->snd_cwnd, tp->snd_ssthresh, acked, v->min_rtt, v->base_rtt);
		}
		return;
	}
	/* A round ended. Fewer than three samples: delayed acks may hide the queue, use reno. */
	if (v->samples <= 2) {
		tk_vegas_new_round(sk);
		tk_vegas_reno(ctx, sk, acked);
		return;
	}
	rtt = v->min_rtt;
	base = v->base_rtt;
	diff = (__u64)cwnd * (rtt - base) / rtt;
	reason = TK_CC_NREASONS;
	if (tk_in_slow_start(tp)) {
		if (diff > TK_VEGAS_GAMMA) {
			/* A queue builds already: go to avoidance at the size the path holds. */
			__u32 target = (__u64)cwnd * base / rtt + 1;

			if (target < cwnd)
				cwnd = target;
			tp->snd_ssthresh = cwnd > 2 ? cwnd - 1 : 2;
			reason = TK_CC_DELAY_HOLD;
		} else {
			/* The round's samples said no queue: keep doubling. */
			tk_slow_start(tp, acked);
			cwnd = tp->snd_cwnd;
			reason = TK_CC_SLOW_START;
		}
	} else if (diff > TK_VEGAS_BETA) {
		cwnd -= 1;
		if (tp->snd_ssthresh > cwnd)
			tp->snd_ssthresh = cwnd > 2 ? cwnd - 1 : 2;
		reason = TK_CC_DELAY_DOWN;
	} else if (diff < TK_VEGAS_ALPHA && tk_cwnd_limited(tp)) {
		cwnd += 1;
		reason = TK_CC_AVOIDANCE;
	}
	if (cwnd < 2)
		cwnd = 2;
	tk_set_cwnd(tp, cwnd);
	/* delay_hold may lower only ssthresh: a decision too */
	if (reason != TK_CC_NREASONS && (tp->snd_cwnd != before || tp->snd_ssthresh != ssthresh_before))
		tk_decided(ctx, sk, TK_CC_VEGAS, reason, before, tp->snd_cwnd, tp->snd_ssthresh, acked, rtt, base);
	tk_vegas_new_round(sk);
}

SEC(".struct_ops.link")
struct tcp_congestion_ops tk_vegas = {
	.init = (void *)tk_vegas_init,
	.release = (void *)tk_vegas_release,
	.ssthresh = (void *)tk_vegas_ssthresh,
	.cong_avoid = (void *)tk_vegas_cong_avoid,
	.undo_cwnd = (void *)tk_vegas_undo_cwnd,
	.pkts_acked = (void *)tk_vegas_pkts_acked,
	.set_state = (void *)tk_vegas_set_state,
	.cwnd_event = (void *)tk_vegas_cwnd_event,
	.flags = TK_TCP_CONG_NON_RESTRICTED,
	.name = "tk_vegas",
};

/* ---- selection for one cgroup (-- CMD, --cgroup) ----
 * Active sockets are switched before their SYN goes out; listeners when they start listening,
 * and the connections they accept inherit it. */
SEC("sockops")
int tcpcc__select(struct bpf_sock_ops *skops)
{
	char name[TK_TCP_CA_NAME_MAX] = {};
	const char *want = tk_cc_config.select == TK_CC_VEGAS ? "tk_vegas" : "tk_reno";

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB && skops->op != BPF_SOCK_OPS_TCP_LISTEN_CB)
		return 1;
	/* Byte by byte onto the stack: the helper reads a buffer of the verifier's known size. */
	for (int i = 0; i < TK_TCP_CA_NAME_MAX - 1 && want[i]; i++)
		name[i] = want[i];
	bpf_setsockopt(skops, TK_SOL_TCP, TK_TCP_CONGESTION, name, sizeof(name));
	return 1;
}
