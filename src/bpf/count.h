/* SPDX-License-Identifier: GPL-2.0 */
/* count: events of a tracepoint counted in the kernel per comm or per process. */
#ifndef TK_COUNT_H
#define TK_COUNT_H

#include "common.h"

struct tk_count_key {
	__u32 pid;            /* 0 when counting per comm */
	__u32 _pad;
	char comm[TK_COMM_LEN];
};

#endif
