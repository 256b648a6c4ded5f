// SPDX-License-Identifier: GPL-2.0
/* tracepoint: one generic program attached to each requested tracepoint; it copies the record
 * and the strings its fields point to, as rodata says per event id. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#define TK_EVENT_MAX 1024
#include "common.bpf.h"
#include "tracepoint.h"

const volatile struct tk_tp_config tk_tp = {};

struct tk_tp_event _tk_tp_event = {};

_Static_assert(sizeof(struct tk_tp_event) <= TK_EVENT_MAX, "built in a tk_scratch slot");

/* Reads string field f into dst; returns the bytes read including the NUL, or < 0. */
static __always_inline long read_string(char *dst, void *ctx, const volatile struct tk_tp_strfield *f)
{
	__u64 ptr = 0;
	__u32 loc = 0;

	if (f->kind == TK_TP_STR_PTR) {
		bpf_probe_read_kernel(&ptr, sizeof(ptr), ctx + f->offset);
		if ((__s64)ptr < 0)
			return bpf_probe_read_kernel_str(dst, TK_TP_STR_LEN, (void *)ptr);
		return bpf_probe_read_user_str(dst, TK_TP_STR_LEN, (void *)ptr);
	}
	if (f->kind == TK_TP_STR_LOC) {
		/* __data_loc: offset of the string in the record (low 16 bits), its length above */
		bpf_probe_read_kernel(&loc, sizeof(loc), ctx + f->offset);
		return bpf_probe_read_kernel_str(dst, TK_TP_STR_LEN, ctx + (loc & 0xffff));
	}
	return 0;
}

SEC("tracepoint")
int tp__generic(void *ctx)
{
	struct tk_tp_event *e;
	__u32 size;
	__u64 end; /* 64-bit: a bound checked on a zero-extended copy is lost on older verifiers */
	long n;
	/* The record's common_type cannot tell events apart: syscall tracepoints overwrite it
	 * with a pointer for BPF. The attach cookie does. */
	__u64 idx = tk_tp.have_cookie ? bpf_get_attach_cookie(ctx) : 0;

	if (!tk_filter_allows())
		return 0;
	if (idx >= TK_TP_MAX)
		return 0;
	e = tk_scratch_get();
	if (!e)
		return 0;
	tk_fill_hdr(&e->hdr);
	e->tp_id = tk_tp.tps[idx].id;
	tk_stack_ids(ctx, &e->kstack, &e->ustack);
	size = tk_tp.tps[idx].size;
	if (size > TK_TP_DATA)
		size = TK_TP_DATA;
	e->data_len = size;
	if (size > 0)
		bpf_probe_read_kernel(e->buf, size, ctx);
	end = size;
	for (int s = 0; s < TK_TP_STRS; s++) {
		e->str_off[s] = end;
		e->str_len[s] = 0;
		/* an unsigned bound the verifier sees as such (clang would reason its own way) */
		asm volatile("" : "+r"(end));
		if (s >= tk_tp.tps[idx].nstr || end > TK_TP_DATA + s * TK_TP_STR_LEN)
			continue;
		n = read_string((char *)e->buf + end, ctx, &tk_tp.tps[idx].str[s]);
		e->str_len[s] = n;
		if (n > 0 && n <= TK_TP_STR_LEN)
			end += n;
	}
	asm volatile("" : "+r"(end));
	if (end > sizeof(e->buf))
		end = sizeof(e->buf);
	tk_output(ctx, e, offsetof(struct tk_tp_event, buf) + end);
	tk_scratch_put();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
