// SPDX-License-Identifier: GPL-2.0
/*
 * Test helper: kernel memory with known contents for BPF_PROG_TEST_RUN.
 * Userspace writes fake vendor vCPU structs into `mem`; `leak_addrs` (run
 * once with BPF_PROG_TEST_RUN, root only) stores each element's kernel
 * address in `addrs`, so kvm_exit.bpf.o's raw_tp programs can be handed a
 * "struct kvm_vcpu *" that points at them.
 */
#include "../../bpf/kvm_min.h"
#include <bpf/bpf_helpers.h>

#define FAKE_ELEMS 4
#define FAKE_SIZE 16384

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FAKE_ELEMS);
	__type(key, __u32);
	__type(value, char[FAKE_SIZE]);
} mem SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FAKE_ELEMS);
	__type(key, __u32);
	__type(value, __u64);
} addrs SEC(".maps");

SEC("raw_tp")
int leak_addrs(void *ctx)
{
	for (__u32 i = 0; i < FAKE_ELEMS; i++) {
		__u32 k = i;
		void *v = bpf_map_lookup_elem(&mem, &k);
		__u64 *a = bpf_map_lookup_elem(&addrs, &k);

		if (v && a)
			*a = (__u64)v;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
