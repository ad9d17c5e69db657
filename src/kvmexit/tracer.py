# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A tracing session: choose the fastest attach mode that works, load with
the filters, attach, read the counts, detach.

Mode choice (kernel-and-libbpf.md 5), from kernel BTF:

    old prototype                -> tp_btf -> raw_tp -> tracepoint
    new prototype, vendor BTF    -> tp_btf -> raw_tp -> tracepoint
    new prototype, no vendor BTF -> tracepoint
    prototype unknown (kvm without module BTF)
                                 -> raw_tp (old prototype, legacy object) -> tracepoint
    no usable kernel BTF         -> raw_tp (legacy object) -> tracepoint (legacy)
"""
import errno
import os
from dataclasses import dataclass, field

from . import _libbpf, kernel, maps
from .abi import KVMEXIT_MAX_TIDS, MAP_CACHE, MAP_COUNTS, MAP_LATENCY, MAP_PENDING, VCPU_ANY
from .bpf import CORE_OBJECT, LEGACY_OBJECT, BpfObject, object_bytes
from .errors import KvmexitError, LibbpfError

MODES = ("auto", "tp_btf", "raw_tp", "tracepoint")
DEFAULT_MAX_ENTRIES = 16384

# (source, kind, prototype) -> program
PROGRAMS = {
    ("kvm_exit", "tp_btf", "new"): "handle_kvm_exit_btf",
    ("kvm_exit", "raw_tp", "new"): "handle_kvm_exit_raw",
    ("kvm_exit", "tp_btf", "old"): "handle_kvm_exit_btf_old",
    ("kvm_exit", "raw_tp", "old"): "handle_kvm_exit_raw_old",
    ("kvm_exit", "tracepoint", None): "handle_kvm_exit_tp",
    ("kvm_pio", "tp_btf", None): "handle_kvm_pio_btf",
    ("kvm_pio", "raw_tp", None): "handle_kvm_pio_raw",
    ("kvm_pio", "tracepoint", None): "handle_kvm_pio_tp",
    ("kvm_msr", "tp_btf", None): "handle_kvm_msr_btf",
    ("kvm_msr", "raw_tp", None): "handle_kvm_msr_raw",
    ("kvm_msr", "tracepoint", None): "handle_kvm_msr_tp",
}
# --latency: kvm_entry, attached the same way as the exit program
ENTRY_PROGRAMS = {"tp_btf": "handle_kvm_entry_btf", "raw_tp": "handle_kvm_entry_raw",
                  "tracepoint": "handle_kvm_entry_tp"}
# --latency: each kvm_exit program has a twin that also remembers the exit
LATENCY = "_lat"
EXIT_PROGRAMS = sorted(p for (source, _, _), p in PROGRAMS.items() if source == "kvm_exit")
CORE_PROGRAMS = sorted(set(PROGRAMS.values()) | set(ENTRY_PROGRAMS.values()) | {p + LATENCY for p in EXIT_PROGRAMS})
LEGACY_PROGRAMS = ["handle_kvm_exit_raw_old", "handle_kvm_exit_tp", "handle_kvm_exit_raw_old_lat",
                   "handle_kvm_exit_tp_lat", "handle_kvm_pio_raw", "handle_kvm_pio_tp",
                   "handle_kvm_msr_raw", "handle_kvm_msr_tp", "handle_kvm_entry_raw", "handle_kvm_entry_tp"]


@dataclass(frozen=True)
class Filter:
    """What the kernel side counts; empty means everything."""
    tgid: int = 0
    tids: tuple = ()
    vcpu: int = None

    def rodata(self, tp_has_vcpu_id):
        """The .rodata values of kvm_exit.bpf.c for this filter."""
        if len(self.tids) > KVMEXIT_MAX_TIDS:
            raise KvmexitError("at most %d TIDs can be traced at once" % KVMEXIT_MAX_TIDS)
        u32 = lambda v: int(v).to_bytes(4, "little")
        tids = list(self.tids) + [0] * (KVMEXIT_MAX_TIDS - len(self.tids))
        return {
            "targ_tgid": u32(self.tgid),
            "targ_vcpu": u32(VCPU_ANY if self.vcpu is None else self.vcpu),
            "targ_ntids": u32(len(self.tids)),
            "targ_tids": b"".join(u32(t) for t in tids),
            "tp_has_vcpu_id": bytes([1 if tp_has_vcpu_id else 0]),
        }


@dataclass(frozen=True)
class Attempt:
    obj: str      # CORE_OBJECT or LEGACY_OBJECT
    prog: str
    kind: str     # tp_btf, raw_tp, tracepoint


def plan(source, mode, kbtf, need_vcpu=False, tp_ok=True, tp_vcpu=True):
    """The attach attempts for a source, in order of preference (pure).

    Args:
        source: "kvm_exit", or a calibration hook: "kvm_pio", "kvm_msr".
        mode: one of MODES.
        kbtf: kernel.KernelBtf.
        need_vcpu: a vCPU filter is set, so the program must know vcpu ids.
        tp_ok: the tracepoint record has the expected layout.
        tp_vcpu: the kvm_exit record carries vcpu_id.
    Returns:
        (attempts, notes): list of Attempt; notes for the user.
    """
    notes = []
    proto = kbtf.proto if source == "kvm_exit" else None
    tracepoint_vcpu = tp_vcpu or source != "kvm_exit"
    tracepoint = Attempt(CORE_OBJECT if kbtf.available else LEGACY_OBJECT,
                         PROGRAMS[(source, "tracepoint", None)], "tracepoint")
    if kbtf.available and source == "kvm_exit" and proto is None:
        # BTF without kvm's (a kvm module without BTF, as on Debian 5.10): no
        # tp_btf on kvm_exit.  The old prototype's raw_tp attaches only where
        # kvm_exit has three arguments, and counts a first argument that is
        # no reason (a pointer: some other prototype) as unreadable.
        if mode == "tp_btf":
            raise KvmexitError("tp_btf mode needs BTF of the kvm module (no btf_trace_kvm_exit in kernel BTF: "
                               "/sys/kernel/btf/kvm is missing); use --mode auto")
        attempts = [Attempt(LEGACY_OBJECT, PROGRAMS[(source, "raw_tp", "old")], "raw_tp"), tracepoint]
    elif kbtf.available:
        fast = []
        if source != "kvm_exit" or proto == "old" or (proto == "new" and (kbtf.vendors or mode in ("tp_btf", "raw_tp"))):
            fast = [Attempt(CORE_OBJECT, PROGRAMS[(source, k, proto)], k) for k in ("tp_btf", "raw_tp")]
            if source == "kvm_exit" and proto == "new" and not kbtf.vendors:
                notes.append("no vcpu_vmx or vcpu_svm type in kernel BTF (kvm_intel/kvm_amd not loaded?): "
                             "%s mode cannot read exit reasons, they show as UNREADABLE" % mode)
        attempts = fast + [tracepoint]
    else:
        if mode == "tp_btf":
            raise KvmexitError("tp_btf mode needs kernel BTF (%s); use --mode auto" % kbtf.error)
        raw = PROGRAMS[(source, "raw_tp", "old" if source == "kvm_exit" else None)]
        attempts = [Attempt(LEGACY_OBJECT, raw, "raw_tp"), tracepoint]
    if mode != "auto":
        attempts = [a for a in attempts if a.kind == mode]
    if not tp_ok:
        attempts = [a for a in attempts if a.kind != "tracepoint"]
    if need_vcpu:
        # the legacy raw_tp program and a record without vcpu_id cannot filter on vCPUs
        attempts = [a for a in attempts
                    if not (a.obj == LEGACY_OBJECT and a.kind == "raw_tp")
                    and not (a.kind == "tracepoint" and not tracepoint_vcpu)]
        if not attempts:
            raise KvmexitError("-v needs vCPU ids, which this kernel's kvm_exit tracepoint does not carry "
                               "and kernel BTF cannot supply; use -t TID of the vCPU thread instead")
    if not attempts:
        raise KvmexitError("no way to attach to %s in %s mode on this kernel; use --mode auto" % (source, mode))
    return attempts, notes


def _hint(err):
    """The fix for an attach/load failure, where there is an obvious one."""
    if isinstance(err, LibbpfError) and err.errno in (errno.EPERM, errno.EACCES) and os.geteuid() != 0:
        return "kvmexit needs root (or CAP_BPF and CAP_PERFMON)"
    return None


@dataclass
class Snapshot:
    """Counts, and every event that was not counted, by cause."""
    totals: dict           # (tgid, tid, reason, vcpu, isa, flags) -> count
    drops: int = 0         # exits not counted: the counts map was full
    latency: dict = None   # same keys -> maps.LatencyStat, with --latency
    skipped: int = 0       # exits the kernel did not run the program for (BpfObject.prog_misses)
    entries_skipped: int = 0   # the same for kvm_entry (--latency): exits left without a time

    def __sub__(self, old):
        """What happened between snapshot old and this one."""
        totals = {k: v - old.totals.get(k, 0) for k, v in self.totals.items()}
        lat = None
        if self.latency is not None:
            lat = {k: v - old.latency[k] if k in old.latency else v for k, v in self.latency.items()}
            lat = {k: v for k, v in lat.items() if v.count}
        return Snapshot({k: v for k, v in totals.items() if v}, self.drops - old.drops, lat,
                        self.skipped - old.skipped, self.entries_skipped - old.entries_skipped)


@dataclass
class Tracer:
    """One tracing session.

    Args:
        filt: Filter applied in the kernel.
        mode: "auto" or a forced attach kind.
        source: "kvm_exit", or a calibration hook ("kvm_pio", "kvm_msr").
        max_entries: capacity of the counts map in (thread, reason) pairs.
        log: callable(level, text) receiving libbpf's messages, or None.
        latency: also time each exit until the thread's next kvm_entry.
    """
    filt: Filter = Filter()
    mode: str = "auto"
    source: str = "kvm_exit"
    max_entries: int = DEFAULT_MAX_ENTRIES
    log: object = None
    latency: bool = False
    kbtf: kernel.KernelBtf = None
    attached: Attempt = None
    notes: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    _obj: BpfObject = None

    def start(self):
        """Load and attach; raise KvmexitError if no mode works."""
        _libbpf.set_log_sink(self.log)
        fields, _ = kernel.event_format("kvm", self.source)
        tp_ok = kernel.check_tp_layout(self.source, fields)
        tp_vcpu = fields.get("vcpu_id") == kernel.TP_VCPU_ID
        self.kbtf = kernel.probe_btf() if self.kbtf is None else self.kbtf
        attempts, self.notes = plan(self.source, self.mode, self.kbtf, self.filt.vcpu is not None,
                                    tp_ok, tp_vcpu)
        if self.latency and self.source != "kvm_exit":
            raise KvmexitError("--latency times kvm_exit to kvm_entry; the calibration hooks have no entry")
        rodata = self.filt.rodata(tp_vcpu)
        self.ncpu = maps.possible_cpus()
        if any(a.kind == "tracepoint" for a in attempts):
            kernel.debugfs_for_old_libbpf(_libbpf.load().version)
        for a in attempts:
            obj = None
            prog = a.prog + LATENCY if self.latency else a.prog
            progs = {prog, ENTRY_PROGRAMS[a.kind]} if self.latency else {prog}
            try:
                obj = BpfObject(object_bytes(a.obj))
                obj.autoload_only(progs, CORE_PROGRAMS if a.obj == CORE_OBJECT else LEGACY_PROGRAMS)
                for m in (MAP_COUNTS, MAP_PENDING, MAP_LATENCY):
                    obj.set_max_entries(m, self.max_entries if self.latency or m == MAP_COUNTS else 1)
                obj.set_rodata(rodata)
                obj.load()
                obj.attach(prog, a.kind, self.source)
                if self.latency:
                    obj.attach(ENTRY_PROGRAMS[a.kind], a.kind, "kvm_entry")
            except KvmexitError as e:
                if obj is not None:
                    obj.close()
                self.failures.append((a, e))
                continue
            self._obj, self.attached = obj, a
            return self
        a, e = self.failures[0]
        raise KvmexitError(_hint(e) or "cannot trace %s (%s mode failed: %s); run with --verbose for libbpf's log"
                           % (self.source, a.kind, e))

    def read(self):
        """Current totals (consistent with the programs still running)."""
        fd_cache, fd_counts = self._obj.map_fd(MAP_CACHE), self._obj.map_fd(MAP_COUNTS)
        cache = maps.read_cache(fd_cache, self.ncpu)   # before the hash: see maps.py
        keys, values = maps.read_counts(fd_counts, self.ncpu, self.max_entries)
        totals, drops = maps.combine(keys, values, self.ncpu, cache)
        lat, entries_skipped = None, 0
        if self.latency:
            keys, values = maps.read_hash(self._obj.map_fd(MAP_LATENCY), maps.LAT_SIZE, self.max_entries)
            lat = maps.latency_stats(keys, values)
            entries_skipped = self._obj.prog_misses(ENTRY_PROGRAMS[self.attached.kind])
        skipped = self._obj.prog_misses(self.attached.prog + (LATENCY if self.latency else ""))
        return Snapshot(totals, drops, lat, skipped, entries_skipped)

    def detach(self):
        """Stop counting; the maps stay readable until close()."""
        if self._obj is not None:
            self._obj.detach_all()

    def close(self):
        if self._obj is not None:
            self._obj.close()
            self._obj = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
