/* SPDX-License-Identifier: GPL-2.0 */
/* profile: CPU samples counted per (process, kernel stack, user stack) in the kernel. */
#ifndef TK_PROFILE_H
#define TK_PROFILE_H

#include "common.h"

#define TK_PROFILE_DEPTH 127  /* frames kept per stack */

struct tk_profile_key {
	__u32 pid;
	__s32 kstack;         /* stack id in `stacks`, or a negative errno (no kernel stack) */
	__s32 ustack;
	char comm[TK_COMM_LEN];
};

#endif
