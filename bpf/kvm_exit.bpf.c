// SPDX-License-Identifier: GPL-2.0
/*
 * kvmexit: count KVM exits per thread, exit reason, isa and vCPU.
 *
 * Built twice from this file:
 *  - kvm_exit.bpf.o (CO-RE): tp_btf and raw_tp programs for both kvm_exit
 *    prototypes, reading the reason from the vendor vCPU struct, plus the
 *    classic tracepoint;
 *  - kvm_exit_legacy.bpf.o (-DKVMEXIT_LEGACY): no CO-RE relocation at all,
 *    so it loads where kernel BTF is missing or unreadable by this libbpf.
 * Both hold the kvm_pio calibration programs (kvmexit selftest).
 */
#include "kvm_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#ifndef KVMEXIT_LEGACY
#include <bpf/bpf_core_read.h>
#endif
#include "kvm_exit.h"

#define VCPU_ANY 0xffffffff

/* filters, written by userspace into .rodata before load */
const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_vcpu = VCPU_ANY;
const volatile __u32 targ_ntids = 0;
const volatile __u32 targ_tids[KVMEXIT_MAX_TIDS] = {};
/* the kvm_exit record has vcpu_id at offset 56 (checked against its format file) */
const volatile bool tp_has_vcpu_id = false;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kvmexit_cache);
} cache SEC(".maps");

/* max_entries is set by userspace at load time (--max-entries) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kvmexit_key);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline bool tid_wanted(__u32 tid)
{
	for (int i = 0; i < KVMEXIT_MAX_TIDS; i++) {
		if (i >= targ_ntids)
			break;
		if (targ_tids[i] == tid)
			return true;
	}
	return false;
}

static __always_inline __u32 vcpu_id_of(struct kvm_vcpu *vcpu, __u32 tp_vcpu)
{
#ifndef KVMEXIT_LEGACY
	if (vcpu)
		return BPF_CORE_READ(vcpu, vcpu_id);
#endif
	return tp_vcpu;
}

/* find or create the hash counter of one (thread, reason) */
static __always_inline __u64 *counter(struct kvmexit_key *key)
{
	__u64 zero = 0, *val;
	long err;

	val = bpf_map_lookup_elem(&counts, key);
	if (val)
		return val;
	/* only this thread inserts its own keys, so -EEXIST cannot happen
	 * in practice; tolerate it anyway */
	err = bpf_map_update_elem(&counts, key, &zero, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	return bpf_map_lookup_elem(&counts, key);
}

/* write the departing owner's cached counts back to the hash */
static __always_inline void evict(struct kvmexit_cache *c)
{
	struct kvmexit_key key = c->key;
	__u32 n = c->nslots;
	__u64 *val;

	for (int i = 0; i < KVMEXIT_CACHE_SLOTS; i++) {
		if (i >= n)
			break;
		key.reason = c->slots[i].reason;
		key.flags = c->slots[i].flags;
		/* the entry was created when the slot was filled and is
		 * never deleted while attached: the lookup cannot fail */
		val = bpf_map_lookup_elem(&counts, &key);
		if (val)
			*val = c->slots[i].count;
	}
}

/* the one counting function every program calls */
static __always_inline void count_exit(__u32 reason, __u32 flags, __u8 isa,
				       struct kvm_vcpu *vcpu, __u32 tp_vcpu)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	__u32 vcpu_id = KVMEXIT_VCPU_UNKNOWN, zero = 0, n;
	struct kvmexit_cache *c;
	struct kvmexit_key key;
	__u64 *val;

	/* filters */
	if (targ_tgid && tgid != targ_tgid)
		return;
	if (targ_ntids && !tid_wanted(tid))
		return;
	if (targ_vcpu != VCPU_ANY) {
		vcpu_id = vcpu_id_of(vcpu, tp_vcpu);
		if (vcpu_id != targ_vcpu)
			return;
	}

	c = bpf_map_lookup_elem(&cache, &zero);
	if (!c)
		return;

	/* cache miss: another thread exited last on this CPU */
	if (c->pid_tgid != id || c->key.isa != isa) {
		if (c->key.isa)
			evict(c);
		if (targ_vcpu == VCPU_ANY)
			vcpu_id = vcpu_id_of(vcpu, tp_vcpu);
		c->pid_tgid = id;
		c->key.tgid = tgid;
		c->key.tid = tid;
		c->key.reason = 0;
		c->key.vcpu = vcpu_id < KVMEXIT_VCPU_UNKNOWN ? vcpu_id : KVMEXIT_VCPU_UNKNOWN;
		c->key.isa = isa;
		c->key.flags = 0;
		c->nslots = 0;
	}

	/* cache hit: one of the owner's cached reasons */
	n = c->nslots;
	for (int i = 0; i < KVMEXIT_CACHE_SLOTS; i++) {
		if (i >= n)
			break;
		if (c->slots[i].reason == reason && c->slots[i].flags == flags) {
			c->slots[i].count++;
			return;
		}
	}

	/* new reason for this owner: take a slot, or count in the hash
	 * directly once all slots are taken */
	key = c->key;
	key.reason = reason;
	key.flags = flags;
	val = counter(&key);
	if (!val) {
		c->drops++;
		return;
	}
	if (n < KVMEXIT_CACHE_SLOTS) {
		c->slots[n].reason = reason;
		c->slots[n].flags = flags;
		c->slots[n].count = *val + 1;
		c->nslots = n + 1;
	} else {
		*val += 1;
	}
}

#ifndef KVMEXIT_LEGACY
/* >= 5.16: the reason lives only in the vendor vCPU struct */
static __always_inline int count_vendor_exit(struct kvm_vcpu *vcpu, __u32 isa)
{
	__u32 reason = 0, flags = 0;

	if (isa == KVMEXIT_ISA_VMX && bpf_core_type_exists(struct vcpu_vmx)) {
		void *vmx = (void *)vcpu - bpf_core_field_offset(struct vcpu_vmx, vcpu);

		if (bpf_core_field_exists(struct vcpu_vmx, vt))
			reason = BPF_CORE_READ((struct vcpu_vmx *)vmx, vt.exit_reason.full);
		else if (bpf_core_field_exists(struct vcpu_vmx___union, exit_reason))
			reason = BPF_CORE_READ((struct vcpu_vmx___union *)vmx, exit_reason.full);
		else if (bpf_core_field_exists(struct vcpu_vmx___u32, exit_reason))
			reason = BPF_CORE_READ((struct vcpu_vmx___u32 *)vmx, exit_reason);
		else
			flags = KVMEXIT_KEY_NO_REASON;
	} else if (isa == KVMEXIT_ISA_SVM && bpf_core_type_exists(struct vcpu_svm)) {
		struct vcpu_svm *svm = (void *)vcpu - bpf_core_field_offset(struct vcpu_svm, vcpu);

		reason = BPF_CORE_READ(svm, vmcb, control.exit_code);
	} else {
		flags = KVMEXIT_KEY_NO_REASON;
	}
	count_exit(reason, flags, isa, vcpu, 0);
	return 0;
}

SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf, struct kvm_vcpu *vcpu, __u32 isa)
{
	return count_vendor_exit(vcpu, isa);
}

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_raw, struct kvm_vcpu *vcpu, __u32 isa)
{
	return count_vendor_exit(vcpu, isa);
}

/* <= 5.15: the reason is the first argument */
SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf_old, unsigned int exit_reason, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_exit(exit_reason, 0, isa, vcpu, 0);
	return 0;
}
#endif

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_raw_old, unsigned int exit_reason, struct kvm_vcpu *vcpu, __u32 isa)
{
#ifdef KVMEXIT_LEGACY
	count_exit(exit_reason, 0, isa, NULL, KVMEXIT_VCPU_UNKNOWN);
#else
	count_exit(exit_reason, 0, isa, vcpu, 0);
#endif
	return 0;
}

/* the classic tracepoint record, at the offsets of arch/x86/kvm/trace.h;
 * userspace checks them against events/kvm/kvm_exit/format before use */
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
	__u32 vcpu_id;		/* 56 */
};

SEC("tracepoint/kvm/kvm_exit")
int handle_kvm_exit_tp(struct kvmexit_tp_exit *ctx)
{
	count_exit(ctx->exit_reason, 0, ctx->isa, NULL,
		   tp_has_vcpu_id ? ctx->vcpu_id : KVMEXIT_VCPU_UNKNOWN);
	/* 1 keeps the record for other perf users (perf kvm stat, kvm_stat) */
	return 1;
}

/*
 * Calibration hook: the same counting code fed by kvm:kvm_pio, which every
 * KVM flavour emits from the vCPU thread.  Reason = port, vCPU = value.
 */
struct kvmexit_tp_pio {
	__u64 common;
	__u32 rw;		/* 8 */
	__u32 port;		/* 12 */
	__u32 size;		/* 16 */
	__u32 count;		/* 20 */
	__u32 val;		/* 24 */
};

SEC("tracepoint/kvm/kvm_pio")
int handle_kvm_pio_tp(struct kvmexit_tp_pio *ctx)
{
	count_exit(ctx->port, 0, KVMEXIT_ISA_PIO, NULL, ctx->val);
	return 1;
}

static __always_inline void count_pio(__u32 port, __u32 size, const void *data)
{
	__u32 val = 0;

	bpf_probe_read_kernel(&val, sizeof(val), data);
	if (size == 1)
		val &= 0xff;
	else if (size == 2)
		val &= 0xffff;
	count_exit(port, 0, KVMEXIT_ISA_PIO, NULL, val);
}

SEC("raw_tp/kvm_pio")
int BPF_PROG(handle_kvm_pio_raw, unsigned int rw, unsigned int port, unsigned int size,
	     unsigned int count, const void *data)
{
	count_pio(port, size, data);
	return 0;
}

#ifndef KVMEXIT_LEGACY
SEC("tp_btf/kvm_pio")
int BPF_PROG(handle_kvm_pio_btf, unsigned int rw, unsigned int port, unsigned int size,
	     unsigned int count, const void *data)
{
	count_pio(port, size, data);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
