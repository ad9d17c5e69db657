# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ctypes mirrors of bpf/kvm_exit.h, under the same C names, and the names
of the object's programs, maps and .rodata variables.

tests/test_objects.py compares every size and offset here with the BTF of
the built object, so the two sides cannot drift apart.
"""
import ctypes as ct

KVMEXIT_ISA_VMX = 1
KVMEXIT_ISA_SVM = 2
KVMEXIT_ISA_PIO = 3
KVMEXIT_ISA_MSR = 4
KVMEXIT_ISA_ARM64 = 5
KVMEXIT_ARM64_SERROR_BIT = 0x80000000
KVMEXIT_ARM64_EXCEPTION_TRAP = 2
KVMEXIT_ARM64_TRAP = 0x100
KVMEXIT_ARM64_EC_MASK = 0x3F
KVMEXIT_VCPU_UNKNOWN = 0xFFFF
KVMEXIT_VCPU_ANY = 0xFFFFFFFF
KVMEXIT_KEY_NO_REASON = 0x1
KVMEXIT_KEY_NO_EXIT = 0x2
KVMEXIT_DENSE = 0x410
KVMEXIT_CACHE_REASONS = 8
KVMEXIT_MAX_TIDS = 64
KVMEXIT_LAT_SHIFT = 2
KVMEXIT_LAT_SUB = 1 << KVMEXIT_LAT_SHIFT
KVMEXIT_LAT_SLOTS = 128
KVMEXIT_DETAIL_PIO, KVMEXIT_DETAIL_MSR, KVMEXIT_DETAIL_MMIO, KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DETAIL_USER = 1, 2, 3, 4, 5
KVMEXIT_DETAIL_SYSREG, KVMEXIT_DETAIL_WFX = 6, 7
KVMEXIT_DIR_READ, KVMEXIT_DIR_WRITE, KVMEXIT_DIR_NONE, KVMEXIT_DIR_READ_USER, KVMEXIT_DIR_FAST_WRITE = 0, 1, 2, 3, 4


def sysreg_of_esr(esr):
    """KVMEXIT_SYSREG(): Linux's sys_reg() encoding of a SYS64 trap's register (pure)."""
    return ((esr >> 20 & 3) << 19 | (esr >> 14 & 7) << 16 | (esr >> 10 & 0xF) << 12 | (esr >> 1 & 0xF) << 8
            | (esr >> 17 & 7) << 5)


class kvmexit_key(ct.Structure):
    _fields_ = [
        ("tgid", ct.c_uint32),
        ("tid", ct.c_uint32),
        ("reason", ct.c_uint32),
        ("vcpu", ct.c_uint16),
        ("isa", ct.c_uint8),
        ("flags", ct.c_uint8),
    ]


class kvmexit_cache(ct.Structure):
    _fields_ = [
        ("owner", ct.c_uint64),
        ("key", kvmexit_key),
        ("drops", ct.c_uint64),
        ("untimed", ct.c_uint64),
        ("undetailed", ct.c_uint64),
        ("nreasons", ct.c_uint32),
        ("reasons", ct.c_uint16 * KVMEXIT_CACHE_REASONS),
        ("_pad", ct.c_uint32),
        ("vcpu_tag", ct.c_uint64),
        ("dense", ct.c_uint64 * KVMEXIT_DENSE),
    ]


class kvmexit_gen(ct.Structure):
    _fields_ = [("gen", ct.c_uint64)]


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


class kvmexit_detail_key(ct.Structure):
    _fields_ = [("exit", kvmexit_key), ("value", ct.c_uint64), ("kind", ct.c_uint32), ("dir", ct.c_uint32)]


class kvmexit_tp_exit(ct.Structure):
    _fields_ = [
        ("common", ct.c_uint64),
        ("exit_reason", ct.c_uint32), ("_pad0", ct.c_uint32),
        ("guest_rip", ct.c_uint64),
        ("isa", ct.c_uint32), ("_pad1", ct.c_uint32),
        ("info1", ct.c_uint64),
        ("info2", ct.c_uint64),
        ("intr_info", ct.c_uint32),
        ("error_code", ct.c_uint32),
        ("vcpu_id", ct.c_uint32), ("_pad2", ct.c_uint32),
    ]


class kvmexit_tp_exit_arm64(ct.Structure):
    _fields_ = [("common", ct.c_uint64), ("ret", ct.c_int32), ("esr_ec", ct.c_uint32), ("vcpu_pc", ct.c_uint64)]


class kvmexit_tp_pio(ct.Structure):
    _fields_ = [("common", ct.c_uint64), ("rw", ct.c_uint32), ("port", ct.c_uint32), ("size", ct.c_uint32),
                ("count", ct.c_uint32), ("val", ct.c_uint32), ("_pad", ct.c_uint32)]


class kvmexit_tp_msr(ct.Structure):
    _fields_ = [("common", ct.c_uint64), ("write", ct.c_uint32), ("ecx", ct.c_uint32)]


assert ct.sizeof(kvmexit_key) == 16
assert ct.sizeof(kvmexit_cache) == 80 + 8 * KVMEXIT_DENSE
assert ct.sizeof(kvmexit_detail_key) == 32
assert ct.sizeof(kvmexit_pending) == 24
assert ct.sizeof(kvmexit_lat) == 32 + 8 * KVMEXIT_LAT_SLOTS
assert ct.sizeof(kvmexit_tp_exit_arm64) == 24

# the record fields each classic tracepoint program reads: {(arch, event): {field: (offset, size)}}
TP_RECORDS = {("x86", "kvm_exit"): (kvmexit_tp_exit, ("exit_reason", "isa")),
              ("x86", "kvm_pio"): (kvmexit_tp_pio, ("port", "val")),
              ("x86", "kvm_msr"): (kvmexit_tp_msr, ("ecx",)),
              ("arm64", "kvm_exit"): (kvmexit_tp_exit_arm64, ("ret", "esr_ec"))}
TP_LAYOUT = {key: {f: (getattr(s, f).offset, getattr(s, f).size) for f in fields}
             for key, (s, fields) in TP_RECORDS.items()}
TP_VCPU_ID = (kvmexit_tp_exit.vcpu_id.offset, kvmexit_tp_exit.vcpu_id.size)

# names in kvm_exit.bpf.c
OBJECT_NAME = "kvm_exit"  # internal maps are then "kvm_exit.rodata" on every libbpf
MAP_COUNTS, MAP_CACHE, MAP_GENS, MAP_PENDING, MAP_LAT = "counts", "cache", "gens", "pending", "lat_stats"
MAP_DETAILS = "details"
MAP_THREAD_VCPU = "thread_vcpu"    # arm64 only
