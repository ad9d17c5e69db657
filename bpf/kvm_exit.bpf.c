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
 * on kvm_pio and kvm_msr (kvmexit selftest, make bench).  Every program
 * calls count_exit(); userspace loads exactly one kvm_exit (or calibration)
 * program, and with --latency the kvm_entry program of the same kind.
 *
 * Built with -DKVMEXIT_DIRECT as well (kvm_exit_direct.bpf.o): the same
 * plus the *_direct programs of 6.17+, which call the bpf_rdonly_cast()
 * kfunc; apart, so that a libbpf without weak kfunc externs still loads
 * the CO-RE object.
 *
 * Built with -D__TARGET_ARCH_arm64 (kvm_exit_arm64.bpf.o, CO-RE): arm64's
 * kvm_exit programs, the kprobe that tells each thread's vCPU, and the
 * programs both architectures share (kvm_entry, --detail's common events).
 */
#include "kvm_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#ifndef KVMEXIT_LEGACY
#include <bpf/bpf_core_read.h>
#endif
#include "kvm_exit.h"

/* set by userspace in .rodata before load; the verifier drops the code
 * that a false `latency` or an absent filter makes unreachable */
const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_vcpu = KVMEXIT_VCPU_ANY;
const volatile __u32 targ_ntids = 0;
const volatile __u32 targ_tids[KVMEXIT_MAX_TIDS] = {};
/* the kvm_exit record has vcpu_id at offset 56 (checked against its format file) */
const volatile bool tp_has_vcpu_id = false;
/* --latency: remember each exit until the thread's next kvm_entry */
#ifndef KVMEXIT_NO_LATENCY
const volatile bool latency = false;
#else
#define latency false	/* make bench only: no latency code, what a false latency must cost */
#endif
/* --detail: remember each thread's last exit and count its KVM events under it */
const volatile bool detail = false;
/* latency || detail, set by userspace: the one flag a cache hit reads */
const volatile bool record = false;

#ifdef __TARGET_ARCH_arm64
#define KVMEXIT_ARCH_ARM64 1
#else
#define KVMEXIT_ARCH_ARM64 0
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kvmexit_cache);
} cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kvmexit_gen);
} gens SEC(".maps");

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
} lat_stats SEC(".maps");

/* --detail's counts: one writer per key, as lat_stats; max_entries set by userspace */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kvmexit_detail_key);
	__type(value, __u64);
} details SEC(".maps");

#if KVMEXIT_ARCH_ARM64
/*
 * arm64's kvm_exit names no vCPU: each thread's vCPU, recorded where KVM
 * enters KVM_RUN (the kprobe below), max_entries set by userspace.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);		/* tid */
	__type(value, __u32);		/* kvm_vcpu.vcpu_id */
} thread_vcpu SEC(".maps");

/* bumped when a thread runs a vCPU other than the one recorded (or its
 * first): a cache taken before holds a stale vCPU and is taken again */
__u32 vcpu_moves = 0;
#endif

static const __u64 zero_count;
/* the cache's key: in .rodata, no stack store on the hit path */
static const __u32 zero_key;
static const struct kvmexit_pending zero_pending;
static const struct kvmexit_lat zero_lat;

/* the element of key, created from init when missing; NULL if the map is full */
static __always_inline void *lookup_or_init(void *map, const void *key, const void *init)
{
	void *val = bpf_map_lookup_elem(map, key);
	long err;

	if (val)
		return val;
	/* another CPU may have inserted the key since: -EEXIST, look again */
	err = bpf_map_update_elem(map, key, init, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	return bpf_map_lookup_elem(map, key);
}

/* where the vCPU id of an exit is: read only for a new owner of a cache */
enum vcpu_src {
	VCPU_CONST,		/* aux is the id (or KVMEXIT_VCPU_UNKNOWN) */
	VCPU_KVM,		/* ptr is a struct kvm_vcpu * */
	VCPU_PIO,		/* ptr is kvm_pio's data, aux its size */
	VCPU_PIO_ARG,		/* ptr is where kvm_pio's data pointer is, aux its size */
	VCPU_THREAD,		/* arm64: the current thread's, from thread_vcpu */
};

/* inlined into each program, where src is a constant: the other sources' code is gone */
static __always_inline __u32 vcpu_id_of(enum vcpu_src src, const void *ptr, __u32 aux)
{
	__u32 val = 0;

	if (src == VCPU_PIO_ARG)
		bpf_probe_read_kernel(&ptr, sizeof(ptr), ptr);
	if (src == VCPU_PIO || src == VCPU_PIO_ARG) {
		bpf_probe_read_kernel(&val, sizeof(val), ptr);
		return aux == 1 ? val & 0xff : aux == 2 ? val & 0xffff : val;
	}
#ifndef KVMEXIT_LEGACY
	if (src == VCPU_KVM)
		return BPF_CORE_READ((const struct kvm_vcpu *)ptr, vcpu_id);
#endif
#if KVMEXIT_ARCH_ARM64
	if (src == VCPU_THREAD) {
		__u32 tid = (__u32)bpf_get_current_pid_tgid(), *id;

		id = bpf_map_lookup_elem(&thread_vcpu, &tid);
		return id ? *id : KVMEXIT_VCPU_UNKNOWN;
	}
#endif
	return aux;
}

/* how a program tells the event's thread, for the cache's owner word */
enum thread_src {
	THREAD_CURRENT,		/* bpf_get_current_pid_tgid(): the owner is pid_tgid */
	THREAD_VCPU_PID,	/* x86 tp_btf, make bench-real's vcpu->pid program: the vCPU's struct pid, no helper: the tid */
	THREAD_TASK,		/* arm64 tp_btf: bpf_get_current_task_btf() (inlined since 6.11), its pid and tgid */
};

/* one event, as the slow path needs it */
struct exit_event {
	__u64 owner;		/* the owner word the hit path compares (enum thread_src) */
	__u64 pid_tgid;		/* bpf_get_current_pid_tgid(): the key's thread */
	__u32 reason;
	__u8 flags;		/* KVMEXIT_KEY_* */
	__u8 isa;
	__u8 _pad[2];
	__u32 vcpu_id;		/* read only when the event's thread does not own the cache */
	__u32 _pad1;
	__u64 vcpu_tag;		/* struct kvmexit_cache's, of this event */
};

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

/* write the owner's cached counts back to the hash and empty the cache */
static __always_inline void write_back(struct kvmexit_cache *c)
{
	struct kvmexit_key key = c->key;
	__u32 n = c->nreasons;
	__u64 r, *val;

	for (int i = 0; i < KVMEXIT_CACHE_REASONS; i++) {
		if (i >= n)
			break;
		r = c->reasons[i];
		barrier_var(r);
		if (r >= KVMEXIT_DENSE)		/* never: a bound for the verifier */
			continue;
		key.reason = r;
		key.flags = 0;
		/* created when the reason was cached, never deleted while
		 * attached: the lookup cannot fail */
		val = bpf_map_lookup_elem(&counts, &key);
		if (val)
			*val = c->dense[r];
		c->dense[r] = 0;
	}
	c->nreasons = 0;
}

/*
 * The event's thread takes this CPU's cache: the filters run here only (an
 * owner has passed them already, and a thread they exclude evicts nothing).
 * The cache's gen is odd while the owner changes.  Returns false when the
 * filters exclude the thread.
 */
static __always_inline bool take_cache(struct kvmexit_cache *c, const struct exit_event *ev)
{
	__u32 tgid = ev->pid_tgid >> 32, tid = (__u32)ev->pid_tgid, vcpu_id = ev->vcpu_id, zero = 0;
	struct kvmexit_gen *g;

	if (targ_tgid && tgid != targ_tgid)
		return false;
	if (targ_ntids && !tid_wanted(tid))
		return false;
	if (targ_vcpu != KVMEXIT_VCPU_ANY && vcpu_id != targ_vcpu)
		return false;
	g = bpf_map_lookup_elem(&gens, &zero);
	if (!g)		/* never NULL (element 0 of an array); the verifier wants the test */
		return false;
	g->gen++;
	barrier();
	if (c->owner)
		write_back(c);
	c->owner = ev->owner;
	c->key.tgid = tgid;
	c->key.tid = tid;
	c->key.reason = 0;
	c->key.vcpu = vcpu_id < KVMEXIT_VCPU_UNKNOWN ? vcpu_id : KVMEXIT_VCPU_UNKNOWN;
	c->key.isa = ev->isa;
	c->key.flags = 0;
	c->vcpu_tag = ev->vcpu_tag;
	barrier();
	g->gen++;
	return true;
}

/*
 * Everything but a cache hit: a new owner for this CPU's cache, or a reason
 * the owner has not here yet (cached while there is room, else counted in
 * the hash directly).  Not inlined: every program's hit path stays small.
 * Returns 1 when the filters exclude the thread.
 */
static __noinline int count_slow(struct kvmexit_cache *c, const struct exit_event *ev)
{
	struct kvmexit_key key;
	__u64 n, r, *val;

	if ((c->owner != ev->owner || c->vcpu_tag != ev->vcpu_tag) && !take_cache(c, ev))
		return 1;
	key = c->key;
	key.reason = ev->reason;
	key.flags = ev->flags;
	val = lookup_or_init(&counts, &key, &zero_count);
	if (!val) {
		c->drops++;
		return 0;
	}
	n = c->nreasons;
	r = ev->reason;
	barrier_var(r);
	barrier_var(n);
	if (r < KVMEXIT_DENSE && !ev->flags && n < KVMEXIT_CACHE_REASONS) {
		c->dense[r] = *val + 1;
		c->reasons[n] = r;
		c->nreasons = n + 1;
	} else {
		*val += 1;
	}
	return 0;
}

/* --latency, --detail: this thread (the cache's owner now) exited for reason */
static __noinline int record_exit(struct kvmexit_cache *c, __u32 reason, __u8 flags)
{
	struct kvmexit_pending *p;
	__u32 tid = c->key.tid;

	p = lookup_or_init(&pending, &tid, &zero_pending);
	if (!p) {
		/* --detail files this thread's events as KVMEXIT_KEY_NO_EXIT then */
		if (latency)
			c->untimed++;
		return 0;
	}
	p->key = c->key;
	p->key.reason = reason;
	p->key.flags = flags;
	p->ts = latency ? bpf_ktime_get_ns() : 0;
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

/* the log-linear bucket of v ns (struct kvmexit_lat's hist) */
static __always_inline __u64 lat_slot(__u64 v)
{
	__u32 k;
	__u64 slot;

	if (v < KVMEXIT_LAT_SUB)
		return v;
	k = log2_u64(v);
	slot = (__u64)(k - KVMEXIT_LAT_SHIFT + 1) * KVMEXIT_LAT_SUB +
	       ((v >> (k - KVMEXIT_LAT_SHIFT)) & (KVMEXIT_LAT_SUB - 1));
	return slot < KVMEXIT_LAT_SLOTS ? slot : KVMEXIT_LAT_SLOTS - 1;
}

/* --latency: the thread enters the guest again; account its pending exit */
static __always_inline void count_entry(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct kvmexit_pending *p;
	struct kvmexit_cache *c;
	struct kvmexit_lat *l;
	__u64 delta, slot;
	__u32 zero = 0;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p || !p->ts)
		return;
	delta = bpf_ktime_get_ns() - p->ts;
	p->ts = 0;
	l = lookup_or_init(&lat_stats, &p->key, &zero_lat);
	if (!l) {
		c = bpf_map_lookup_elem(&cache, &zero);
		if (c)
			c->untimed++;
		return;
	}
	l->count++;
	l->total_ns += delta;
	if (!l->min_ns || delta < l->min_ns)
		l->min_ns = delta;
	if (delta > l->max_ns)
		l->max_ns = delta;
	slot = lat_slot(delta);
	/* a 64-bit mask the verifier of Linux 6.1 takes as the bound (it loses
	 * the clamp's); the barrier keeps clang from folding the mask away */
	barrier_var(slot);
	l->hist[slot & (KVMEXIT_LAT_SLOTS - 1)]++;
}

/*
 * The one counting function every program calls.  A hit (this CPU's cache
 * owned by the thread and the vCPU, the reason cached) is one array lookup,
 * three compares, a test and an increment.  thread_src: how the thread is
 * told (a helper call, or loads where make bench-real measures those cheaper).
 */
static __always_inline void count_exit(__u32 reason, __u8 flags, __u8 isa, enum vcpu_src vcpu_src,
				       const void *vcpu_ptr, __u32 vcpu_aux, enum thread_src thread_src)
{
	__u64 pid_tgid = 0, owner, tag = 0;
	struct kvmexit_cache *c;
	__u64 *n, idx;

#ifndef KVMEXIT_LEGACY
	if (thread_src == THREAD_TASK) {
		const struct task_struct *task = bpf_get_current_task_btf();

		owner = pid_tgid = (__u64)(__u32)task->tgid << 32 | (__u32)task->pid;
	} else if (thread_src == THREAD_VCPU_PID) {
		/* KVM_RUN sets vcpu->pid to the running thread before it
		 * enters the guest: its level-0 number is the thread id.
		 * Never NULL in KVM_RUN; if it were, the helper tells. */
		const struct pid *pid = ((const struct kvm_vcpu *)vcpu_ptr)->pid;

		if (pid)
			owner = (__u32)pid->numbers[0].nr;
		else
			owner = pid_tgid = bpf_get_current_pid_tgid();
	} else
#endif
	{
		owner = pid_tgid = bpf_get_current_pid_tgid();
	}
	c = bpf_map_lookup_elem(&cache, &zero_key);
	if (!c)
		return;
	/* the event's vCPU tag (struct kvmexit_cache): vcpu_src is a constant here */
	if (vcpu_src == VCPU_KVM)
		tag = (__u64)vcpu_ptr;
	else if (vcpu_src == VCPU_CONST)
		tag = vcpu_aux;
#if KVMEXIT_ARCH_ARM64
	else if (vcpu_src == VCPU_THREAD)
		tag = vcpu_moves;
#endif
	/* one register for the bound and the index: older verifiers (5.10)
	 * take a bound checked on one copy of a value as none on another */
	idx = reason;
	barrier_var(idx);
	if (c->owner == owner && c->vcpu_tag == tag && idx < KVMEXIT_DENSE && !flags) {
		n = &c->dense[idx];
		if (*n) {
			(*n)++;
			goto counted;
		}
	}
	{
		struct exit_event ev = {.owner = owner, .pid_tgid = pid_tgid, .reason = reason, .flags = flags,
					.isa = isa, .vcpu_tag = tag};

		/* the key's thread: asked for once per miss where the hit path did not */
		if (!ev.pid_tgid)
			ev.pid_tgid = bpf_get_current_pid_tgid();
		ev.vcpu_id = c->owner == owner && c->vcpu_tag == tag ? 0 : vcpu_id_of(vcpu_src, vcpu_ptr, vcpu_aux);
		if (count_slow(c, &ev))
			return;
	}
counted:
	if (record)
		record_exit(c, reason, flags);
}

/*
 * --detail: one of KVM's events on this thread, counted under the thread's
 * last exit.  With no exit seen yet (attached while the thread handled
 * one, or the pending map full), under none: KVMEXIT_KEY_NO_EXIT, where
 * the filters can tell (a vCPU filter cannot without the exit).
 */
static __always_inline void count_detail(__u32 kind, __u64 value, __u32 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct kvmexit_detail_key key = {};
	__u32 tid = (__u32)pid_tgid, zero = 0;
	struct kvmexit_pending *p;
	struct kvmexit_cache *c;
	__u64 *n;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (p) {
		key.exit = p->key;
	} else {
		if (targ_vcpu != KVMEXIT_VCPU_ANY)
			return;
		if (targ_tgid && pid_tgid >> 32 != targ_tgid)
			return;
		if (targ_ntids && !tid_wanted(tid))
			return;
		key.exit.tgid = pid_tgid >> 32;
		key.exit.tid = tid;
		key.exit.vcpu = KVMEXIT_VCPU_UNKNOWN;
		key.exit.flags = KVMEXIT_KEY_NO_EXIT;
	}
	key.value = value;
	key.kind = kind;
	key.dir = dir;
	n = lookup_or_init(&details, &key, &zero_count);
	if (n) {
		(*n)++;
		return;
	}
	c = bpf_map_lookup_elem(&cache, &zero);
	if (c)
		c->undetailed++;
}

#if !KVMEXIT_ARCH_ARM64
#ifndef KVMEXIT_LEGACY
#ifdef KVMEXIT_DIRECT
/*
 * >= 6.17: bpf_rdonly_cast() to void makes any kernel address readable by
 * a plain load (untrusted and read-only: a faulting load reads 0), where a
 * bpf_probe_read_kernel() is a helper call.  Only the *_direct programs,
 * loaded on such kernels, call it (an older verifier refuses the cast).
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#define LOAD_DIRECT(type, addr)	(*(const type *)bpf_rdonly_cast((const void *)(addr), 0))
#endif

/* >= 5.16: the reason lives only in the vendor vCPU struct; direct: read
 * by LOAD_DIRECT instead of BPF_CORE_READ's helper calls.  count_exit is
 * inlined into each branch with the isa and flags constant: no reason or
 * flag kept across its calls, the hit path straight-line */
static __always_inline void count_vendor_exit(struct kvm_vcpu *vcpu, __u32 isa, enum thread_src thread_src,
					      bool direct)
{
	/* tp_btf arguments may be NULL for the verifier since Linux 6.13:
	 * no arithmetic on vcpu before this test.  KVM never passes NULL;
	 * if it did, the exit would still be counted, as unreadable */
	if (!vcpu) {
		count_exit(0, KVMEXIT_KEY_NO_REASON, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
		return;
	}
#ifdef KVMEXIT_DIRECT
	if (direct && isa == KVMEXIT_ISA_VMX && bpf_core_type_exists(struct vcpu_vmx)) {
		__u64 vmx = (__u64)vcpu - bpf_core_field_offset(struct vcpu_vmx, vcpu);

		if (bpf_core_field_exists(struct vcpu_vmx, vt))
			count_exit(LOAD_DIRECT(__u32, vmx + bpf_core_field_offset(struct vcpu_vmx, vt.exit_reason.full)),
				   0, KVMEXIT_ISA_VMX, VCPU_KVM, vcpu, 0, thread_src);
		else if (bpf_core_field_exists(struct vcpu_vmx___union, exit_reason))
			count_exit(LOAD_DIRECT(__u32, vmx + bpf_core_field_offset(struct vcpu_vmx___union,
										     exit_reason.full)),
				   0, KVMEXIT_ISA_VMX, VCPU_KVM, vcpu, 0, thread_src);
		else
			count_exit(0, KVMEXIT_KEY_NO_REASON, KVMEXIT_ISA_VMX, VCPU_KVM, vcpu, 0, thread_src);
		return;
	}
	if (direct && isa == KVMEXIT_ISA_SVM && bpf_core_type_exists(struct vcpu_svm)) {
		__u64 svm = (__u64)vcpu - bpf_core_field_offset(struct vcpu_svm, vcpu);
		__u64 vmcb = LOAD_DIRECT(__u64, svm + bpf_core_field_offset(struct vcpu_svm, vmcb));

		count_exit(LOAD_DIRECT(__u32, vmcb + bpf_core_field_offset(struct vmcb, control.exit_code)),
			   0, KVMEXIT_ISA_SVM, VCPU_KVM, vcpu, 0, thread_src);
		return;
	}
#endif
	if (!direct && isa == KVMEXIT_ISA_VMX && bpf_core_type_exists(struct vcpu_vmx)) {
		void *vmx = (void *)vcpu - bpf_core_field_offset(struct vcpu_vmx, vcpu);
		__u32 reason = 0;
		__u8 flags = 0;

		if (bpf_core_field_exists(struct vcpu_vmx, vt))
			reason = BPF_CORE_READ((struct vcpu_vmx *)vmx, vt.exit_reason.full);
		else if (bpf_core_field_exists(struct vcpu_vmx___union, exit_reason))
			reason = BPF_CORE_READ((struct vcpu_vmx___union *)vmx, exit_reason.full);
		else if (bpf_core_field_exists(struct vcpu_vmx___u32, exit_reason))
			reason = BPF_CORE_READ((struct vcpu_vmx___u32 *)vmx, exit_reason);
		else
			flags = KVMEXIT_KEY_NO_REASON;
		count_exit(reason, flags, KVMEXIT_ISA_VMX, VCPU_KVM, vcpu, 0, thread_src);
		return;
	}
	if (!direct && isa == KVMEXIT_ISA_SVM && bpf_core_type_exists(struct vcpu_svm)) {
		struct vcpu_svm *svm = (void *)vcpu - bpf_core_field_offset(struct vcpu_svm, vcpu);

		count_exit(BPF_CORE_READ(svm, vmcb, control.exit_code), 0, KVMEXIT_ISA_SVM, VCPU_KVM, vcpu, 0,
			   thread_src);
		return;
	}
	count_exit(0, KVMEXIT_KEY_NO_REASON, isa, VCPU_KVM, vcpu, 0, thread_src);
}
#endif

/*
 * <= 5.15's prototype: the reason is the first argument, an unsigned int
 * widened to u64.  Where kernel BTF cannot tell the prototype (no module
 * BTF), attaching this program proves that the tracepoint has three
 * arguments; a first argument that does not fit in 32 bits is then no
 * reason (a pointer: another prototype), and counts as unreadable.
 * No vCPU id without CO-RE.
 */
static __always_inline void count_old_exit(__u64 reason, struct kvm_vcpu *vcpu, __u32 isa, enum thread_src thread_src)
{
	__u8 flags = reason >> 32 ? KVMEXIT_KEY_NO_REASON : 0;

	reason = flags ? 0 : reason;
#ifdef KVMEXIT_LEGACY
	count_exit(reason, flags, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
#else
	if (vcpu)
		count_exit(reason, flags, isa, VCPU_KVM, vcpu, 0, thread_src);
	else
		count_exit(reason, flags, isa, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
#endif
}

/* -- kvm_exit ---------------------------------------------------------------- */
#ifndef KVMEXIT_LEGACY
SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_vendor_exit(vcpu, isa, THREAD_CURRENT, false);
	return 0;
}

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_raw, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_vendor_exit(vcpu, isa, THREAD_CURRENT, false);
	return 0;
}

#ifdef KVMEXIT_DIRECT
/* >= 6.17: the reason read by LOAD_DIRECT, the thread asked for */
SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf_direct, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_vendor_exit(vcpu, isa, THREAD_CURRENT, true);
	return 0;
}

/* the same with no helper call at all: the thread read from vcpu->pid.
 * make bench-real measures it beside the one above; not loaded by kvmexit:
 * x86's JIT guards each typed load against user addresses, and the two it
 * needs cost what the helper call costs (equal under Bochs) */
SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf_direct_vpid, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_vendor_exit(vcpu, isa, THREAD_VCPU_PID, true);
	return 0;
}

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_raw_direct, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_vendor_exit(vcpu, isa, THREAD_CURRENT, true);
	return 0;
}
#endif

SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_btf_old, unsigned int exit_reason, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_old_exit(exit_reason, vcpu, isa, THREAD_CURRENT);
	return 0;
}
#endif

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_raw_old, __u64 exit_reason, struct kvm_vcpu *vcpu, __u32 isa)
{
	count_old_exit(exit_reason, vcpu, isa, THREAD_CURRENT);
	return 0;
}

SEC("tracepoint/kvm/kvm_exit")
int handle_kvm_exit_tp(struct kvmexit_tp_exit *ctx)
{
	count_exit(ctx->exit_reason, 0, ctx->isa, VCPU_CONST, NULL,
		   tp_has_vcpu_id ? ctx->vcpu_id : KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
	/* 1 keeps the record for other perf users (perf kvm stat, kvm_stat) */
	return 1;
}

#else
/* -- kvm_exit, arm64 ------------------------------------------------------- */
/* what arm64's record keeps of the tracepoint's arguments, as a reason */
static __always_inline __u32 arm64_reason(__u32 ret, __u32 esr_ec)
{
	__u32 code = ret & ~KVMEXIT_ARM64_SERROR_BIT;

	return code == KVMEXIT_ARM64_EXCEPTION_TRAP ? KVMEXIT_ARM64_TRAP | (esr_ec & KVMEXIT_ARM64_EC_MASK) : code;
}

SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_arm64_btf, int ret, unsigned int esr_ec)
{
	count_exit(arm64_reason(ret, esr_ec), 0, KVMEXIT_ISA_ARM64, VCPU_THREAD, NULL, 0, THREAD_CURRENT);
	return 0;
}

/* >= 6.11, where the arm64 JIT inlines bpf_get_current_task_btf(): no helper call on a hit */
SEC("tp_btf/kvm_exit")
int BPF_PROG(handle_kvm_exit_arm64_btf_direct, int ret, unsigned int esr_ec)
{
	count_exit(arm64_reason(ret, esr_ec), 0, KVMEXIT_ISA_ARM64, VCPU_THREAD, NULL, 0, THREAD_TASK);
	return 0;
}

SEC("raw_tp/kvm_exit")
int BPF_PROG(handle_kvm_exit_arm64_raw, int ret, unsigned int esr_ec)
{
	count_exit(arm64_reason(ret, esr_ec), 0, KVMEXIT_ISA_ARM64, VCPU_THREAD, NULL, 0, THREAD_CURRENT);
	return 0;
}

SEC("tracepoint/kvm/kvm_exit")
int handle_kvm_exit_arm64_tp(struct kvmexit_tp_exit_arm64 *ctx)
{
	count_exit(arm64_reason(ctx->ret, ctx->esr_ec), 0, KVMEXIT_ISA_ARM64, VCPU_THREAD, NULL, 0, THREAD_CURRENT);
	return 1;
}

/*
 * Each thread's vCPU, where KVM_RUN enters KVM (every kernel since 5.10):
 * a thread running another vCPU than before bumps vcpu_moves, so that no
 * cache keeps the old one.  A full map leaves the thread's vCPU unknown.
 */
SEC("kprobe/kvm_arch_vcpu_ioctl_run")
int BPF_KPROBE(enter_vcpu_run, struct kvm_vcpu *vcpu)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), id, *old;

	id = BPF_CORE_READ(vcpu, vcpu_id);
	old = bpf_map_lookup_elem(&thread_vcpu, &tid);
	if (old && *old == id)
		return 0;
	bpf_map_update_elem(&thread_vcpu, &tid, &id, BPF_ANY);
	__sync_fetch_and_add(&vcpu_moves, 1);
	return 0;
}

#endif

/* -- kvm_entry (--latency): whatever its prototype, only the thread matters -- */
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

#if !KVMEXIT_ARCH_ARM64
/*
 * -- calibration: kvm:kvm_pio ----------------------------------------------
 * The same counting code fed by kvm:kvm_pio, which every KVM flavour emits
 * from the vCPU thread.  Reason = port, vCPU = the value written.
 */
SEC("tracepoint/kvm/kvm_pio")
int handle_kvm_pio_tp(struct kvmexit_tp_pio *ctx)
{
	count_exit(ctx->port, 0, KVMEXIT_ISA_PIO, VCPU_CONST, NULL, ctx->val, THREAD_CURRENT);
	return 1;
}

SEC("raw_tp/kvm_pio")
int BPF_PROG(handle_kvm_pio_raw, unsigned int rw, unsigned int port, unsigned int size,
	     unsigned int count, const void *data)
{
	count_exit(port, 0, KVMEXIT_ISA_PIO, VCPU_PIO, data, size, THREAD_CURRENT);
	return 0;
}

#ifndef KVMEXIT_LEGACY
/* the verifier of Linux 6.1 refuses a tp_btf load of a void * argument
 * ("arg4 type UNKNOWN is not a struct"): data is read from the context
 * array with a probe read instead, and only when the vCPU id is needed */
SEC("tp_btf/kvm_pio")
int handle_kvm_pio_btf(__u64 *ctx)
{
	count_exit((__u32)ctx[1], 0, KVMEXIT_ISA_PIO, VCPU_PIO_ARG, &ctx[4], (__u32)ctx[2], THREAD_CURRENT);
	return 0;
}
#endif

/*
 * -- calibration: kvm:kvm_msr -----------------------------------------------
 * kvm:kvm_msr fires inside the kernel for every emulated rdmsr/wrmsr,
 * without a return to userspace, so the guest's time per exit shows what
 * counting adds (make bench).  Reason = MSR index.
 */
SEC("tracepoint/kvm/kvm_msr")
int handle_kvm_msr_tp(struct kvmexit_tp_msr *ctx)
{
	count_exit(ctx->ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
	return 1;
}

SEC("raw_tp/kvm_msr")
int BPF_PROG(handle_kvm_msr_raw, unsigned int write, __u32 ecx)
{
	count_exit(ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
	return 0;
}

#ifndef KVMEXIT_LEGACY
SEC("tp_btf/kvm_msr")
int BPF_PROG(handle_kvm_msr_btf, unsigned int write, __u32 ecx)
{
	count_exit(ecx, 0, KVMEXIT_ISA_MSR, VCPU_CONST, NULL, KVMEXIT_VCPU_UNKNOWN, THREAD_CURRENT);
	return 0;
}
#endif

#endif

/*
 * -- --detail: KVM's events while it handles an exit ------------------------
 * raw_tp in both objects: only the arguments are read, the same on every
 * kernel since 5.10 (kvm_mmio's fourth and kvm_pio's fifth changed type).
 * Attached after the exit program, so that on one tracepoint (the
 * calibration hook) the exit is recorded before its detail is counted.
 */
#if !KVMEXIT_ARCH_ARM64
SEC("raw_tp/kvm_pio")
int BPF_PROG(detail_kvm_pio, unsigned int rw, unsigned int port)
{
	count_detail(KVMEXIT_DETAIL_PIO, port, rw ? KVMEXIT_DIR_WRITE : KVMEXIT_DIR_READ);
	return 0;
}

SEC("raw_tp/kvm_msr")
int BPF_PROG(detail_kvm_msr, unsigned int write, __u32 ecx)
{
	count_detail(KVMEXIT_DETAIL_MSR, ecx, write ? KVMEXIT_DIR_WRITE : KVMEXIT_DIR_READ);
	return 0;
}

#endif

/* type: KVM_TRACE_MMIO_READ_UNSATISFIED 0, _READ 1, _WRITE 2 */
SEC("raw_tp/kvm_mmio")
int BPF_PROG(detail_kvm_mmio, int type, int len, __u64 gpa)
{
	count_detail(KVMEXIT_DETAIL_MMIO, gpa & ~0xfffULL, type == 2 ? KVMEXIT_DIR_WRITE :
		     type == 1 ? KVMEXIT_DIR_READ : KVMEXIT_DIR_READ_USER);
	return 0;
}

#if !KVMEXIT_ARCH_ARM64
SEC("raw_tp/kvm_fast_mmio")
int BPF_PROG(detail_kvm_fast_mmio, __u64 gpa)
{
	count_detail(KVMEXIT_DETAIL_MMIO, gpa & ~0xfffULL, KVMEXIT_DIR_FAST_WRITE);
	return 0;
}

SEC("raw_tp/kvm_hypercall")
int BPF_PROG(detail_kvm_hypercall, unsigned long nr)
{
	count_detail(KVMEXIT_DETAIL_HYPERCALL, nr, KVMEXIT_DIR_NONE);
	return 0;
}

#endif

#if KVMEXIT_ARCH_ARM64
SEC("raw_tp/kvm_hvc_arm64")
int BPF_PROG(detail_kvm_hvc_arm64, unsigned long vcpu_pc, unsigned long r0)
{
	count_detail(KVMEXIT_DETAIL_HYPERCALL, r0, KVMEXIT_DIR_NONE);
	return 0;
}

SEC("raw_tp/kvm_handle_sys_reg")
int BPF_PROG(detail_kvm_handle_sys_reg, unsigned long esr)
{
	count_detail(KVMEXIT_DETAIL_SYSREG, KVMEXIT_SYSREG(esr), esr & 1 ? KVMEXIT_DIR_READ : KVMEXIT_DIR_WRITE);
	return 0;
}

SEC("raw_tp/kvm_wfx_arm64")
int BPF_PROG(detail_kvm_wfx_arm64, unsigned long vcpu_pc, bool is_wfe)
{
	count_detail(KVMEXIT_DETAIL_WFX, is_wfe, KVMEXIT_DIR_NONE);
	return 0;
}
#endif

SEC("raw_tp/kvm_userspace_exit")
int BPF_PROG(detail_kvm_userspace_exit, __u32 reason)
{
	count_detail(KVMEXIT_DETAIL_USER, reason, KVMEXIT_DIR_NONE);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
