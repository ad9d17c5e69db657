/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kvmexit ABI: every type and constant shared by the BPF programs and
 * the Python side (src/kvmexit/abi.py mirrors it; tests compare both with
 * the object's BTF).  Fixed-width fields, explicit padding.
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

#define KVMEXIT_VCPU_UNKNOWN	0xffff
/* key flag: the vendor exit reason could not be read (vendor BTF missing) */
#define KVMEXIT_KEY_NO_REASON	0x1

/* slots of per-reason counts the per-CPU cache keeps for its owner thread */
#define KVMEXIT_CACHE_SLOTS	8
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

/* a slot's tag: reason | (u64)key flags << 32 | (u64)isa << 40; never EMPTY */
#define KVMEXIT_SLOT_EMPTY	0xffffffffffffffffULL

struct kvmexit_slot {
	__u64 tag;
	__u64 count;		/* cumulative count of (owner, reason) on this CPU */
};

/*
 * The per-CPU cache: the thread that last exited on this CPU and the
 * cumulative counts of up to KVMEXIT_CACHE_SLOTS of its reasons.  While a
 * (thread, reason) sits in a slot, the slot, not the hash, holds the truth
 * for this CPU; eviction writes it back.  Readers take the slot when the
 * owner and reason match, else the hash value: never both.
 */
struct kvmexit_cache {
	__u64 pid_tgid;		/* owner, valid when key.isa != 0 */
	struct kvmexit_key key;	/* owner's key; its reason field is unused */
	__u32 nslots;
	__u32 _pad;
	__u64 drops;		/* events not counted: the counts map was full */
	struct kvmexit_slot slots[KVMEXIT_CACHE_SLOTS];
};

/* --latency: time from kvm_exit to the thread's next kvm_entry */
#define KVMEXIT_LAT_SLOTS	32	/* log2 buckets of ns: slot i holds [2^i, 2^(i+1)) */

/* the exit a thread has not re-entered from yet */
struct kvmexit_pending {
	__u64 ts;		/* bpf_ktime_get_ns() at kvm_exit; 0 once consumed */
	struct kvmexit_key key;
};

struct kvmexit_lat {
	__u64 count;
	__u64 total_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 hist[KVMEXIT_LAT_SLOTS];
};

#endif /* __KVMEXIT_H */
