/* SPDX-License-Identifier: GPL-2.0 */
/* The event transport's settings, shared by every tool (task and packet) and, through BTF, by
 * the Rust side. */
#ifndef TK_TRANSPORT_H
#define TK_TRANSPORT_H

/* Transport settings, written into rodata before load. */
struct tk_transport {
	__u64 wakeup_bytes;       /* ring buffer: wake the reader once this much is pending */
	__u64 wakeup_ns;          /* ... or when the last wakeup is older than this */
	__u32 use_perfbuf;        /* 1: tk_events is a perf event array */
	__u32 _pad;
};

#endif
