// SPDX-License-Identifier: GPL-2.0
/*
 * make bench-real's baselines on kvm:kvm_exit itself (bench/real.py), per
 * attach type: empty_exit_* (the floor of an attached program),
 * pidtgid_exit_* (only bpf_get_current_pid_tgid(), the helper every
 * thread-keyed design asks first), and bcc kvmexit's design as bcc runs it:
 * a classic tracepoint program reading the record's exit_reason, with
 * VMX's or SVM's REASON_NUM (bcc_design.h).  The same bytecode on x86 and
 * arm64: nothing here reads an argument's type.
 */
#include "../bpf/kvm_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bcc_design.h"

BCC_DESIGN(bcc_vmx, 77)
BCC_DESIGN(bcc_svm, 0x404)

/* arch/x86/kvm/trace.h's record: exit_reason at 8 on every kernel */
struct tp_exit { __u64 common; __u32 exit_reason; };

SEC("tracepoint/kvm/kvm_exit")
int empty_exit_tp(void *ctx) { return 1; }
SEC("raw_tp/kvm_exit")
int empty_exit_raw(void *ctx) { return 0; }
SEC("tp_btf/kvm_exit")
int empty_exit_btf(void *ctx) { return 0; }

__u64 last_pid_tgid;	/* where pidtgid_* keep what they asked (else it is no call) */

SEC("tracepoint/kvm/kvm_exit")
int pidtgid_exit_tp(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 1; }
SEC("raw_tp/kvm_exit")
int pidtgid_exit_raw(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 0; }
SEC("tp_btf/kvm_exit")
int pidtgid_exit_btf(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 0; }

SEC("tracepoint/kvm/kvm_exit")
int bcc_vmx_exit_tp(struct tp_exit *ctx) { return bcc_vmx_count(ctx->exit_reason); }
SEC("tracepoint/kvm/kvm_exit")
int bcc_svm_exit_tp(struct tp_exit *ctx) { return bcc_svm_count(ctx->exit_reason); }

char LICENSE[] SEC("license") = "GPL";
