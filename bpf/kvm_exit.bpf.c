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
 * Both hold the kvm_entry programs (--latency) and the calibration programs
 * on kvm_pio and kvm_msr (kvmexit selftest, make bench).
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

/* --latency maps: max_entries set by userspace like counts' */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);		/* tid */
	__type(value, struct kvmexit_pending);
} pending SEC(".maps");

/* one writer per key (the thread itself, on one CPU at a time): no atomics needed */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kvmexit_key);
	__type(value, struct kvmexit_lat);
} latency SEC(".maps");

static const struct kvmexit_lat lat_zero;

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

/* where count_exit finds the vCPU id, read only when needed (cache miss, -v) */
enum vcpu_src {
	VCPU_CONST,		/* aux is the id (or KVMEXIT_VCPU_UNKNOWN) */
	VCPU_KVM,		/* ptr is a struct kvm_vcpu * */
	VCPU_PIO,		/* ptr is kvm_pio's data, aux its size */
};

static __always_inline __u32 vcpu_id_of(__u8 src, const void *ptr, __u32 aux)
{
	__u32 val = 0;

	if (src == VCPU_PIO) {
		bpf_probe_read_kernel(&val, sizeof(val), ptr);
		return aux == 1 ? val & 0xff : aux == 2 ? val & 0xffff : val;
	}
#ifndef KVMEXIT_LEGACY
	if (src == VCPU_KVM)
		return BPF_CORE_READ((struct kvm_vcpu *)ptr, vcpu_id);
#endif
	return aux;
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
		key.reason = (__u32)c->slots[i].tag;
		key.flags = (__u8)(c->slots[i].tag >> 32);
		/* the entry was created when the slot was filled and is
		 * never deleted while attached: the lookup cannot fail */
		val = bpf_map_lookup_elem(&counts, &key);
		if (val)
			*val = c->slots[i].count;
	}
}

/*
 * Everything but a cache hit: a new owner for this CPU's cache (filters,
 * eviction) or a new reason for the owner.  Not inlined, so that the hit
 * path of every program stays small (faster in bpf_stats while developing;
 * make bench measures the result, not the alternative).
 * how = isa | src << 8 | aux << 32.  Returns 1 when the filters exclude the thread.
 */
static __noinline int count_slow(struct kvmexit_cache *c, __u64 id, __u64 tag, const void *ptr, __u64 how)
{
	__u32 tgid = id >> 32, tid = (__u32)id, aux = how >> 32, vcpu_id, n;
	__u8 isa = how, src = how >> 8;
	struct kvmexit_key key;
	__u64 *val;

	if (c->pid_tgid != id || c->key.isa != isa) {
		/* the filters run here only: an owner has passed them
		 * already, and a thread they exclude evicts nothing */
		if (targ_tgid && tgid != targ_tgid)
			return 1;
		if (targ_ntids && !tid_wanted(tid))
			return 1;
		vcpu_id = vcpu_id_of(src, ptr, aux);
		if (targ_vcpu != VCPU_ANY && vcpu_id != targ_vcpu)
			return 1;
		if (c->key.isa)
			evict(c);
		c->pid_tgid = id;
		c->key.tgid = tgid;
		c->key.tid = tid;
		c->key.reason = 0;
		c->key.vcpu = vcpu_id < KVMEXIT_VCPU_UNKNOWN ? vcpu_id : KVMEXIT_VCPU_UNKNOWN;
		c->key.isa = isa;
		c->key.flags = 0;
		c->nslots = 0;
		for (int i = 0; i < KVMEXIT_CACHE_SLOTS; i++)
			c->slots[i].tag = KVMEXIT_SLOT_EMPTY;
	}

	/* new reason for this owner: take a slot, or count in the hash
	 * directly once all slots are taken */
	n = c->nslots;
	key = c->key;
	key.reason = (__u32)tag;
	key.flags = (__u8)(tag >> 32);
	val = counter(&key);
	if (!val) {
		c->drops++;
		return 0;
	}
	if (n < KVMEXIT_CACHE_SLOTS) {
		c->slots[n].tag = tag;
		c->slots[n].count = *val + 1;
		c->nslots = n + 1;
	} else {
		*val += 1;
	}
	return 0;
}

/* --latency: this thread (the cache's owner now) exited for tag's reason */
static __noinline int record_exit(struct kvmexit_cache *c, __u64 tag)
{
	struct kvmexit_pending *p, init = {};
	__u32 tid = c->key.tid;

	/* in place when the thread has a record already: no update's copy */
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p) {
		bpf_map_update_elem(&pending, &tid, &init, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&pending, &tid);
		if (!p)
			return 0;
	}
	p->key = c->key;
	p->key.reason = (__u32)tag;
	p->key.flags = (__u8)(tag >> 32);
	p->ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r, shift;

	r = (v > 0xffffffff) << 5;
	v >>= r;
	shift = (v > 0xffff) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xff) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xf) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	return r | (v >> 1);
}

/* --latency: the thread enters the guest again; account its pending exit */
static __always_inline void count_entry(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 slot;
	struct kvmexit_pending *p;
	struct kvmexit_lat *l;
	__u64 delta;
	long err;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p || !p->ts)
		return;
	delta = bpf_ktime_get_ns() - p->ts;
	p->ts = 0;
	l = bpf_map_lookup_elem(&latency, &p->key);
	if (!l) {
		err = bpf_map_update_elem(&latency, &p->key, &lat_zero, BPF_NOEXIST);
		if (err && err != -EEXIST)
			return;
		l = bpf_map_lookup_elem(&latency, &p->key);
		if (!l)
			return;
	}
	l->count++;
	l->total_ns += delta;
	if (!l->min_ns || delta < l->min_ns)
		l->min_ns = delta;
	if (delta > l->max_ns)
		l->max_ns = delta;
	slot = log2_u64(delta);
	if (slot >= KVMEXIT_LAT_SLOTS)
		slot = KVMEXIT_LAT_SLOTS - 1;
	/* a 64-bit mask the verifier of Linux 6.1 takes as the bound (it loses
	 * the clamp's); the barrier keeps clang from folding the mask away */
	barrier_var(slot);
	l->hist[slot & (KVMEXIT_LAT_SLOTS - 1)]++;
}

/* the one counting function every program calls */
static __always_inline void count_exit(__u32 reason, __u8 flags, __u8 isa,
				       enum vcpu_src src, const void *ptr, __u32 aux, bool lat)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 tag = reason | (__u64)flags << 32 | (__u64)isa << 40;
	struct kvmexit_cache *c;
	__u32 zero = 0;

	c = bpf_map_lookup_elem(&cache, &zero);
	if (!c)
		return;
	/* cache hit: the owner, one of its cached reasons (the tag holds the
	 * isa, so an owner's slots never match another isa; empty slots never
	 * match at all) */
	if (c->pid_tgid == id) {
		/* slot 0 first, at a constant offset: the common case */
		if (c->slots[0].tag == tag) {
			c->slots[0].count++;
			goto counted;
		}
#pragma unroll
		for (int i = 1; i < KVMEXIT_CACHE_SLOTS; i++) {
			if (c->slots[i].tag == tag) {
				c->slots[i].count++;
				goto counted;
			}
		}
	}
	if (count_slow(c, id, tag, ptr, isa | (__u64)src << 8 | (__u64)aux << 32))
		return;
counted:
	/* a compile-time constant: the programs without --latency carry no trace of it */
	if (lat)
		record_exit(c, tag);
}

#ifndef KVMEXIT_LEGACY
/* >= 5.16: the reason lives only in the vendor vCPU struct */
static __always_inline int count_vendor_exit(struct kvm_vcpu *vcpu, __u32 isa, bool lat)
{
	__u32 reason = 0, flags = 0;

	/* tp_btf arguments may be NULL for the verifier since Linux 6.13:
	 * no arithmetic on vcpu before this test.  KVM never passes NULL;
	 * if it did, the exit would still be counted, as unreadable */
	if (!vcpu) {
		count_exit(0, KVMEXIT_KEY_NO_REASON, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, lat);
		return 0;
	}
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
	count_exit(reason, flags, isa, VCPU_KVM, vcpu, 0, lat);
	return 0;
}
#endif

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

/*
 * <= 5.15's prototype: the reason is the first argument, an unsigned int
 * widened to u64.  Where kernel BTF cannot tell the prototype (no module
 * BTF), attaching this program proves that the tracepoint has three
 * arguments; a first argument that does not fit in 32 bits is then no
 * reason (a pointer: another prototype), and counts as unreadable.
 * No vCPU id without CO-RE.
 */
static __always_inline void count_old_exit(__u64 reason, struct kvm_vcpu *vcpu, __u32 isa, bool lat)
{
	__u8 flags = reason >> 32 ? KVMEXIT_KEY_NO_REASON : 0;

	reason = flags ? 0 : reason;
#ifdef KVMEXIT_LEGACY
	count_exit(reason, flags, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, lat);
#else
	if (vcpu)
		count_exit(reason, flags, isa, VCPU_KVM, vcpu, 0, lat);
	else
		count_exit(reason, flags, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, lat);
#endif
}

/*
 * The kvm_exit programs, each twice: handle_kvm_exit_<kind> counts, and
 * handle_kvm_exit_<kind>_lat also remembers the exit for --latency.
 * _old: <= 5.15's prototype, the reason as the first argument.
 */
#ifndef KVMEXIT_LEGACY
#define KVM_EXIT_BTF_PROGRAMS(sfx, lat)							\
SEC("tp_btf/kvm_exit")									\
int BPF_PROG(handle_kvm_exit_btf##sfx, struct kvm_vcpu *vcpu, __u32 isa)		\
{											\
	return count_vendor_exit(vcpu, isa, lat);					\
}											\
											\
SEC("raw_tp/kvm_exit")									\
int BPF_PROG(handle_kvm_exit_raw##sfx, struct kvm_vcpu *vcpu, __u32 isa)		\
{											\
	return count_vendor_exit(vcpu, isa, lat);					\
}											\
											\
SEC("tp_btf/kvm_exit")									\
int BPF_PROG(handle_kvm_exit_btf_old##sfx, unsigned int exit_reason,			\
	     struct kvm_vcpu *vcpu, __u32 isa)						\
{											\
	count_old_exit(exit_reason, vcpu, isa, lat);					\
	return 0;									\
}
KVM_EXIT_BTF_PROGRAMS(, false)
KVM_EXIT_BTF_PROGRAMS(_lat, true)
#endif

#define KVM_EXIT_PROGRAMS(sfx, lat)							\
SEC("raw_tp/kvm_exit")									\
int BPF_PROG(handle_kvm_exit_raw_old##sfx, __u64 exit_reason,				\
	     struct kvm_vcpu *vcpu, __u32 isa)						\
{											\
	count_old_exit(exit_reason, vcpu, isa, lat);					\
	return 0;									\
}											\
											\
SEC("tracepoint/kvm/kvm_exit")								\
int handle_kvm_exit_tp##sfx(struct kvmexit_tp_exit *ctx)				\
{											\
	count_exit(ctx->exit_reason, 0, ctx->isa, VCPU_CONST, NULL,			\
		   tp_has_vcpu_id ? ctx->vcpu_id : KVMEXIT_VCPU_UNKNOWN, lat);		\
	/* 1 keeps the record for other perf users (perf kvm stat, kvm_stat) */	\
	return 1;									\
}
KVM_EXIT_PROGRAMS(, false)
KVM_EXIT_PROGRAMS(_lat, true)

/* --latency: kvm_entry, whatever its prototype (only the current thread matters) */
#ifndef KVMEXIT_LEGACY
SEC("tp_btf/kvm_entry")
int BPF_PROG(handle_kvm_entry_btf)
{
	count_entry();
	return 0;
}
#endif

SEC("raw_tp/kvm_entry")
int BPF_PROG(handle_kvm_entry_raw)
{
	count_entry();
	return 0;
}

SEC("tracepoint/kvm/kvm_entry")
int handle_kvm_entry_tp(void *ctx)
{
	count_entry();
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
	count_exit(ctx->port, 0, KVMEXIT_ISA_PIO, VCPU_CONST, NULL, ctx->val, false);
	return 1;
}

SEC("raw_tp/kvm_pio")
int BPF_PROG(handle_kvm_pio_raw, unsigned int rw, unsigned int port, unsigned int size,
	     unsigned int count, const void *data)
{
	count_exit(port, 0, KVMEXIT_ISA_PIO, VCPU_PIO, data, size, false);
	return 0;
}

#ifndef KVMEXIT_LEGACY
/* the verifier of Linux 6.1 refuses a tp_btf load of a void * argument
 * ("arg4 type UNKNOWN is not a struct"): data is read from the context
 * array with a probe read instead */
SEC("tp_btf/kvm_pio")
int handle_kvm_pio_btf(__u64 *ctx)
{
	const void *data = NULL;

	bpf_probe_read_kernel(&data, sizeof(data), &ctx[4]);
	count_exit((__u32)ctx[1], 0, KVMEXIT_ISA_PIO, VCPU_PIO, data, (__u32)ctx[2], false);
	return 0;
}
#endif

/*
 * Second calibration hook: kvm:kvm_msr fires inside the kernel for every
 * emulated rdmsr/wrmsr, without a return to userspace, so the guest's time
 * per exit shows what counting adds (make bench).  Reason = MSR index.
 */
struct kvmexit_tp_msr {
	__u64 common;
	__u32 write;		/* 8 */
	__u32 ecx;		/* 12 */
};

SEC("tracepoint/kvm/kvm_msr")
int handle_kvm_msr_tp(struct kvmexit_tp_msr *ctx)
{
	count_exit(ctx->ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, false);
	return 1;
}

SEC("raw_tp/kvm_msr")
int BPF_PROG(handle_kvm_msr_raw, unsigned int write, __u32 ecx)
{
	count_exit(ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, false);
	return 0;
}

#ifndef KVMEXIT_LEGACY
SEC("tp_btf/kvm_msr")
int BPF_PROG(handle_kvm_msr_btf, unsigned int write, __u32 ecx)
{
	count_exit(ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, false);
	return 0;
}
#endif

char LICENSE[] SEC("license") = "GPL";
