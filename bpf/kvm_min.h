/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types kvmexit reads, declared by hand for CO-RE: only the
 * members touched, offsets irrelevant (libbpf relocates them against the
 * running kernel's BTF).  "___flavor" suffixes name older layouts of the
 * same kernel type; libbpf ignores the suffix when matching.
 */
#ifndef __KVM_MIN_H
#define __KVM_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* what bpf_helpers.h / bpf_helper_defs.h need from <linux/bpf.h> */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
struct bpf_raw_tracepoint_args { __u64 args[0]; };

#define EEXIST 17

#ifdef __TARGET_ARCH_arm64
/* a kprobe's context on arm64 (arch/arm64/include/uapi/asm/ptrace.h): a
 * fixed uapi layout, read directly (bpf_tracing.h's PT_REGS_PARM*) */
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

/* a thread's struct pid: numbers[0].nr is its id in the initial namespace
 * (what bpf_get_current_pid_tgid() gives); numbers[1] before 5.16's flexible array */
struct upid {
	int nr;
};

struct pid {
	struct upid numbers[1];
};

/* arm64's tp_btf owner (bpf_get_current_task_btf()) */
struct task_struct {
	int pid;
	int tgid;
};

struct kvm_vcpu {
	int vcpu_id;
	struct pid *pid;	/* the thread in KVM_RUN (set by kvm_vcpu_ioctl before it runs) */
};

union vmx_exit_reason {
	__u32 full;
};

/* >= 6.16: 7172c753c26a moved exit_reason into struct vcpu_vt */
struct vcpu_vt {
	union vmx_exit_reason exit_reason;
};

struct vcpu_vmx {
	struct kvm_vcpu vcpu;
	struct vcpu_vt vt;
};

/* 5.12 - 6.15 and the 5.4.y/5.10.y backports of 8e53324021645 */
struct vcpu_vmx___union {
	struct kvm_vcpu vcpu;
	union vmx_exit_reason exit_reason;
};

/* <= 5.11 */
struct vcpu_vmx___u32 {
	struct kvm_vcpu vcpu;
	__u32 exit_reason;
};

/* u32 until d7507a94a072 made it u64; the low 4 bytes hold the code */
struct vmcb_control_area {
	__u32 exit_code;
};

struct vmcb {
	struct vmcb_control_area control;
};

struct vcpu_svm {
	struct kvm_vcpu vcpu;
	struct vmcb *vmcb;
};

#pragma clang attribute pop

#endif /* __KVM_MIN_H */
