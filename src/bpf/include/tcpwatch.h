/* SPDX-License-Identifier: GPL-2.0 */
/* `tracekit tcpcc watch`: samples of each TCP connection's congestion state, taken at
 * tcp:tcp_probe. Rust reads this layout through BTF. */
#ifndef TK_TCPWATCH_H
#define TK_TCPWATCH_H

#include "transport.h"

#define TK_TCPWATCH_MAX_PORTS 8
#define TK_TCPWATCH_ALGO_LEN 16   /* TCP_CA_NAME_MAX */

/* Written into rodata before load; zero means "off" everywhere. */
struct tk_tcpwatch_config {
	__u64 every_ns;                       /* a flow's sample at least this often while it has
	                                       * traffic, besides those on a change */
	__u8 host[16];                        /* --host, already masked (IPv4 in the first 4) */
	__u8 host_mask[16];
	__u16 ports[TK_TCPWATCH_MAX_PORTS];   /* either side */
	__u16 lports[TK_TCPWATCH_MAX_PORTS];  /* local side */
	__u16 rports[TK_TCPWATCH_MAX_PORTS];  /* remote side */
	__u32 nports;
	__u32 nlports;
	__u32 nrports;
	__u16 family;                         /* AF_INET / AF_INET6; 0 = both */
	__u16 host_family;                    /* --host's family; 0 = no --host */
	__u32 all;                            /* a sample at every probe (--all) */
	__u32 _pad;
};

/* What decides whether a probe becomes a sample, per socket. */
struct tk_tcpwatch_flow {
	__u64 last_ns;                        /* time of the flow's last sample */
	__u32 cwnd;
	__u32 ssthresh;
	__u8 ca_state;
	__u8 _pad[7];
};

/* One sample: the socket's state as tcp_probe saw it, before the segment that fired it was
 * processed. Windows are in bytes, cwnd/ssthresh/the *_out counts in segments. */
struct tk_tcpwatch_event {
	__u64 ts_ns;                          /* bpf_ktime_get_ns(); first, as transport.bpf.h wants */
	__u64 skaddr;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u8 saddr[16];                       /* IPv4 (and v4-mapped IPv6) in the first 4 bytes */
	__u8 daddr[16];
	__u32 cwnd;
	__u32 ssthresh;                       /* 0x7fffffff: not set yet (TCP_INFINITE_SSTHRESH) */
	__u32 srtt_us;                        /* smoothed RTT (srtt_us >> 3) */
	__u32 rttvar_us;                      /* mdev_us >> 2, as tcp_info's tcpi_rttvar */
	__u32 min_rtt_us;                     /* windowed minimum RTT; 0xffffffff: none yet */
	__u32 snd_wnd;                        /* the peer's receive window */
	__u32 rcv_wnd;                        /* the window this end advertises */
	__u32 packets_out;
	__u32 sacked_out;
	__u32 lost_out;
	__u32 retrans_out;
	__u32 mss;                            /* mss_cache */
	__u32 total_retrans;
	__u32 cpu;
	__u16 family;
	__u16 sport;                          /* host byte order */
	__u16 dport;
	__u8 ca_state;                        /* TCP_CA_Open .. TCP_CA_Loss */
	__u8 _pad;
	char algo[TK_TCPWATCH_ALGO_LEN];      /* icsk_ca_ops->name */
};

#endif
