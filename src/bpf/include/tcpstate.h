/* SPDX-License-Identifier: GPL-2.0 */
/* tcpstate: one event per TCP state transition. Rust reads this layout through BTF. */
#ifndef TK_TCPSTATE_H
#define TK_TCPSTATE_H

#include "common.h"

#define TK_TCPSTATE_MAX_PORTS 8

struct tk_tcpstate_config {
	__u16 lports[TK_TCPSTATE_MAX_PORTS];  /* local ports to keep; empty = all */
	__u16 rports[TK_TCPSTATE_MAX_PORTS];  /* remote ports to keep; empty = all */
	__u32 nlports;
	__u32 nrports;
	__u16 family;                         /* AF_INET / AF_INET6; 0 = both */
	__u8 _pad[6];
};

struct tk_tcpstate_event {
	struct tk_hdr hdr;
	__u64 skaddr;
	__u64 delta_ns;                       /* time spent in oldstate; 0 = unknown */
	__u8 saddr[16];                       /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__s32 oldstate;
	__s32 newstate;
	__u16 family;
	__u16 sport;                          /* host byte order */
	__u16 dport;
	__u8 _pad[2];
};

#endif
