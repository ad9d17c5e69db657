/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kvmexit contract: every type, constant and record layout shared by
 * the BPF programs and the Python side (src/kvmexit/abi.py mirrors it;
 * tests/test_objects.py compares both with the object's BTF).  Fixed-width
 * fields, explicit padding.
 */
#ifndef __KVMEXIT_H
#define __KVMEXIT_H

/* struct kvm_exit's isa field (arch/x86/kvm/trace.h) */
#define KVMEXIT_ISA_VMX		1
#define KVMEXIT_ISA_SVM		2
/* synthetic isa of the calibration hook: reason = I/O port of kvm:kvm_pio */
#define KVMEXIT_ISA_PIO		3
/* synthetic isa of the second calibration hook: reason = MSR of kvm:kvm_msr */
#define KVMEXIT_ISA_MSR		4
/*
 * arm64 (arch/arm64/kvm/trace_arm.h: kvm_exit(int ret, unsigned int esr_ec,
 * unsigned long vcpu_pc) on every kernel since 5.10).  The reason is what
 * the record keeps: ARM_EXCEPTION_CODE(ret) (the SError flag, bit 31,
 * cleared), and for a trap (code 2) the ESR exception class as
 * KVMEXIT_ARM64_TRAP | esr_ec.  Codes: IRQ 0, EL1_SERROR 1, IL 3, HYP_GONE
 * 0xbadca11 (arch/arm64/include/asm/kvm_asm.h).
 */
#define KVMEXIT_ISA_ARM64	5
#define KVMEXIT_ARM64_SERROR_BIT	0x80000000U
#define KVMEXIT_ARM64_EXCEPTION_TRAP	2
#define KVMEXIT_ARM64_TRAP	0x100
#define KVMEXIT_ARM64_EC_MASK	0x3f

#define KVMEXIT_VCPU_UNKNOWN	0xffff
/* targ_vcpu when no vCPU is filtered on */
#define KVMEXIT_VCPU_ANY	0xffffffff
/* key flag: the vendor exit reason could not be read (vendor BTF missing) */
#define KVMEXIT_KEY_NO_REASON	0x1
/* key flag (details only): no exit of the thread was seen before the event */
#define KVMEXIT_KEY_NO_EXIT	0x2

/*
 * Reasons below KVMEXIT_DENSE (every VMX basic reason, every SVM code up to
 * VMGEXIT 0x403) are counted, for the thread that owns a CPU's cache, in a
 * dense array indexed by the reason; up to KVMEXIT_CACHE_REASONS of them
 * per owner.  Others (VMX reasons with flag bits, SVM's VMGEXIT codes, an
 * owner's further reasons) are counted in the hash directly.
 */
#define KVMEXIT_DENSE		0x410
#define KVMEXIT_CACHE_REASONS	8
/* most threads one -T filter can name */
#define KVMEXIT_MAX_TIDS	64

/* one counter: one thread, one exit reason */
struct kvmexit_key {
	__u32 tgid;
	__u32 tid;
	__u32 reason;		/* full 32-bit reason, VMX flag bits included */
	__u16 vcpu;		/* kvm_vcpu.vcpu_id or KVMEXIT_VCPU_UNKNOWN */
	__u8 isa;		/* KVMEXIT_ISA_* */
	__u8 flags;		/* KVMEXIT_KEY_* */
};

/*
 * The per-CPU cache: the thread that last exited on this CPU and the
 * cumulative counts of its reasons that sit here.  While a (thread,
 * reason) sits here, the cache, not the hash, holds the truth for this
 * CPU; eviction writes it back.  Readers take the cache when owner and
 * reason match, else the hash value: never both.  The owner is the thread
 * as bpf_get_current_pid_tgid() names it (the tid alone where a program
 * reads it from the vCPU), never 0 for a vCPU thread; no isa in it: one
 * exit program is attached at a time, and a host's exits have one isa.
 */
struct kvmexit_cache {
	__u64 owner;		/* the thread, 0: none yet */
	struct kvmexit_key key;	/* the owner's; reason and flags unused */
	__u64 drops;		/* events not counted: the counts map was full */
	__u64 untimed;		/* --latency: exits left without a time, a latency map was full */
	__u64 undetailed;	/* --detail: events not counted, the details map was full */
	__u32 nreasons;		/* entries of reasons[] in use */
	__u16 reasons[KVMEXIT_CACHE_REASONS];	/* the owner's reasons in dense[] */
	__u32 _pad;
	/* the owner's vCPU as its events name it when it took the cache: the
	 * struct kvm_vcpu pointer (tp_btf, raw_tp), the record's vcpu_id
	 * (tracepoint), arm64's vcpu_moves; another one takes the cache again,
	 * so a thread that runs another vCPU never counts under the old one */
	__u64 vcpu_tag;
	__u64 dense[KVMEXIT_DENSE];	/* count of (owner, reason); 0: not here */
};

/*
 * Per CPU, gen is odd while the program changes the cache's owner (write
 * back, clear, take over) and even otherwise: a reader that sees the same
 * even gen before and after copying the cache has a copy of one owner.
 */
struct kvmexit_gen {
	__u64 gen;
};

/*
 * --latency: time from kvm_exit to the thread's next kvm_entry, in ns, in
 * log-linear buckets: KVMEXIT_LAT_SUB per power of two.  Slot s < SUB
 * holds exactly s ns; above, with k = log2(v) and SHIFT = log2(SUB),
 * slot (k - SHIFT + 1) * SUB + ((v >> (k - SHIFT)) & (SUB - 1)) holds v:
 * a bucket [lo, lo + lo / (SUB + j)) whose width is at most 1/SUB of its
 * low end.  The last slot also holds everything above (>= 7.5 s).
 */
#define KVMEXIT_LAT_SHIFT	2
#define KVMEXIT_LAT_SUB		(1 << KVMEXIT_LAT_SHIFT)
#define KVMEXIT_LAT_SLOTS	128

/* the thread's last exit: --latency times it until the thread's next
 * kvm_entry, --detail files the thread's KVM events under it */
struct kvmexit_pending {
	__u64 ts;		/* bpf_ktime_get_ns() at kvm_exit (--latency); 0 once consumed */
	struct kvmexit_key key;
};

struct kvmexit_lat {
	__u64 count;
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 hist[KVMEXIT_LAT_SLOTS];
};

/*
 * --detail: what an exit was about, from KVM's own tracepoints, which fire
 * on the vCPU thread while it handles the exit (before its next entry):
 * counted under the thread's last exit (struct kvmexit_pending's key).
 */
#define KVMEXIT_DETAIL_PIO	1	/* kvm:kvm_pio: value = port */
#define KVMEXIT_DETAIL_MSR	2	/* kvm:kvm_msr: value = MSR index */
#define KVMEXIT_DETAIL_MMIO	3	/* kvm:kvm_mmio, kvm:kvm_fast_mmio: value = guest-physical page */
#define KVMEXIT_DETAIL_HYPERCALL 4	/* kvm:kvm_hypercall: value = hypercall number */
#define KVMEXIT_DETAIL_USER	5	/* kvm:kvm_userspace_exit: value = KVM_EXIT_* */
/* arm64 (kvm:kvm_hvc_arm64 counts as KVMEXIT_DETAIL_HYPERCALL: value = x0, the SMCCC function id) */
#define KVMEXIT_DETAIL_SYSREG	6	/* kvm:kvm_handle_sys_reg: value = KVMEXIT_SYSREG() of the ESR */
#define KVMEXIT_DETAIL_WFX	7	/* kvm:kvm_wfx_arm64: value = 0 WFI, 1 WFE */

/* a system register as Linux's sys_reg() encodes it, from a SYS64 trap's ESR (ISS: Op0 21:20,
 * Op2 19:17, Op1 16:14, CRn 13:10, CRm 4:1, direction 0 = 1 for a read) */
#define KVMEXIT_SYSREG(esr)	((((esr) >> 20 & 3) << 19) | (((esr) >> 14 & 7) << 16) | \
				 (((esr) >> 10 & 0xf) << 12) | (((esr) >> 1 & 0xf) << 8) | (((esr) >> 17 & 7) << 5))

#define KVMEXIT_DIR_READ	0	/* in, rdmsr, MMIO read done */
#define KVMEXIT_DIR_WRITE	1	/* out, wrmsr, MMIO write */
#define KVMEXIT_DIR_NONE	2	/* hypercalls, exits to userspace */
#define KVMEXIT_DIR_READ_USER	3	/* MMIO read handed to userspace (READ follows when done) */
#define KVMEXIT_DIR_FAST_WRITE	4	/* MMIO write of the fast path (kvm_fast_mmio: ioeventfd) */

struct kvmexit_detail_key {
	struct kvmexit_key exit;	/* the exit it came under; flags KVMEXIT_KEY_NO_EXIT: none seen */
	__u64 value;
	__u32 kind;		/* KVMEXIT_DETAIL_* */
	__u32 dir;		/* KVMEXIT_DIR_* */
};

/*
 * Classic tracepoint records the programs read, at the offsets of
 * arch/x86/kvm/trace.h; userspace checks them against each event's format
 * file before it attaches a tracepoint program (kernel.check_tp_layout).
 */
struct kvmexit_tp_exit {
	__u64 common;
	__u32 exit_reason;	/* 8 */
	__u32 _pad0;
	__u64 guest_rip;	/* 16 */
	__u32 isa;		/* 24 */
	__u32 _pad1;
	__u64 info1;		/* 32 */
	__u64 info2;		/* 40 */
	__u32 intr_info;	/* 48 */
	__u32 error_code;	/* 52 */
	__u32 vcpu_id;		/* 56: not in every kernel (tp_has_vcpu_id) */
	__u32 _pad2;
};

/* arm64's kvm_exit record (the same on every kernel since 5.10) */
struct kvmexit_tp_exit_arm64 {
	__u64 common;
	__s32 ret;		/* 8: ARM_EXCEPTION_CODE(ret) */
	__u32 esr_ec;		/* 12: 0 unless ret is a trap */
	__u64 vcpu_pc;		/* 16 */
};

struct kvmexit_tp_pio {
	__u64 common;
	__u32 rw;		/* 8 */
	__u32 port;		/* 12 */
	__u32 size;		/* 16 */
	__u32 count;		/* 20 */
	__u32 val;		/* 24 */
	__u32 _pad;
};

struct kvmexit_tp_msr {
	__u64 common;
	__u32 write;		/* 8 */
	__u32 ecx;		/* 12 */
};

#endif /* __KVMEXIT_H */
