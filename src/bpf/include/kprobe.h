/* SPDX-License-Identifier: GPL-2.0 */
/* kprobe: kernel function calls decoded by a plan built from BTF in user space. */
#ifndef TK_KPROBE_H
#define TK_KPROBE_H

#include "common.h"

#define TK_KP_SLOTS 16       /* functions traced at once: one program pair per backend each */
#define TK_KP_FETCHES 8      /* values per call: arguments and -a field paths */
#define TK_KP_DEREFS 4       /* pointer hops in one field path */
#define TK_KP_STRS 2
#define TK_KP_STR_LEN 256

/* One value: start from argument `arg`; for each of the `nderef` steps read 8 bytes (kernel
 * memory) at value + off[i]; then add `tail` (the address of an embedded char array, read as
 * a string). User space masks the result to the field's size. */
struct tk_kfetch {
	__u32 off[TK_KP_DEREFS];
	__u32 tail;
	__u8 arg;
	__u8 nderef;
	__u8 str_slot;       /* 0: a number; n: a string pointer, read into slot n - 1 */
	__u8 _pad;
};

struct tk_kfunc {
	struct tk_kfetch fetch[TK_KP_FETCHES];
	__u32 nfetch;
	__u32 nargs;         /* BTF parameter count: fentry may not read past it */
};

struct tk_kprobe_config {
	struct tk_kfunc funcs[TK_KP_SLOTS];
	__u32 want_return;
	__u32 _pad;
};

#define TK_KP_F_ENTRY 1
#define TK_KP_F_RETURN 2

struct tk_kprobe_event {
	struct tk_hdr hdr;
	__u64 vals[TK_KP_FETCHES];
	__u64 ret;
	__u64 latency_ns;
	__u32 slot;
	__u32 flags;
	__s32 kstack;         /* --stack: ids in tk_stacks, < 0 when none */
	__s32 ustack;
	__s16 str_len[TK_KP_STRS];   /* bytes read including the NUL; < 0: read failed */
	__u32 _pad;
	char str[TK_KP_STRS * TK_KP_STR_LEN];
};

#endif
