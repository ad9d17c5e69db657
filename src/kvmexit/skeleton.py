# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvm_exit.bpf.o's one owner on the Python side, a skeleton in spirit:
it loads the object with exactly the programs asked for and the filter in
.rodata, attaches them, reads the counters in the one order that keeps
live reads consistent, and closes it all on one path."""
import errno
from dataclasses import dataclass

from . import arch as arches, maps
from .abi import (KVMEXIT_MAX_TIDS, KVMEXIT_VCPU_ANY, MAP_CACHE, MAP_COUNTS, MAP_DETAILS, MAP_GENS, MAP_LAT,
                  MAP_PENDING, MAP_THREAD_VCPU, OBJECT_NAME)
from .bpfobject import BpfObject, package_object
from .counts import Snapshot
from .errors import KvmexitError, LibbpfError

CORE_OBJECT = arches.X86.core_object
LEGACY_OBJECT = arches.X86.legacy_object
# copies of the caches tried before one of each CPU is of one owner; the
# programs change owners in a few instructions, so a retry is rare and a
# thousand of them is never seen
CACHE_TRIES = 1000


@dataclass(frozen=True)
class Filter:
    """What the kernel side counts; empty means everything."""
    tgid: int = 0
    tids: tuple = ()
    vcpu: int = None

    def rodata(self):
        """The filter's .rodata variables of kvm_exit.bpf.c."""
        if len(self.tids) > KVMEXIT_MAX_TIDS:
            raise KvmexitError("at most %d TIDs can be traced at once" % KVMEXIT_MAX_TIDS)
        tids = list(self.tids) + [0] * (KVMEXIT_MAX_TIDS - len(self.tids))
        return {"targ_tgid": self.tgid, "targ_vcpu": KVMEXIT_VCPU_ANY if self.vcpu is None else self.vcpu,
                "targ_ntids": len(self.tids), "targ_tids": b"".join(int(t).to_bytes(4, "little") for t in tids)}


class KvmExitObject:
    """One kvm_exit object, loaded.

    Args:
        obj_file: CORE_OBJECT or LEGACY_OBJECT.
        exit_prog: the program that counts (a kvm_exit or calibration program).
        entry_prog: with --latency, the kvm_entry program of the same kind.
        filt: Filter.
        max_entries: capacity of the counts map (and of the latency maps).
        tp_has_vcpu_id: the kvm_exit record carries vcpu_id (tracepoint programs).
        btf_custom_path: BTF to relocate against instead of the kernel's (tests).
        detail: also load the arch's detail_programs (--detail).
        arch: arch.Arch whose object obj_file is; its vcpu_program is
            loaded and attached with the exit program.
    """

    def __init__(self, obj_file, exit_prog, entry_prog=None, filt=Filter(), max_entries=16384,
                 tp_has_vcpu_id=False, btf_custom_path=None, detail=False, arch=arches.X86):
        self.exit_prog, self.entry_prog, self.max_entries = exit_prog, entry_prog, max_entries
        self.detail, self.arch = detail, arch
        self.detail_programs = arch.detail_programs if detail else {}
        self.absent = []         # --detail's tracepoints this kernel lacks
        self.obj = BpfObject(package_object(obj_file), OBJECT_NAME, btf_custom_path)
        try:
            self.obj.load_only({exit_prog, entry_prog, arch.vcpu_program} - {None} | set(self.detail_programs.values()))
            self.obj.set_max_entries(MAP_COUNTS, max_entries)
            if arch.vcpu_program:
                self.obj.set_max_entries(MAP_THREAD_VCPU, max_entries)
            self.obj.set_max_entries(MAP_PENDING, max_entries if entry_prog or detail else 1)
            self.obj.set_max_entries(MAP_LAT, max_entries if entry_prog else 1)
            self.obj.set_max_entries(MAP_DETAILS, max_entries if detail else 1)
            self.obj.set_rodata(dict(filt.rodata(), tp_has_vcpu_id=tp_has_vcpu_id, latency=entry_prog is not None,
                                     detail=detail, record=entry_prog is not None or detail))
            self.obj.load()
        except BaseException:
            self.obj.close()
            raise
        self.ncpu = maps.possible_cpus()
        self.cache_size = self.obj.value_size(MAP_CACHE)
        self.lat_size = self.obj.value_size(MAP_LAT)
        self._known = {}         # keys decoded by earlier reads (maps.decode_keys)

    def attach(self, kind, source="kvm_exit"):
        """Attach the exit program to source, the entry program to kvm_entry,
        then each detail program to its tracepoint (after the exit program:
        on a shared tracepoint the exit is recorded first); a tracepoint
        this kernel lacks goes to .absent."""
        if self.arch.vcpu_program:
            # first: a thread's vCPU is known from its next KVM_RUN on
            self.obj.attach(self.arch.vcpu_program, "kprobe", None)
        self.obj.attach(self.exit_prog, kind, source)
        if self.entry_prog:
            self.obj.attach(self.entry_prog, kind, "kvm_entry")
        for tp, prog in self.detail_programs.items():
            try:
                self.obj.attach(prog, "raw_tp", tp)
            except LibbpfError as e:
                if e.errno != errno.ENOENT:      # no such tracepoint in this kernel: absent, said once
                    raise
                self.absent.append(tp)

    def detach(self):
        """Stop counting; the maps stay readable until close()."""
        self.obj.detach()

    def close(self):
        self.obj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def test_run(self, prog, args):
        """BPF_PROG_TEST_RUN one of the loaded raw_tp programs (tests, benchmarks)."""
        return self.obj.test_run(prog, args)

    def _caches(self):
        """Per CPU, a copy of its cache made while its gen stood still and even."""
        fd_gens, fd_cache = self.obj.map_fd(MAP_GENS), self.obj.map_fd(MAP_CACHE)
        size, want = self.cache_size, set(range(self.ncpu))
        caches = [None] * self.ncpu
        for _ in range(CACHE_TRIES):
            before = memoryview(maps.read_percpu(fd_gens, 8, self.ncpu)).cast("Q")
            raw = maps.read_percpu(fd_cache, size, self.ncpu)
            after = memoryview(maps.read_percpu(fd_gens, 8, self.ncpu)).cast("Q")
            for cpu in list(want):
                if before[cpu] == after[cpu] and not before[cpu] & 1:
                    caches[cpu] = raw[cpu * size:(cpu + 1) * size]
                    want.discard(cpu)
            if not want:
                return caches
        # a copy of two owners would credit one's exits to the other for a read
        raise KvmexitError("cannot read CPU %d's counts consistently: its cache changed owner during %d "
                           "copies in a row; run again" % (min(want), CACHE_TRIES))

    def read(self):
        """The counts now: consistent while the programs run, exact once detached.

        The caches first, then the hash (maps.py says why), then the
        latency map and the kernel's count of skipped runs.
        """
        caches = self._caches()
        keys, values = maps.read_hash(self.obj.map_fd(MAP_COUNTS), 8 * self.ncpu, self.max_entries)
        totals, (drops, untimed, undetailed) = maps.combine(keys, values, self.ncpu, caches, self._known)
        lat, entries_skipped, details = None, 0, None
        if self.entry_prog:
            keys, values = maps.read_hash(self.obj.map_fd(MAP_LAT), self.lat_size, self.max_entries)
            lat = maps.latency_stats(keys, values)
            entries_skipped = self.obj.prog_misses(self.entry_prog)
        details_skipped = 0
        if self.detail:
            keys, values = maps.read_hash(self.obj.map_fd(MAP_DETAILS), 8, self.max_entries, maps.DETAIL_KEY.size)
            details = maps.detail_counts(keys, values)
            details_skipped = sum(self.obj.prog_misses(p) for p in self.detail_programs.values())
        return Snapshot(totals, drops, lat, self.obj.prog_misses(self.exit_prog), entries_skipped, untimed,
                        details, undetailed, details_skipped)

    # what benchmarks and tests look at
    def prog_stats(self, prog=None):
        return self.obj.prog_stats(prog or self.exit_prog)

    def memlock(self, map_name):
        return self.obj.memlock(map_name)
