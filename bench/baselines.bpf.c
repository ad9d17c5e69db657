// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark baselines on the calibration hooks (kvm:kvm_pio, kvm:kvm_msr),
 * per attach type:
 *  - empty_*: do nothing (the floor of an attached program);
 *  - pidtgid_*: only ask which thread this is (bpf_get_current_pid_tgid(),
 *    what every design that counts per thread must do first);
 *  - bcc_*: bcc kvmexit's counting design (bcc_design.h), VMX's REASON_NUM
 *    77 (616-byte values).
 * The reason is the port (kvm_pio) or the MSR index (kvm_msr) masked to 6 bits
 * (a bound the verifier sees; the workload's reasons are below 64).
 */
#include "../bpf/kvm_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bcc_design.h"

BCC_DESIGN(bcc, 77)

struct tp_pio { __u64 common; __u32 rw, port; };
struct tp_msr { __u64 common; __u32 write, ecx; };

SEC("tracepoint/kvm/kvm_pio")
int empty_pio_tp(void *ctx) { return 1; }
SEC("raw_tp/kvm_pio")
int empty_pio_raw(void *ctx) { return 0; }
SEC("tp_btf/kvm_pio")
int empty_pio_btf(void *ctx) { return 0; }
SEC("tracepoint/kvm/kvm_msr")
int empty_msr_tp(void *ctx) { return 1; }
SEC("raw_tp/kvm_msr")
int empty_msr_raw(void *ctx) { return 0; }
SEC("tp_btf/kvm_msr")
int empty_msr_btf(void *ctx) { return 0; }

__u64 last_pid_tgid;	/* where pidtgid_* keep what they asked (else it is no call) */

SEC("tracepoint/kvm/kvm_pio")
int pidtgid_pio_tp(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 1; }
SEC("raw_tp/kvm_pio")
int pidtgid_pio_raw(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 0; }
SEC("tp_btf/kvm_pio")
int pidtgid_pio_btf(void *ctx) { last_pid_tgid = bpf_get_current_pid_tgid(); return 0; }

SEC("tracepoint/kvm/kvm_pio")
int bcc_pio_tp(struct tp_pio *ctx) { bcc_count(ctx->port & 0x3f); return 0; }
SEC("raw_tp/kvm_pio")
int BPF_PROG(bcc_pio_raw, unsigned int rw, unsigned int port) { return bcc_count(port & 0x3f); }
SEC("tp_btf/kvm_pio")
int BPF_PROG(bcc_pio_btf, unsigned int rw, unsigned int port) { return bcc_count(port & 0x3f); }
SEC("tracepoint/kvm/kvm_msr")
int bcc_msr_tp(struct tp_msr *ctx) { bcc_count(ctx->ecx & 0x3f); return 0; }
SEC("raw_tp/kvm_msr")
int BPF_PROG(bcc_msr_raw, unsigned int write, __u32 ecx) { return bcc_count(ecx & 0x3f); }
SEC("tp_btf/kvm_msr")
int BPF_PROG(bcc_msr_btf, unsigned int write, __u32 ecx) { return bcc_count(ecx & 0x3f); }

char LICENSE[] SEC("license") = "GPL";
