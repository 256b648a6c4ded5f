/* SPDX-License-Identifier: GPL-2.0 */
/* tracepoint: the raw record of any classic tracepoint, decoded in user space from its format. */
#ifndef TK_TRACEPOINT_H
#define TK_TRACEPOINT_H

#include "common.h"

#define TK_TP_MAX 16          /* tracepoints traced at once */
#define TK_TP_DATA 256        /* bytes of the fixed record copied */
#define TK_TP_STRS 2
#define TK_TP_STR_LEN 256

#define TK_TP_STR_PTR 1       /* a `char *` field: read the string it points to */
#define TK_TP_STR_LOC 2       /* a `__data_loc char[]` field: the string is in the record */

struct tk_tp_strfield {
	__u16 offset;
	__u8 kind;
	__u8 _pad;
};

struct tk_tp_spec {
	__u32 id;             /* the event id (format's ID:) */
	__u16 size;           /* fixed part of the record */
	__u16 nstr;
	struct tk_tp_strfield str[TK_TP_STRS];
};

struct tk_tp_config {
	struct tk_tp_spec tps[TK_TP_MAX];
	__u32 ntps;
	__u32 have_cookie;    /* the attach cookie is the index in tps (5.15+); else one event */
};

/* Sent with its used length only: the header, the record, then its strings back to back
 * (most records are tens of bytes, and copying the whole buffer per event slowed the traced
 * workload measurably). */
struct tk_tp_event {
	struct tk_hdr hdr;
	__u32 tp_id;
	__s32 kstack;         /* --stack: ids in tk_stacks, < 0 when none */
	__s32 ustack;
	__u16 data_len;       /* the record: buf[0 .. data_len] */
	__s16 str_len[TK_TP_STRS];   /* bytes read including the NUL; < 0: read failed */
	__u16 str_off[TK_TP_STRS];   /* where string i starts in buf */
	__u16 _pad[3];
	__u8 buf[TK_TP_DATA + TK_TP_STRS * TK_TP_STR_LEN];
};

#endif
