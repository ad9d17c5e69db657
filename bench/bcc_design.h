/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bcc kvmexit's counting design, re-implemented faithfully from
 * iovisor/bcc tools/kvmexit.py (HEAD 6d0a964): a PERCPU_ARRAY cache of the
 * last thread's whole exit_count in front of a PERCPU_HASH of pid_tgid ->
 * exit_count, 1024 threads.  BCC_DESIGN(name, reason_num) defines its maps
 * and name##_count(er), bcc's TRACEPOINT_PROBE(kvm, kvm_exit) body with
 * THREAD_FILTER = 0.  bcc's REASON_NUM: VMX 77 (616-byte values), SVM 0x404
 * (8224-byte values).
 */
#ifndef __BCC_DESIGN_H
#define __BCC_DESIGN_H

#define BCC_TGID_NUM 1024

#define BCC_DESIGN(name, reason_num)							\
struct name##_exit_count {								\
	__u64 exit_ct[reason_num];							\
};											\
struct name##_cache_info {								\
	__u64 cache_pid_tgid;								\
	struct name##_exit_count cache_exit_ct;						\
};											\
struct {										\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);					\
	__uint(max_entries, 1);								\
	__type(key, __u32);								\
	__type(value, struct name##_exit_count);					\
} name##_init_value SEC(".maps");							\
struct {										\
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);						\
	__uint(max_entries, BCC_TGID_NUM);						\
	__type(key, __u64);								\
	__type(value, struct name##_exit_count);					\
} name##_pcpu_kvm_stat SEC(".maps");							\
struct {										\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);					\
	__uint(max_entries, 1);								\
	__type(key, __u32);								\
	__type(value, struct name##_cache_info);					\
} name##_pcpu_cache SEC(".maps");							\
static __always_inline int name##_count(__u32 er)					\
{											\
	int cache_miss = 0;								\
	int zero = 0;									\
	struct name##_exit_count *tmp_info = NULL, *initial = NULL;			\
	struct name##_cache_info *cache_p;						\
	__u64 cur_pid_tgid;								\
											\
	if (er >= reason_num)								\
		return 0;								\
	cur_pid_tgid = bpf_get_current_pid_tgid();					\
	cache_p = bpf_map_lookup_elem(&name##_pcpu_cache, &zero);			\
	if (cache_p == NULL)								\
		return 0;								\
	if (cache_p->cache_pid_tgid == cur_pid_tgid) {					\
		tmp_info = &cache_p->cache_exit_ct;					\
	} else {									\
		cache_miss = 1;								\
		tmp_info = bpf_map_lookup_elem(&name##_pcpu_kvm_stat, &cur_pid_tgid);	\
		if (tmp_info == NULL) {							\
			initial = bpf_map_lookup_elem(&name##_init_value, &zero);	\
			if (initial == NULL)						\
				return 0;						\
			bpf_map_update_elem(&name##_pcpu_kvm_stat, &cur_pid_tgid, initial, BPF_ANY); \
			tmp_info = bpf_map_lookup_elem(&name##_pcpu_kvm_stat, &cur_pid_tgid); \
			if (tmp_info == NULL)						\
				return 0;						\
		}									\
	}										\
	if (er < reason_num) {								\
		tmp_info->exit_ct[er]++;						\
		if (cache_miss == 1) {							\
			if (cache_p->cache_pid_tgid != 0)				\
				bpf_map_update_elem(&name##_pcpu_kvm_stat, &cache_p->cache_pid_tgid, \
						    &cache_p->cache_exit_ct, BPF_ANY);	\
			cache_p->cache_pid_tgid = cur_pid_tgid;				\
			bpf_probe_read_kernel(&cache_p->cache_exit_ct, sizeof(*tmp_info), tmp_info); \
		}									\
	}										\
	return 0;									\
}

#endif /* __BCC_DESIGN_H */
