/* SPDX-License-Identifier: GPL-2.0 */
/* Everything a task tool (kprobe, tracepoint, uprobe, ...) uses: the transport, the task
 * filter and header, `-- CMD` following, stacks and counts. Packet tools include
 * transport.bpf.h and pkt.bpf.h instead. */
#ifndef TK_COMMON_BPF_H
#define TK_COMMON_BPF_H

#include "transport.bpf.h"
#include "task.bpf.h"
#include "stacks.bpf.h"
#include "counts.bpf.h"

#endif
