# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The shipped CO-RE object against real Debian kernel layouts.

Each kernel's vmlinux + kvm-intel / kvm-amd BTF (tests/kernels/corpus.py,
from the Debian packages of the kernel matrix) is merged into one file for
btf_custom_path; fake vcpu_vmx / vcpu_svm / vmcb objects sit in kernel
memory at the offsets that kernel's BTF gives, read by corpus.py's own
reader (an independent source, not libbpf's relocation); the raw_tp
programs run on them under BPF_PROG_TEST_RUN from real threads moved
between CPUs.
"""
import bisect
import functools
import hashlib
import json
import math
import os
import re
import struct
import subprocess
import time

import pytest

from kernels import corpus as kcorpus
from kernels import fetch
from kernels.manifest import SERIES
from kvmexit import _libbpf, kernel, output, report
from kvmexit.abi import KVMEXIT_ISA_SVM, KVMEXIT_ISA_VMX, KVMEXIT_KEY_NO_EXIT, KVMEXIT_KEY_NO_REASON, KVMEXIT_VCPU_UNKNOWN
from kvmexit.counts import PERCENTILE_ERROR, PERCENTILES, CounterKey, DetailKey
from kvmexit.skeleton import Filter
from testrun import FAKEMEM, FakeMem, Worker, core, counts, merge_split

pytestmark = [pytest.mark.bpf]


# the matrix's kernel series: 5.10 (the old prototype, no module BTF), 6.1, 6.12,
# 6.16 (the exit reason inside struct vcpu_vt), the newest (a u64 exit code)
KERNELS = tuple(SERIES)


@functools.lru_cache(maxsize=None)
def layouts(kname):
    """That kernel's offsets, read from its corpus BTF (the corpus fixture builds it first)."""
    return kcorpus.layout(kcorpus.folder(kname))


@functools.lru_cache(maxsize=None)
def host_vcpu_id():
    """kvm_vcpu.vcpu_id's offset in this host's kernel BTF: where the programs read it here."""
    btf = kcorpus.Btf("/sys/kernel/btf/vmlinux")
    return btf.member(btf.named(kcorpus.STRUCT, "kvm_vcpu"), "vcpu_id")[0]
VENDORS = {"vmx": ("kvm-intel", KVMEXIT_ISA_VMX), "svm": ("kvm-amd", KVMEXIT_ISA_SVM)}
# three reasons per vendor, flagged and out-of-table ones included
REASONS = {"vmx": (30, 0x80000021, 48), "svm": (0x7B, 0xFFFFFFFF, 0x400)}


@pytest.mark.corpus
@pytest.mark.parametrize("kname", KERNELS)
def test_corpus_is_the_matrix_kernels_btf(kname, corpus):
    """Each folder: the BTF of the very packages the matrix boots, their
    names, versions and sha256 recorded, each file's sha256 as written; the
    layout facts that tell the series apart, read from it."""
    d = corpus(kname)
    meta = json.loads((d / "corpus.json").read_text())
    booted = sorted(fetch.cache_dir().glob("%s-*/kernel.json" % kname))
    assert meta["kernel"] in [json.loads(b.read_text())["packages"] for b in booted]
    assert all(re.fullmatch(r"[0-9a-f]{64}", p["sha256"]) for p in meta["packages"])
    assert {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in meta["files"]} == meta["files"]
    assert sorted(meta["files"]) == ["kvm-amd.btf", "kvm-intel.btf", "kvm.btf", "vmlinux.btf"]
    # 5.10 builds no module BTF: pahole's, from the same build's -dbg package
    extra = [p["name"] for p in meta["packages"] if p not in meta["kernel"]]
    assert extra == (["linux-image-%s-dbg" % meta["release"]] if kname == "5.10" else [])
    lay = layouts(kname)
    assert (lay.proto, lay.code64) == ("old" if kname == "5.10" else "new", kname == "newest")
    assert (lay.exit_code, lay.vcpu_id) == (112, 36)


@pytest.fixture(scope="module")
def fakemem():
    if not FAKEMEM.exists():
        pytest.skip("%s not built (make build/fakemem.bpf.o)" % FAKEMEM)
    m = FakeMem()
    yield m
    m.close()


@pytest.fixture(scope="module")
def workers():
    ncpu = len(os.sched_getaffinity(0))
    a, b = Worker(0), Worker(0)
    yield a, b, ncpu
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def merged(corpus, tmp_path_factory):
    d = tmp_path_factory.mktemp("btf")

    def get(kname, module):
        out = d / ("%s-%s.btf" % (kname, module))
        if not out.exists():
            merge_split(corpus(kname) / "vmlinux.btf", corpus(kname) / (module + ".btf"), out)
        return out
    return get


class Firer:
    """Plants an exit in a fake vCPU and runs the program on a worker thread."""

    def __init__(self, mem, layout, vendor, obj):
        self.mem, self.layout, self.vendor, self.obj = mem, layout, vendor, obj
        self.isa = VENDORS[vendor][1]

    def fire(self, worker, elem, vcpu_id, reason, n=1):
        lay, mem = self.layout, self.mem
        fields = {lay.vcpu_id: struct.pack("<i", vcpu_id)}
        if self.vendor == "vmx":
            fields[lay.vmx_reason] = struct.pack("<I", reason)
        else:
            vmcb = elem + 2
            fields[lay.svm_vmcb] = struct.pack("<Q", mem.addrs[vmcb])
            code = reason if reason != 0xFFFFFFFF or not lay.code64 else 0xFFFFFFFFFFFFFFFF
            mem.write(vmcb, {lay.exit_code: struct.pack("<Q" if lay.code64 else "<I", code)})
        mem.write(elem, fields)
        prog = self.obj.exit_prog
        args = [mem.addrs[elem], self.isa] if "_raw_old" not in prog else [reason, mem.addrs[elem], self.isa]
        for _ in range(n):
            worker.call(lambda: self.obj.test_run(prog, args))


def _program(layout, direct=False):
    """The raw_tp program of the layout's prototype; direct: the one that
    reads with plain loads (this host's verifier takes it, >= 6.17)."""
    if layout.proto != "new":
        return "handle_kvm_exit_raw_old"
    return "handle_kvm_exit_raw_direct" if direct else "handle_kvm_exit_raw"


@pytest.mark.corpus
@pytest.mark.parametrize("direct", [False, True], ids=["helper", "direct"])
@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.parametrize("kname", sorted(KERNELS))
def test_exact_counts_per_kernel_layout(kname, vendor, direct, corpus, merged, fakemem, workers):
    layout = layouts(kname)
    a, b, ncpu = workers
    obj = core(_program(layout, direct), merged(kname, VENDORS[vendor][0]))
    f = Firer(fakemem, layout, vendor, obj)
    r1, r2, r3 = REASONS[vendor]
    pid, isa = os.getpid(), f.isa
    # (worker, vcpu elem, vcpu id, reason, n); a and b share CPU 0 first, so
    # every switch is a cache miss; then b moves to the other CPU
    plan = [(a, 0, 3, r1, 5), (b, 1, 7, r1, 2), (a, 0, 3, r2, 3), (a, 0, 3, r1, 1),
            ("move", b, 1 % ncpu), (b, 1, 7, r3, 4), (a, 0, 3, r3, 2), ("move", b, 0), (b, 1, 7, r1, 6)]
    want = {}
    try:
        for step in plan:
            if step[0] == "move":
                step[1].move(step[2])
                continue
            w, elem, vid, reason, n = step
            f.fire(w, elem, vid, reason, n)
            k = (pid, w.tid, reason, vid, isa, 0)
            want[k] = want.get(k, 0) + n
            # a read between any two events sees exactly what ran: no loss, no double count
            assert counts(obj) == (want, 0)
    finally:
        obj.close()
    assert sum(want.values()) == 23


@pytest.mark.corpus
@pytest.mark.parametrize("kname", ["6.1", "newest"])
def test_vcpu_moved_to_another_thread(kname, corpus, merged, fakemem, workers):
    """vCPU 3 runs on thread a, then on thread b while a runs vCPU 7, on one
    CPU: each exit under the vCPU its thread ran then, though a owned the
    cache with vCPU 3 (the cache keeps the vcpu pointer it was taken with)."""
    layout = layouts(kname)
    a, b, _ = workers
    b.move(a.cpu)
    obj = core(_program(layout), merged(kname, VENDORS["vmx"][0]))
    f = Firer(fakemem, layout, "vmx", obj)
    r1 = REASONS["vmx"][0]
    try:
        f.fire(a, 0, 3, r1, 4)
        f.fire(a, 1, 7, r1, 3)         # a now runs vCPU 7: its cache is taken again
        f.fire(b, 0, 3, r1, 2)         # and b runs vCPU 3
        f.fire(a, 1, 7, r1, 1)
        got, drops = counts(obj)
    finally:
        obj.close()
    pid = os.getpid()
    assert (got, drops) == ({(pid, a.tid, r1, 3, f.isa, 0): 4, (pid, a.tid, r1, 7, f.isa, 0): 4,
                             (pid, b.tid, r1, 3, f.isa, 0): 2}, 0)


@pytest.mark.corpus
@pytest.mark.parametrize("kname", ["6.12", "newest"])
def test_more_reasons_than_cache_slots(kname, corpus, merged, fakemem, workers):
    a, b, _ = workers
    obj = core("handle_kvm_exit_raw", merged(kname, "kvm-intel"))
    f = Firer(fakemem, layouts(kname), "vmx", obj)
    want = {}
    try:
        for rnd in range(2):
            for reason in range(12):          # 12 reasons > 8 slots
                f.fire(a, 0, 0, reason, reason + 1)
                k = (os.getpid(), a.tid, reason, 0, KVMEXIT_ISA_VMX, 0)
                want[k] = want.get(k, 0) + reason + 1
            f.fire(b, 1, 1, 12, 1)             # evict a
            want[(os.getpid(), b.tid, 12, 1, KVMEXIT_ISA_VMX, 0)] = rnd + 1
            assert counts(obj) == (want, 0)
    finally:
        obj.close()


@pytest.mark.corpus
def test_filters(corpus, merged, fakemem, workers):
    a, b, _ = workers
    btf = merged("6.12", "kvm-intel")
    pid = os.getpid()
    cases = [
        (Filter(tgid=1), set()),
        (Filter(tgid=pid), {a.tid, b.tid}),
        (Filter(tids=(b.tid,)), {b.tid}),
        (Filter(tids=(1, a.tid, 2)), {a.tid}),
        (Filter(tgid=pid, vcpu=7), {b.tid}),
        (Filter(tgid=pid, vcpu=8), set()),
    ]
    for filt, tids in cases:
        obj = core("handle_kvm_exit_raw", btf, filt=filt)
        f = Firer(fakemem, layouts("6.12"), "vmx", obj)
        try:
            f.fire(a, 0, 3, 12, 4)
            f.fire(b, 1, 7, 12, 5)
            got, drops = counts(obj)
        finally:
            obj.close()
        want = {k: v for k, v in {(pid, a.tid, 12, 3, 1, 0): 4, (pid, b.tid, 12, 7, 1, 0): 5}.items()
                if k[1] in tids}
        assert (got, drops) == (want, 0), filt


@pytest.mark.corpus
def test_full_map_counts_drops(corpus, merged, fakemem, workers):
    a, b, _ = workers
    obj = core("handle_kvm_exit_raw", merged("newest", "kvm-amd"), max_entries=2)
    f = Firer(fakemem, layouts("newest"), "svm", obj)
    pid = os.getpid()
    try:
        f.fire(a, 0, 0, 0x7B, 2)
        f.fire(a, 0, 0, 0x78, 3)
        f.fire(a, 0, 0, 0x400, 4)   # third key: map full
        f.fire(b, 1, 1, 0x7B, 5)    # fourth key: map full
        f.fire(a, 0, 0, 0x7B, 1)
        got = counts(obj)
    finally:
        obj.close()
    assert got == ({(pid, a.tid, 0x7B, 0, 2, 0): 3, (pid, a.tid, 0x78, 0, 2, 0): 3}, 9)


def test_unreadable_reason_without_vendor_btf(fakemem, workers):
    """This host has no vcpu_vmx/vcpu_svm: the vendor block is dead, the exit still counts."""
    a, _, _ = workers
    obj = core("handle_kvm_exit_raw")
    try:
        fakemem.write(0, {host_vcpu_id(): struct.pack("<i", 5)})
        for _ in range(3):
            a.call(lambda: obj.test_run("handle_kvm_exit_raw", [fakemem.addrs[0], KVMEXIT_ISA_VMX]))
        got = counts(obj)
    finally:
        obj.close()
    assert got == ({(os.getpid(), a.tid, 0, 5, KVMEXIT_ISA_VMX, KVMEXIT_KEY_NO_REASON): 3}, 0)


@pytest.mark.corpus
@pytest.mark.parametrize("kname", sorted(KERNELS))
@pytest.mark.parametrize("vendor", sorted(VENDORS))
@pytest.mark.parametrize("prog", ["handle_kvm_exit_raw", "handle_kvm_exit_raw_old", "handle_kvm_exit_raw_direct"])
def test_programs_relocate_and_load(prog, kname, vendor, corpus, merged):
    """Every raw_tp kvm_exit program relocates against every corpus kernel
    and passes the verifier: the offsets the verified code reads at are that
    kernel's.  (tp_btf's programs read kvm_vcpu by typed loads, which the
    verifier checks against the running kernel's BTF, never a corpus
    kernel's: the matrix's machines load them on each kernel.)"""
    obj = core(prog, merged(kname, VENDORS[vendor][0]))
    try:
        xlated = subprocess.run(["bpftool", "-j", "prog", "dump", "xlated", "id", str(obj.obj.prog_id(prog))],
                                capture_output=True, text=True, check=True).stdout
    finally:
        obj.close()
    # the constants moved into registers: CO-RE's field offsets among them
    moved = {int(m.group(1)) for i in json.loads(xlated)
             for m in [re.fullmatch(r"\(b7\) r\d+ = (-?\d+)", i.get("disasm", ""))] if m}
    lay = layouts(kname)
    offsets = {"vmx": {lay.vmx_reason}, "svm": {lay.svm_vmcb, lay.exit_code}}
    want = offsets[vendor] if prog != "handle_kvm_exit_raw_old" else set()   # the reason is an argument there
    assert moved & (offsets["vmx"] | offsets["svm"]) == want
    assert lay.vcpu_id in moved


@pytest.mark.corpus
@pytest.mark.parametrize("kname", sorted(KERNELS))
def test_prototype_and_vendor_detection(kname, corpus):
    lib = _libbpf.load()
    base = lib.btf__parse(str(corpus(kname) / "vmlinux.btf").encode(), None)
    mods = {m: lib.btf__parse_split(str(corpus(kname) / (m + ".btf")).encode(), base)
            for m in ("kvm", "kvm-intel", "kvm-amd")}
    try:
        assert kernel.kvm_exit_proto(lib, mods["kvm"]) == layouts(kname).proto
        assert kernel.kvm_exit_proto(lib, base) is None
        assert kernel.has_struct(lib, mods["kvm-intel"], "vcpu_vmx")
        assert kernel.has_struct(lib, mods["kvm-amd"], "vcpu_svm")
        assert not kernel.has_struct(lib, mods["kvm-amd"], "vcpu_vmx")
    finally:
        for m in mods.values():
            lib.btf__free(m)
        lib.btf__free(base)


# the histogram's bucket edges from their definition in kvm_exit.h (4 per
# power of two, exact below 4 ns), apart from the shift arithmetic of lat_slot()
EDGES = [0, 1, 2, 3] + [(4 + j) << (k - 2) for k in range(2, 33) for j in range(4)]


def _bucket(ns):
    return min(bisect.bisect_right(EDGES, ns) - 1, len(EDGES) - 1)


def _nearest_rank(values, p):
    return sorted(values)[max(1, math.ceil(len(values) * p / 100)) - 1]


@pytest.mark.corpus
def test_latency_from_exit_to_entry(corpus, merged, fakemem, workers):
    """--latency: raw_tp exit and entry programs run with known sleeps
    between them; the kernel's delta of each lies between the time around
    the sleep and the time around both test runs.  Totals, min, max, each
    bucket, and each percentile within PERCENTILE_ERROR of the true one."""
    a, b, _ = workers
    obj = core("handle_kvm_exit_raw", merged("6.12", "kvm-intel"), entry="handle_kvm_entry_raw")
    f = Firer(fakemem, layouts("6.12"), "vmx", obj)
    bounds = {}   # reason -> [(inner, outer)]: the kernel's delta lies between

    def exit_sleep_entry(sleep):
        t0 = time.perf_counter_ns()
        obj.test_run("handle_kvm_exit_raw", [fakemem.addrs[0], KVMEXIT_ISA_VMX])
        t1 = time.perf_counter_ns()
        time.sleep(sleep)
        t2 = time.perf_counter_ns()
        obj.test_run("handle_kvm_entry_raw", [0])
        t3 = time.perf_counter_ns()
        return t2 - t1, t3 - t0
    # HLT: 50 of 0.4 ms, 40 of 1.5 ms, 9 of 3 ms, 1 of 12 ms (ranks 50, 90 and 99: P50, P90 and
    # P99 each in another group, as far as the sleeps keep to their lengths; the checks use the
    # times measured around each, so a sleep that overshoots changes nothing); IO_INSTRUCTION:
    # 1 of 20 ms, 3 of 0.7 ms
    plan = [(12, 0.0004)] * 50 + [(12, 0.0015)] * 40 + [(12, 0.003)] * 9 + [(12, 0.012), (30, 0.02)] + \
        [(30, 0.0007)] * 3
    try:
        for reason, sleep in plan:
            fakemem.write(0, {layouts("6.12").vcpu_id: struct.pack("<i", 3),
                              layouts("6.12").vmx_reason: struct.pack("<I", reason)})
            bounds.setdefault(reason, []).append(a.call(lambda: exit_sleep_entry(sleep)))
        # an entry without an exit before it, and an exit never followed by an entry, time nothing
        a.call(lambda: obj.test_run("handle_kvm_entry_raw", [0]))
        f.fire(b, 1, 7, 48)
        snap = obj.read()
        lat, totals = snap.latency, snap.totals
    finally:
        obj.close()
    pid = os.getpid()
    assert set(lat) == {(pid, a.tid, 12, 3, 1, 0), (pid, a.tid, 30, 3, 1, 0)}
    assert totals[(pid, b.tid, 48, 7, 1, 0)] == 1
    for reason, bs in bounds.items():
        s = lat[(pid, a.tid, reason, 3, 1, 0)]
        inner, outer = [x[0] for x in bs], [x[1] for x in bs]
        assert s.count == len(bs)
        assert sum(inner) <= s.total_ns <= sum(outer)
        assert min(inner) <= s.min_ns <= min(outer)
        assert max(inner) <= s.max_ns <= max(outer)
        assert sum(s.hist) == s.count
        # each sample's bucket lies between those of its bounds
        must, may = [0] * 128, [0] * 128
        for i, o in bs:
            must[_bucket(i)] += _bucket(i) == _bucket(o)
            for slot in range(_bucket(i), _bucket(o) + 1):
                may[slot] += 1
        assert all(lo <= h <= hi for lo, h, hi in zip(must, s.hist, may)), (s.hist, must, may)
        # the true percentile lies between those of the bounds; the reported one within the error of it
        for p in PERCENTILES:
            lo, hi = _nearest_rank(inner, p), _nearest_rank(outer, p)
            assert lo * (1 - PERCENTILE_ERROR) <= s.percentile(p) <= hi * (1 + PERCENTILE_ERROR), (p, lo, hi)
        assert s.percentile(50) <= s.percentile(90) <= s.percentile(99) <= s.max_ns


@pytest.mark.corpus
def test_latency_maps_full_exits_untimed(corpus, merged, fakemem, workers):
    """With --latency, an exit the pending or latency map has no room for is
    counted as untimed, apart from the drops of the counts map."""
    obj = core("handle_kvm_exit_raw", merged("6.12", "kvm-intel"), max_entries=2,
               entry="handle_kvm_entry_raw")
    f = Firer(fakemem, layouts("6.12"), "vmx", obj)

    def exit_entry(w, reason, entry=True):
        f.fire(w, 0, 3, reason)
        if entry:
            w.call(lambda: obj.test_run("handle_kvm_entry_raw", [0]))
        s = obj.read()
        return s.drops, s.untimed
    a, b, _ = workers
    c = Worker(0)
    try:
        assert [exit_entry(a, 12), exit_entry(a, 30)] == [(0, 0), (0, 0)]
        assert exit_entry(a, 40) == (1, 1)     # counts full: dropped; latency map full: untimed
        assert exit_entry(b, 12) == (2, 2)     # pending has room for b, the latency map none
        assert exit_entry(c, 12, entry=False) == (3, 3)   # pending full (a, b)
        snap = obj.read()
    finally:
        c.stop()
        obj.close()
    pid = os.getpid()
    assert {k: v.count for k, v in snap.latency.items()} == {(pid, a.tid, 12, 3, 1, 0): 1,
                                                           (pid, a.tid, 30, 3, 1, 0): 1}
    assert output.losses_footer(snap, 2).splitlines() == [
        "Dropped 3 exits: the counts map (2 entries) was full; raise --max-entries",
        "Untimed 3 exits: the latency maps (2 entries) were full; raise --max-entries"]


def _detail_run(obj, w, prog, *args):
    w.call(lambda: obj.test_run(prog, list(args)))


@pytest.mark.corpus
def test_detail_under_each_threads_last_exit(corpus, merged, fakemem, workers):
    """--detail: the raw_tp detail programs on real threads, between exits:
    each event under its own thread's last exit (reason and vCPU), while
    another thread takes the CPU and the thread moves to another CPU;
    before the thread's first exit under NO_EXIT_SEEN; with the details map
    full, undetailed, while known keys still count."""
    a, b, ncpu = workers
    obj = core("handle_kvm_exit_raw", merged("6.12", "kvm-intel"), max_entries=9, detail=True)
    f = Firer(fakemem, layouts("6.12"), "vmx", obj)
    ev = functools.partial(_detail_run, obj)
    try:
        ev(a, "detail_kvm_pio", 1, 0x80)                    # before a's first exit
        f.fire(a, 0, 2, 30)                                 # a: IO_INSTRUCTION on vCPU 2
        ev(a, "detail_kvm_pio", 1, 0x80)
        ev(a, "detail_kvm_pio", 1, 0x80)
        ev(a, "detail_kvm_userspace_exit", 2, 0)
        f.fire(b, 1, 5, 32)                                 # b: MSR_WRITE on vCPU 5, same CPU
        ev(b, "detail_kvm_msr", 1, 0x6E0)
        a.move(1 % ncpu)
        ev(a, "detail_kvm_pio", 0, 0x71)                    # a, moved: still its IO exit's
        f.fire(a, 0, 2, 48)                                 # a: EPT_VIOLATION
        ev(a, "detail_kvm_mmio", 2, 4, 0xFEE00300)          # KVM_TRACE_MMIO_WRITE
        ev(a, "detail_kvm_mmio", 0, 4, 0xFEC00010)          # READ_UNSATISFIED: to userspace
        ev(a, "detail_kvm_mmio", 1, 4, 0xFEC00010)          # READ: done
        ev(a, "detail_kvm_fast_mmio", 0xFE003008)           # 9 keys now: the map is full
        f.fire(a, 0, 2, 18)                                 # a: VMCALL
        ev(a, "detail_kvm_hypercall", 5, 1, 2)              # a new key: undetailed
        ev(b, "detail_kvm_msr", 1, 0x6E0)                   # a known key: counted
        snap = obj.read()
    finally:
        a.move(0)
        obj.close()
    pid, K = os.getpid(), CounterKey
    io, wr, ept = K(pid, a.tid, 30, 2, 1, 0), K(pid, b.tid, 32, 5, 1, 0), K(pid, a.tid, 48, 2, 1, 0)
    assert snap.details == {
        DetailKey(K(pid, a.tid, 0, KVMEXIT_VCPU_UNKNOWN, 0, KVMEXIT_KEY_NO_EXIT), 1, 1, 0x80): 1,
        DetailKey(io, 1, 1, 0x80): 2, DetailKey(io, 5, 2, 2): 1, DetailKey(io, 1, 0, 0x71): 1,
        DetailKey(wr, 2, 1, 0x6E0): 2,
        DetailKey(ept, 3, 1, 0xFEE00000): 1, DetailKey(ept, 3, 3, 0xFEC00000): 1, DetailKey(ept, 3, 0, 0xFEC00000): 1,
        DetailKey(ept, 3, 4, 0xFE003000): 1}
    assert (snap.undetailed, snap.details_skipped) == (1, 0)
    rows = report.rows(snap.totals, "tids", detail_counts=snap.details)
    assert output.table(output.View("tids", ""), rows).splitlines() == [
        "TID      KVM_EXIT_REASON                     COUNT",
        "%-8d EPT_VIOLATION                       1       " % a.tid,
        "           mmio read 0xfec00000 IOAPIC       1       ",
        "           mmio write 0xfee00000 LAPIC       1       ",
        "           mmio read_user 0xfec00000 IOAPIC  1       ",
        "           mmio fast_write 0xfe003000        1       ",
        "%-8d MSR_WRITE                           1       " % b.tid,
        "           wrmsr 0x6e0 IA32_TSC_DEADLINE     2       ",
        "%-8d IO_INSTRUCTION                      1       " % a.tid,
        "           out 0x0080 POST/delay             2       ",
        "           in 0x0071 RTC/CMOS data           1       ",
        "           userspace IO                      1       ",
        "%-8d VMCALL                              1       " % a.tid,
        "%-8d NO_EXIT_SEEN                        0       " % a.tid,
        "           out 0x0080 POST/delay             1       "]
    assert output.losses_footer(snap, 9) == \
        "Undetailed 1 KVM events: the details map (9 entries) was full; raise --max-entries"


@pytest.mark.corpus
@pytest.mark.parametrize("filt", [Filter(tids=("a",)), Filter(vcpu=2)], ids=["tid", "vcpu"])
def test_detail_follows_the_filters(corpus, merged, fakemem, workers, filt):
    """A thread the filters exclude has no exit recorded, and none of its
    events counted; without a vCPU filter, a wanted thread's events before
    its first exit count under NO_EXIT_SEEN, with one they cannot be told."""
    a, b, _ = workers
    if filt.tids:
        filt = Filter(tids=(a.tid,))
    obj = core("handle_kvm_exit_raw", merged("6.12", "kvm-intel"), filt=filt, detail=True)
    f = Firer(fakemem, layouts("6.12"), "vmx", obj)
    ev = functools.partial(_detail_run, obj)
    try:
        for w in (a, b):
            ev(w, "detail_kvm_pio", 1, 0x80)
        f.fire(a, 0, 2, 30)
        f.fire(b, 1, 5, 30)
        for w in (a, b):
            ev(w, "detail_kvm_pio", 1, 0x70)
        snap = obj.read()
    finally:
        obj.close()
    pid = os.getpid()
    want = {DetailKey(CounterKey(pid, a.tid, 30, 2, 1, 0), 1, 1, 0x70): 1}
    if filt.vcpu is None:
        want[DetailKey(CounterKey(pid, a.tid, 0, KVMEXIT_VCPU_UNKNOWN, 0, KVMEXIT_KEY_NO_EXIT), 1, 1, 0x80)] = 1
    assert snap.details == want
    assert set(snap.totals) == {CounterKey(pid, a.tid, 30, 2, 1, 0)}


def test_readout_without_batch_lookups_is_the_same(fakemem, workers, monkeypatch):
    """Kernels before 5.6 have no BPF_MAP_LOOKUP_BATCH for hashes: the per-key fallback reads the same."""
    import errno
    from kvmexit import _libbpf as lb
    a, b, _ = workers
    obj = core("handle_kvm_exit_raw")
    try:
        for w, n in ((a, 3), (b, 5), (a, 2)):
            fakemem.write(0, {host_vcpu_id(): struct.pack("<i", 1)})
            for _ in range(n):
                w.call(lambda: obj.test_run("handle_kvm_exit_raw", [fakemem.addrs[0], KVMEXIT_ISA_VMX]))
        batched = counts(obj)
        lib = lb.load()
        monkeypatch.setattr(lib, "bpf_map_lookup_batch", lambda *args: -errno.EINVAL)
        assert counts(obj) == batched
    finally:
        obj.close()
    assert batched == ({(os.getpid(), a.tid, 0, 1, KVMEXIT_ISA_VMX, KVMEXIT_KEY_NO_REASON): 5,
                        (os.getpid(), b.tid, 0, 1, KVMEXIT_ISA_VMX, KVMEXIT_KEY_NO_REASON): 5}, 0)
