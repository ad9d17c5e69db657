# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A tracing session: choose the fastest attach mode that works, load with
the filters, attach, read the counts, detach.

Mode choice, from kernel BTF (README: "How the mode is chosen"):

    old prototype                -> tp_btf -> raw_tp -> tracepoint
    new prototype, vendor BTF    -> tp_btf -> raw_tp -> tracepoint
    new prototype, no vendor BTF -> tracepoint
    prototype unknown (kvm without module BTF)
                                 -> raw_tp (old prototype, legacy object) -> tracepoint
    no usable kernel BTF         -> raw_tp (legacy object) -> tracepoint (legacy)
    arm64 (kernel BTF needed)    -> tp_btf -> raw_tp -> tracepoint, with the
                                    kprobe that tells each thread's vCPU
"""
import errno
from dataclasses import dataclass

from . import _libbpf, arch as arches, kernel
from .abi import TP_VCPU_ID
from .errors import KvmexitError, LibbpfError
from .skeleton import CORE_OBJECT, LEGACY_OBJECT, Filter, KvmExitObject

MODES = ("auto", "tp_btf", "raw_tp", "tracepoint")
DEFAULT_MAX_ENTRIES = 16384

# (source, kind, prototype) -> program of kvm_exit.bpf.c, on x86
PROGRAMS = {
    **{("kvm_exit",) + k: prog for k, prog in arches.X86.exit_programs.items()},
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


@dataclass(frozen=True)
class TraceOptions:
    """What to trace and how.

    filt: Filter applied in the kernel.
    mode: "auto" or a forced attach kind.
    source: "kvm_exit", or a calibration hook ("kvm_pio", "kvm_msr").
    max_entries: capacity of the counts map in (thread, reason) pairs.
    latency: also time each exit until the thread's next kvm_entry.
    detail: also count KVM's events (port, MSR, MMIO page, hypercall, exit
        to userspace) under the exit each thread handles.
    """
    filt: Filter = Filter()
    mode: str = "auto"
    source: str = "kvm_exit"
    max_entries: int = DEFAULT_MAX_ENTRIES
    latency: bool = False
    detail: bool = False


@dataclass(frozen=True)
class Attempt:
    obj: str      # CORE_OBJECT or LEGACY_OBJECT
    prog: str
    kind: str     # tp_btf, raw_tp, tracepoint


def _programs(arch, kind, proto, direct):
    """kvm_exit's (object, program) of one attach kind, in order of
    preference: the direct one first where the kernel should take it (an
    older verifier or libbpf refuses it, and the next one loads)."""
    plain = (arch.core_object, arch.exit_programs[(kind, proto)])
    fast = arch.direct_programs.get((kind, proto)) if direct else None
    return [(arch.direct_object, fast), plain] if fast else [plain]


def plan_arm64(source, mode, kbtf, tp_ok=True):
    """plan() on arm64: one object, every mode knows vCPU ids (pure)."""
    a = arches.ARM64
    if source != "kvm_exit":
        raise KvmexitError("%s is a calibration hook of x86 KVM; on arm64 kvmexit traces kvm_exit only" % source)
    if not kbtf.available:
        raise KvmexitError("kvmexit on arm64 needs kernel BTF (%s): a kernel built with CONFIG_DEBUG_INFO_BTF"
                           % kbtf.error)
    attempts = [Attempt(obj, prog, k) for k in ("tp_btf", "raw_tp", "tracepoint")
                for obj, prog in _programs(a, k, None, kbtf.direct)
                if (mode in ("auto", k)) and (k != "tracepoint" or tp_ok)]
    if not attempts:
        raise KvmexitError("no way to attach to %s in %s mode on this kernel; use --mode auto" % (source, mode))
    return attempts, []


def plan(source, mode, kbtf, need_vcpu=False, tp_ok=True, tp_vcpu=True, arch=arches.X86):
    """The attach attempts for a source, in order of preference (pure).

    Args:
        source: "kvm_exit", or a calibration hook: "kvm_pio", "kvm_msr".
        mode: one of MODES.
        kbtf: kernel.KernelBtf.
        need_vcpu: a vCPU filter is set, so the program must know vcpu ids.
        tp_ok: the tracepoint record has the expected layout.
        tp_vcpu: the kvm_exit record carries vcpu_id.
        arch: arch.Arch of the host.
    Returns:
        (attempts, notes): list of Attempt; notes for the user.
    """
    if arch is arches.ARM64:
        return plan_arm64(source, mode, kbtf, tp_ok)
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
            fast = [Attempt(obj, prog, k) for k in ("tp_btf", "raw_tp")
                    for obj, prog in (_programs(arch, k, proto, kbtf.direct) if source == "kvm_exit"
                                      else [(CORE_OBJECT, PROGRAMS[(source, k, proto)])])]
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
    if isinstance(err, LibbpfError) and err.errno in (errno.EPERM, errno.EACCES) and not kernel.bpf_capable():
        return kernel.caps_error()
    return None


class Tracer:
    """A running trace: the first attempt of the plan that loads and attaches.

    Args:
        options: TraceOptions.
        log: callable(level, text) receiving libbpf's messages, or None.
        kbtf: kernel.KernelBtf, probed from the kernel when None.
    """

    def __init__(self, options=TraceOptions(), log=None, kbtf=None):
        self.options, self.log, self.kbtf = options, log, kbtf
        self.attached = None       # the Attempt that worked
        self.arch = None           # arch.Arch of this host, once started
        self.object = None         # its KvmExitObject
        self.notes, self.failures = [], []

    def start(self):
        """Load and attach; raise KvmexitError if no mode works."""
        o = self.options
        _libbpf.set_log_sink(self.log)
        if o.latency and o.source != "kvm_exit":
            raise KvmexitError("--latency times kvm_exit to kvm_entry; the calibration hooks have no entry")
        arch = self.arch = arches.current()
        if not arch.calibration and o.source != "kvm_exit":
            plan(o.source, o.mode, kernel.KernelBtf(), arch=arch)      # says why not
        unreadable = None
        try:
            fields, _ = kernel.event_format("kvm", o.source)
        except kernel.TracefsUnreadable as e:
            # least privilege (CAP_BPF and CAP_PERFMON): tp_btf and raw_tp need no tracefs
            if o.mode == "tracepoint":
                raise
            unreadable, fields = e, {}
        tp_ok = fields and kernel.check_tp_layout(arch.name, o.source, fields)
        tp_vcpu = fields.get("vcpu_id") == TP_VCPU_ID
        self.kbtf = kernel.probe_btf() if self.kbtf is None else self.kbtf
        attempts, self.notes = plan(o.source, o.mode, self.kbtf, o.filt.vcpu is not None, tp_ok, tp_vcpu, arch)
        if unreadable is not None:
            self.notes.append("%s; tracepoint mode is left out" % unreadable)
        if any(a.kind == "tracepoint" for a in attempts):
            kernel.debugfs_for_old_libbpf(_libbpf.load().version)
        for a in attempts:
            obj = None
            try:
                obj = KvmExitObject(a.obj, a.prog, ENTRY_PROGRAMS[a.kind] if o.latency else None, o.filt,
                                    o.max_entries, tp_vcpu, detail=o.detail, arch=arch)
                obj.attach(a.kind, o.source)
            except KvmexitError as e:
                if obj is not None:
                    obj.close()
                self.failures.append((a, e))
                continue
            self.object, self.attached = obj, a
            if obj.absent:
                self.notes.append("--detail: this kernel has no %s tracepoint, so those details are not shown"
                                  % " or ".join("kvm:" + t for t in obj.absent))
            return self
        a, e = self.failures[0]
        raise KvmexitError(_hint(e) or "cannot trace %s (%s mode failed: %s); run with --verbose for libbpf's log"
                           % (o.source, a.kind, e))

    def read(self):
        """Current totals (consistent with the programs still running): a counts.Snapshot."""
        return self.object.read()

    def detach(self):
        """Stop counting; the maps stay readable until close()."""
        if self.object is not None:
            self.object.detach()

    def close(self):
        if self.object is not None:
            self.object.close()
            self.object = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
