# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ctypes mirrors of bpf/kvm_exit.h, under the same C names.

tests/test_objects.py compares every size and offset here with the BTF of
the built object, so the two sides cannot drift apart.
"""
import ctypes as ct

KVMEXIT_ISA_VMX = 1
KVMEXIT_ISA_SVM = 2
KVMEXIT_ISA_PIO = 3
KVMEXIT_ISA_MSR = 4
KVMEXIT_VCPU_UNKNOWN = 0xFFFF
KVMEXIT_KEY_NO_REASON = 0x1
KVMEXIT_CACHE_SLOTS = 8
KVMEXIT_MAX_TIDS = 64
VCPU_ANY = 0xFFFFFFFF
KVMEXIT_SLOT_EMPTY = 0xFFFFFFFFFFFFFFFF


class kvmexit_key(ct.Structure):
    _fields_ = [
        ("tgid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("vcpu", ct.c_uint16),
        ("isa", ct.c_uint8),
        ("flags", ct.c_uint8),
    ]


class kvmexit_slot(ct.Structure):
    _fields_ = [("tag", ct.c_uint64), ("count", ct.c_uint64)]  # tag: reason | flags << 32 | isa << 40


class kvmexit_cache(ct.Structure):
    _fields_ = [
        ("pid_tgid", ct.c_uint64),
        ("key", kvmexit_key),
        ("nslots", ct.c_uint32),
        ("_pad", ct.c_uint32),
        ("drops", ct.c_uint64),
        ("slots", kvmexit_slot * KVMEXIT_CACHE_SLOTS),
    ]


KVMEXIT_LAT_SLOTS = 32


class kvmexit_pending(ct.Structure):
    _fields_ = [("ts", ct.c_uint64), ("key", kvmexit_key)]


class kvmexit_lat(ct.Structure):
    _fields_ = [
        ("count", ct.c_uint64),
        ("total_ns", ct.c_uint64),
        ("min_ns", ct.c_uint64),
        ("max_ns", ct.c_uint64),
        ("hist", ct.c_uint64 * KVMEXIT_LAT_SLOTS),
    ]


assert ct.sizeof(kvmexit_key) == 16
assert ct.sizeof(kvmexit_pending) == 24
assert ct.sizeof(kvmexit_lat) == 32 + 8 * KVMEXIT_LAT_SLOTS
assert ct.sizeof(kvmexit_slot) == 16
assert ct.sizeof(kvmexit_cache) == 40 + 16 * KVMEXIT_CACHE_SLOTS

# program, map and .rodata names of kvm_exit.bpf.c
MAP_COUNTS, MAP_CACHE, MAP_PENDING, MAP_LATENCY = "counts", "cache", "pending", "latency"
OBJECT_NAME = "kvm_exit"  # internal maps are then "kvm_exit.rodata" on every libbpf
RODATA = OBJECT_NAME + ".rodata"
