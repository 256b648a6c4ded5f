/* SPDX-License-Identifier: GPL-2.0 */
/* uprobe: one event per call (entry + return paired per thread), or per entry / per return. */
#ifndef TK_UPROBE_H
#define TK_UPROBE_H

#include "common.h"

#define TK_UPROBE_MAX_PROBES 64
#define TK_UPROBE_ARGS 6
#define TK_UPROBE_STRS 3
#define TK_UPROBE_STR_LEN 256

/* Which values of one probe to read as user strings; slots are given in order: string
 * arguments first, then the return value. */
struct tk_uprobe_spec {
	__u8 str_arg[TK_UPROBE_ARGS];
	__u8 str_ret;
	__u8 _pad;
};

struct tk_uprobe_config {
	struct tk_uprobe_spec probes[TK_UPROBE_MAX_PROBES];
	__u32 want_entry;     /* arguments (entry probe attached) */
	__u32 want_return;    /* return value (return probe attached) */
	__u32 have_cookie;    /* bpf_get_attach_cookie() tells the probe apart (5.15+) */
	__u32 self_tgid;      /* tracekit itself: never traced (0 = off) */
};

#define TK_UPROBE_F_ENTRY 1   /* args are valid */
#define TK_UPROBE_F_RETURN 2  /* ret is valid */

struct tk_uprobe_event {
	struct tk_hdr hdr;
	__u64 args[TK_UPROBE_ARGS];
	__u64 ret;
	__u64 latency_ns;     /* 0 unless both entry and return were seen */
	__u32 probe_id;
	__u32 flags;
	__s32 kstack;         /* --stack: ids in tk_stacks, < 0 when none */
	__s32 ustack;
	__s16 str_len[TK_UPROBE_STRS];  /* bytes read including the NUL; < 0: read failed */
	__u16 _pad;
	char str[TK_UPROBE_STRS * TK_UPROBE_STR_LEN];  /* slot i at i * TK_UPROBE_STR_LEN */
};

#endif
