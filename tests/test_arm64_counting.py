# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""arm64's kvm_exit programs, run here by BPF_PROG_TEST_RUN from real
threads: the raw arguments masked as arm64's record masks them, each exit
under the vCPU its own thread runs (from thread_vcpu, which the kprobe on
kvm_arch_vcpu_ioctl_run fills on a real host: tests/test_kernel_matrix.py's
arm64 machines), a thread whose vCPU changes taken again.  Real arm64 exits
are counted in the kernel matrix."""
import ctypes as ct

import pytest

from kvmexit import _libbpf, abi
from kvmexit.arch import ARM64
from kvmexit.reasons import ARM64_EC, arm64_name, arm64_reason, decode
from kvmexit.skeleton import Filter, KvmExitObject
from testrun import Worker, counts

pytestmark = [pytest.mark.bpf]
RAW = ARM64.exit_programs[("raw_tp", None)]
ISA = abi.KVMEXIT_ISA_ARM64
TRAP, SERROR_BIT = 2, 1 << 31
EC = {name: ec for ec, name in ARM64_EC.items()}


@pytest.fixture
def obj():
    o = KvmExitObject(ARM64.core_object, RAW, arch=ARM64, max_entries=64)
    yield o
    o.close()


@pytest.fixture
def workers():
    ws = [Worker(0), Worker(1 % len(__import__("os").sched_getaffinity(0)))]
    yield ws
    for w in ws:
        w.stop()


def set_vcpu(obj, tid, vcpu_id):
    """What the kprobe does when tid enters KVM_RUN with another vCPU."""
    lib = _libbpf.load()
    k, v = ct.c_uint32(tid), ct.c_uint32(vcpu_id)
    lib.bpf_map_update_elem(obj.obj.map_fd(abi.MAP_THREAD_VCPU), ct.byref(k), ct.byref(v), 0)
    moves = ct.c_uint32()
    zero = ct.c_uint32(0)
    bss = obj.obj.map_fd(abi.OBJECT_NAME + ".bss")
    lib.bpf_map_lookup_elem(bss, ct.byref(zero), ct.byref(moves))
    moves.value += 1
    lib.bpf_map_update_elem(bss, ct.byref(zero), ct.byref(moves), 0)


def exits(obj, worker, events):
    """Run the exit program on worker's thread: events = [(ret, esr_ec, n)]."""
    def go():
        for ret, ec, n in events:
            for _ in range(n):
                obj.test_run(RAW, [ret, ec, 0xFFFF800008000000])
    worker.call(go)


def by_key(totals):
    return {(k.tid, k.vcpu, decode(k.isa, k.reason, k.flags)): n for k, n in totals.items()}


def test_raw_values_masked_as_the_record_masks_them(obj, workers):
    w = workers[0]
    set_vcpu(obj, w.tid, 3)
    exits(obj, w, [(TRAP, EC["DABT_LOW"], 10), (TRAP | SERROR_BIT, EC["SYS64"], 5),
                   (0, EC["DABT_LOW"], 2),           # IRQ: esr_ec is no trap's, ignored
                   (TRAP, 0x40 | EC["HVC64"], 6),    # bits above the 6-bit class
                   (1 | SERROR_BIT, 0, 1), (3, 7, 1), (0xBADCA11, 0, 1), (TRAP, 0x3B, 4)])
    totals, drops = counts(obj)
    assert drops == 0
    assert by_key(totals) == {(w.tid, 3, "DABT_LOW"): 10, (w.tid, 3, "SYS64"): 5, (w.tid, 3, "IRQ"): 2,
                              (w.tid, 3, "HVC64"): 6, (w.tid, 3, "SERROR"): 1, (w.tid, 3, "ILLEGAL"): 1,
                              (w.tid, 3, "HYP_GONE"): 1, (w.tid, 3, "EC(0x3b)"): 4}
    assert {k.reason for k in totals} == {arm64_reason(2, EC["DABT_LOW"]), arm64_reason(2, EC["SYS64"]), 0,
                                          arm64_reason(2, EC["HVC64"]), 1, 3, 0xBADCA11, 0x13B}
    assert all(k.isa == ISA for k in totals)


def test_vcpu_of_each_exit_is_its_own_threads(obj, workers):
    a, b = workers
    set_vcpu(obj, a.tid, 0)
    set_vcpu(obj, b.tid, 1)
    for _ in range(3):                      # interleaved, the threads moving between CPUs
        exits(obj, a, [(TRAP, EC["WFx"], 7)])
        exits(obj, b, [(TRAP, EC["WFx"], 5)])
        a.move(b.cpu)
        exits(obj, a, [(TRAP, EC["DABT_LOW"], 2)])
        b.move(1 - b.cpu if b.cpu < 2 else 0)
    totals, _ = counts(obj)
    assert by_key(totals) == {(a.tid, 0, "WFx"): 21, (a.tid, 0, "DABT_LOW"): 6, (b.tid, 1, "WFx"): 15}


def test_vcpu_moved_to_another_thread(obj, workers):
    """vCPU 0 runs on thread a, then on thread b, while a runs vCPU 1: each
    exit is under the vCPU its thread ran then, caches taken before included."""
    a, b = workers
    b.move(a.cpu)                           # one CPU's cache, two owners in turn
    set_vcpu(obj, a.tid, 0)
    exits(obj, a, [(TRAP, EC["SYS64"], 4)])
    set_vcpu(obj, a.tid, 1)
    set_vcpu(obj, b.tid, 0)
    exits(obj, a, [(TRAP, EC["SYS64"], 3)])  # a still owns the cache: taken again for vCPU 1
    exits(obj, b, [(TRAP, EC["SYS64"], 2)])
    exits(obj, a, [(TRAP, EC["SYS64"], 1)])
    totals, _ = counts(obj)
    assert by_key(totals) == {(a.tid, 0, "SYS64"): 4, (a.tid, 1, "SYS64"): 4, (b.tid, 0, "SYS64"): 2}


def test_thread_without_a_recorded_vcpu(obj, workers):
    exits(obj, workers[0], [(TRAP, EC["DABT_LOW"], 2)])
    totals, _ = counts(obj)
    assert by_key(totals) == {(workers[0].tid, abi.KVMEXIT_VCPU_UNKNOWN, "DABT_LOW"): 2}


def test_vcpu_filter(workers):
    with KvmExitObject(ARM64.core_object, RAW, arch=ARM64, max_entries=64, filt=Filter(vcpu=1)) as obj:
        a, b = workers
        set_vcpu(obj, a.tid, 0)
        set_vcpu(obj, b.tid, 1)
        exits(obj, a, [(TRAP, EC["HVC64"], 3)])
        exits(obj, b, [(TRAP, EC["HVC64"], 4)])
        totals, _ = counts(obj)
        assert by_key(totals) == {(b.tid, 1, "HVC64"): 4}


def test_every_exception_class_has_its_name():
    """Every ESR_ELx_EC_* of the newest esr.h (Linux 6.18), as perf kvm stat
    names them; unallocated classes by number, never dropped."""
    assert sorted(ARM64_EC) == [0x00, 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x0E,
                                0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x1D, 0x1F, 0x20,
                                0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x2C, 0x2D, 0x2F, 0x30, 0x31, 0x32,
                                0x33, 0x34, 0x35, 0x38, 0x3A, 0x3C]
    assert [arm64_name(arm64_reason(2, ec)) for ec in (0x01, 0x16, 0x18, 0x20, 0x24, 0x1A, 0x2D, 0x3E)] == \
        ["WFx", "HVC64", "SYS64", "IABT_LOW", "DABT_LOW", "ERET", "GCS", "EC(0x3e)"]
    assert [arm64_name(r) for r in (0, 1, 3, 0xBADCA11, 7)] == ["IRQ", "SERROR", "ILLEGAL", "HYP_GONE", "UNKNOWN(7)"]


def test_sysreg_encoding_of_esr():
    """KVMEXIT_SYSREG(): mrs x3, ID_AA64PFR0_EL1 (Op0 3, Op1 0, CRn 0, CRm 4, Op2 0) as its ESR ISS."""
    iss = 3 << 20 | 0 << 17 | 0 << 14 | 0 << 10 | 3 << 5 | 4 << 1 | 1
    assert abi.sysreg_of_esr(0x18 << 26 | 1 << 25 | iss) == (3 << 19 | 4 << 8)

