# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit selftest`: run the built-in guest while tracing and check exact counts.

Where the host's KVM emits kvm:kvm_exit (VMX, SVM or arm64), the guest's own
exits are checked by reason.  Where it never does (kvm_pvm), that is said in
one line and the calibration hook (kvm:kvm_pio through the same counting
code) is checked instead.  Exit status 0 only if every count is exact.
"""
import os

import click

from . import arch as arches, details, kernel
from .abi import (KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DETAIL_MMIO, KVMEXIT_DETAIL_MSR, KVMEXIT_DETAIL_PIO,
                  KVMEXIT_DETAIL_SYSREG, KVMEXIT_DETAIL_USER, KVMEXIT_DETAIL_WFX, KVMEXIT_DIR_NONE, KVMEXIT_DIR_READ,
                  KVMEXIT_DIR_WRITE, KVMEXIT_ISA_ARM64, KVMEXIT_ISA_PIO, KVMEXIT_ISA_SVM, KVMEXIT_ISA_VMX,
                  KVMEXIT_KEY_NO_EXIT)
from .errors import KvmexitError
from .guest import (ARM64_DONE, ARM64_MMIO, ARM64_SYNC, ARM64_WFI_BEGIN, ARM64_WFI_END, DONE_PORT, ID_AA64PFR0_EL1,
                    KVM_EXIT_HLT, KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_MMIO, MSR_MISC_ENABLE, PSCI_VERSION,
                    SYNC_PORT, Guest, Step, expected_exits)
from .reasons import arm64_reason, decode
from .skeleton import Filter
from .tracer import MODES, TraceOptions, Tracer

# exit reason each guest instruction causes, per isa (uapi vmx.h, svm.h; arm64: a trap's
# exception class, asm/esr.h)
REASON_OF = {
    KVMEXIT_ISA_VMX: {"out": 30, "cpuid": 10, "rdmsr": 31, "wrmsr": 32, "hlt": 12},
    KVMEXIT_ISA_SVM: {"out": 0x7B, "cpuid": 0x72, "rdmsr": 0x7C, "wrmsr": 0x7C, "hlt": 0x78},
    KVMEXIT_ISA_ARM64: {"mmio": arm64_reason(2, 0x24), "mrs": arm64_reason(2, 0x18), "hvc": arm64_reason(2, 0x16),
                        "wfi": arm64_reason(2, 0x01)},
}
ARCH_OF_ISA = {KVMEXIT_ISA_VMX: "x86", KVMEXIT_ISA_SVM: "x86", KVMEXIT_ISA_PIO: "x86", KVMEXIT_ISA_ARM64: "arm64"}


ISA_LABEL = {KVMEXIT_ISA_VMX: "VMX", KVMEXIT_ISA_SVM: "SVM", KVMEXIT_ISA_ARM64: "arm64"}
# --detail: the KVM events each guest instruction causes, (kind, dir, value),
# the built-in guest having no in-kernel device (every I/O, MMIO and hlt goes to it)
INSN_DETAILS = {
    "out": lambda port: [(KVMEXIT_DETAIL_PIO, KVMEXIT_DIR_WRITE, port), (KVMEXIT_DETAIL_USER, KVMEXIT_DIR_NONE, KVM_EXIT_IO)],
    "rdmsr": lambda port: [(KVMEXIT_DETAIL_MSR, KVMEXIT_DIR_READ, MSR_MISC_ENABLE)],
    "wrmsr": lambda port: [(KVMEXIT_DETAIL_MSR, KVMEXIT_DIR_WRITE, MSR_MISC_ENABLE)],
    "hlt": lambda port: [(KVMEXIT_DETAIL_USER, KVMEXIT_DIR_NONE, KVM_EXIT_HLT)],
    "cpuid": lambda port: [],
    "mmio": lambda addr: [(KVMEXIT_DETAIL_MMIO, KVMEXIT_DIR_WRITE, addr & ~0xFFF),
                          (KVMEXIT_DETAIL_USER, KVMEXIT_DIR_NONE, KVM_EXIT_MMIO)],
    "mrs": lambda addr: [(KVMEXIT_DETAIL_SYSREG, KVMEXIT_DIR_READ, details.sys_reg(*ID_AA64PFR0_EL1))],
    "hvc": lambda addr: [(KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DIR_NONE, PSCI_VERSION)],
    "wfi": lambda addr: [(KVMEXIT_DETAIL_WFX, KVMEXIT_DIR_NONE, 0)],
}
# arm64: the signals that wake a wfi end KVM_RUN (an exit to userspace, INTR) any number of times
WAKE_DETAIL = (KVMEXIT_DETAIL_USER, KVMEXIT_DIR_NONE, KVM_EXIT_INTR)


def workload(nvcpus=2, arch="x86"):
    """Each vCPU its own distinct counts, over several exit kinds."""
    if arch == "arm64":
        return [[Step("mmio", 1009 + 211 * i, ARM64_MMIO + 0x1000 * i), Step("mrs", 23 + i), Step("hvc", 11 + i),
                 Step("wfi", 7 + i), Step("mmio", 503 + 101 * i, ARM64_MMIO + 0x10000)]
                for i in range(nvcpus)]
    return [[Step("out", 1009 + 211 * i, 0x80 + i), Step("cpuid", 23 + i), Step("rdmsr", 11 + i),
             Step("wrmsr", 13 + i), Step("hlt", 7 + i), Step("out", 503 + 101 * i, 0x70)]
            for i in range(nvcpus)]


def instructions(prog, arch="x86"):
    """(instruction, port or address, count) in the order a program runs
    them, the syncs, wrmsr's first rdmsr, wfi's marks and the last exit
    included (pure)."""
    addressed, done, sync = ("out", DONE_PORT, SYNC_PORT) if arch == "x86" else ("mmio", ARM64_DONE, ARM64_SYNC)
    out = []
    for s in list(prog) + [Step(addressed, 1, done)]:
        if s.count <= 0:
            continue
        if s.kind == "sync":
            out.append((addressed, sync, s.count))
        elif s.kind == "wrmsr":
            out += [("rdmsr", 0, 1), ("wrmsr", 0, s.count)]
        elif s.kind == "wfi":
            out += [("mmio", ARM64_WFI_BEGIN, 1), ("wfi", 0, s.count), ("mmio", ARM64_WFI_END, 1)]
        else:
            out.append((s.kind, s.port, s.count))
    return out


def migrate_every(n, ncpu):
    """Affinity policy: move each vCPU thread to the next CPU every n userspace exits."""
    return lambda vcpu, exits: {(vcpu + exits // n) % ncpu} if ncpu > 1 else None


def expected_counts(programs, tids, isa):
    """{(tid, reason): count} the programs must produce (pure).

    isa KVMEXIT_ISA_PIO: reason = port, every out counted.  VMX/SVM: only
    the reasons the program causes by itself; others (interrupts, EPT
    faults) are the host's and not checked.
    """
    exp = {}
    for tid, prog in zip(tids, programs):
        for (kind, port), n in expected_exits(prog, ARCH_OF_ISA[isa]).items():
            if isa == KVMEXIT_ISA_PIO:
                if kind != "out":
                    continue
                reason = port
            else:
                reason = REASON_OF[isa][kind]
            exp[(tid, reason)] = exp.get((tid, reason), 0) + n
    return exp


def compare(expected, seen, isa, exact_set=True, skipped=0, describe=None, width=24):
    """Lines describing each check, the number that failed, and the number
    short but accounted for (pure).

    A count below its expectation is accounted for, not failed, when the
    kernel reported skipping the program for at least as many events as are
    missing in all (skipped, Snapshot.skipped): nothing was lost silently.

    Args:
        expected: {(tid, reason): count}, or {(tid, *what): count} with describe.
        seen: the same for what was counted.
        exact_set: also fail on counted (tid, reason) pairs not expected.
        describe: callable(*what) -> text; default: the reason's name in isa.
        width: of the described column.
    """
    describe = describe or (lambda reason: decode(isa, reason))
    checks = [(k, want, seen.get(k, 0)) for k, want in sorted(expected.items())]
    shortfall = sum(want - got for _, want, got in checks if got < want)
    accounted = 0 < shortfall <= skipped
    lines, bad, short = [], 0, 0
    for (tid, *what), want, got in checks:
        if got == want:
            status, op = "ok  ", "=="
        elif got < want and accounted:
            status, op = "miss", "<"
            short += 1
        else:
            status, op = "FAIL", "!="
            bad += 1
        lines.append("  %s tid %-8d %-*s %8d %s %d" % (status, tid, width, describe(*what), got, op, want))
    if exact_set:
        for (tid, *what), got in sorted(seen.items()):
            if (tid, *what) not in expected:
                bad += 1
                lines.append("  FAIL tid %-8d %-*s %8d unexpected" % (tid, width, describe(*what), got))
    if skipped:
        lines.append("  %s %d short in all; the kernel skipped the program for %d events and said so"
                     % ("ok  " if accounted or not shortfall else "FAIL", shortfall, skipped))
    return lines, bad, short


def expected_details(programs, tids, isa):
    """{(tid, reason, kind, dir, value): count} of --detail (pure): each
    instruction's KVM events under the exit it is handled in, the last
    `out`'s port with the calibration hook (isa KVMEXIT_ISA_PIO)."""
    exp = {}
    for tid, prog in zip(tids, programs):
        reason = None
        for insn, port, n in instructions(prog, ARCH_OF_ISA[isa]):
            if isa == KVMEXIT_ISA_PIO:
                reason = port if insn == "out" else reason
            else:
                reason = REASON_OF[isa][insn]
            for detail in INSN_DETAILS[insn](port):
                k = (tid, reason) + detail
                exp[k] = exp.get(k, 0) + n
    return exp


def by_tid_detail(snap, isa):
    """{(tid, reason, kind, dir, value): count} of --detail, less arm64's wfi wake-ups."""
    seen = {}
    for d, n in (snap.details or {}).items():
        if isa == KVMEXIT_ISA_ARM64 and (d.kind, d.dir, d.value) == WAKE_DETAIL:
            continue
        if d.exit.isa == isa or d.exit.flags & KVMEXIT_KEY_NO_EXIT:
            k = (d.exit.tid, d.exit.reason, d.kind, d.dir, d.value)
            seen[k] = seen.get(k, 0) + n
    return seen


def run_traced(source, mode, programs, migrate=50, detail=False):
    """Trace source while the guest runs programs; return (tracer info, guest tids, totals)."""
    ncpu = len(os.sched_getaffinity(0))
    tracer = Tracer(TraceOptions(Filter(tgid=os.getpid()), mode, source, detail=detail))
    try:
        tracer.start()
        g = Guest(programs, affinity=migrate_every(migrate, ncpu) if migrate else None)
        try:
            g.start()
            g.join()
        finally:
            g.close()
        tracer.detach()
        snap = tracer.read()
    finally:
        tracer.close()
    return tracer, g.tids, snap


def by_tid_reason(snap, isa):
    seen = {}
    for k, n in snap.totals.items():
        if k.isa == isa:
            seen[(k.tid, k.reason)] = seen.get((k.tid, k.reason), 0) + n
    return seen


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--vcpus", type=click.IntRange(1, 8), default=2, show_default=True, help="guest vCPUs")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True, help="attach mode")
def selftest(vcpus, mode):
    """Check kvmexit on this host: trace a built-in KVM guest, compare exact counts."""
    if not kernel.bpf_capable():
        raise KvmexitError("selftest needs root (BPF and /dev/kvm): run it with sudo")
    arch = arches.current()
    programs = workload(vcpus, arch.name)
    total = sum(sum(expected_exits(p, arch.name).values()) for p in programs)
    click.echo("kvmexit selftest: %d vCPUs, %d guest exits each run" % (vcpus, total))
    checks = failed = short = 0

    tracer, tids, snap = run_traced("kvm_exit", mode, programs)
    seen_isas = {k.isa for k in snap.totals if k.tid in tids}
    if not seen_isas:
        why = "this host's KVM (kvm_pvm) never emits it" if tracer.kbtf.flavour == "pvm" \
            else "this host's KVM did not emit it"
        if not arch.calibration:
            click.echo("FAIL: kvm:kvm_exit: 0 of the guest's %d exits seen in %s mode (%s)"
                       % (total, tracer.attached.kind, why))
            raise SystemExit(1)
        click.echo("kvm:kvm_exit: 0 of the guest's %d exits seen in %s mode (%s); "
                   "checking the counting path with kvm:kvm_pio instead" % (total, tracer.attached.kind, why))
    sections = [("kvm:kvm_exit, %s mode, %s reasons:" % (tracer.attached.kind, ISA_LABEL[isa]),
                 compare(expected_counts(programs, tids, isa), by_tid_reason(snap, isa), isa,
                         exact_set=False, skipped=snap.skipped), snap)
                for isa in sorted(seen_isas & set(REASON_OF))]

    detail_source = "kvm_exit" if seen_isas & set(REASON_OF) else "kvm_pio"
    if arch.calibration:
        tracer, tids, snap = run_traced("kvm_pio", mode, programs)
        sections.append(("calibration, kvm:kvm_pio through the same counting code, %s mode:" % tracer.attached.kind,
                         compare(expected_counts(programs, tids, KVMEXIT_ISA_PIO),
                                 by_tid_reason(snap, KVMEXIT_ISA_PIO), KVMEXIT_ISA_PIO, skipped=snap.skipped), snap))

    # --detail: each exit's KVM events, under the exits of the source that fired
    tracer, tids, snap = run_traced(detail_source, mode, programs, detail=True)
    for isa in sorted({k.isa for k in snap.totals if k.tid in tids} & (set(REASON_OF) | {KVMEXIT_ISA_PIO})):
        def describe(reason, kind, d, value, isa=isa):
            return "%s: %s" % (decode(isa, reason), details.label(kind, d, value))
        sections.append(("--detail, %s under %s exits, %s mode:" % (
            "KVM's events" if detail_source == "kvm_exit" else "kvm:kvm_pio/kvm_msr/kvm_userspace_exit",
            ISA_LABEL.get(isa, "calibration"), tracer.attached.kind),
            compare(expected_details(programs, tids, isa), by_tid_detail(snap, isa), isa,
                    skipped=snap.skipped + snap.details_skipped, describe=describe, width=46), snap))
    for title, (lines, bad, miss), snap in sections:
        click.echo(title)
        click.echo("\n".join(lines))
        checks, failed, short = checks + len(expected_lines(lines)), failed + bad, short + miss
        if snap.drops or snap.undetailed:
            failed += 1
            click.echo("  FAIL %d events dropped: a map was full" % (snap.drops + snap.undetailed))

    if failed:
        click.echo("FAIL: %d of %d counts differ" % (failed, checks))
        raise SystemExit(1)
    if short:
        click.echo("PASS: %d of %d counts exact, %d short by events the kernel skipped and reported"
                   % (checks - short, checks, short))
    else:
        click.echo("PASS: all %d counts exact" % checks)


def expected_lines(lines):
    """The per-count lines of compare()'s output (not its summary line)."""
    return [l for l in lines if " tid " in l]
