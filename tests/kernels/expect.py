# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a matrix machine's outputs must show, derived from the guest's
programs and from the kernel's own tables, not from kvmexit (pure)."""
import json
import re

from kvmexit.guest import (ARM64_DONE, ARM64_SYNC, DONE_PORT, SYNC_PORT, Step,
                           expected_exits, parse_program)
from kvmexit.output import LOSSES

# --detail: what KVM traces while it handles each instruction's exit, as
# kvmexit's JSON names it (kind, dir, value), the guest having no in-kernel
# device: every out, hlt and MMIO store goes to userspace (include/uapi/linux/kvm.h:
# KVM_EXIT_IO 2, KVM_EXIT_HLT 5, KVM_EXIT_MMIO 6); the guest's MSR is
# IA32_MISC_ENABLE; arm64's mrs reads ID_AA64PFR0_EL1 (sys_reg(3, 0, 0, 4, 0)),
# its hvc asks PSCI_VERSION (0x84000000)
DETAILS = {"out": lambda port: [("pio", "out", port), ("userspace", None, 2)],
           "rdmsr": lambda port: [("msr", "rdmsr", 0x1A0)], "wrmsr": lambda port: [("msr", "wrmsr", 0x1A0)],
           "hlt": lambda port: [("userspace", None, 5)], "cpuid": lambda port: [],
           "mmio": lambda addr: [("mmio", "write", addr & ~0xFFF), ("userspace", None, 6)],
           "mrs": lambda addr: [("sysreg", "mrs", 3 << 19 | 4 << 8)],
           "hvc": lambda addr: [("hypercall", None, 0x84000000)], "wfi": lambda addr: [("wfx", None, 0)]}
# arm64: the signals that wake a wfi end KVM_RUN (KVM_EXIT_INTR 10) any number of times
WAKE = ("userspace", None, 10)

# The exit each guest instruction causes (arch/x86/include/uapi/asm/vmx.h, svm.h;
# arm64: ARM_EXCEPTION_TRAP's exception classes of arch/arm64/include/asm/esr.h,
# as kvmexit numbers them: 0x100 | class)
VMX, SVM, ARM64 = 1, 2, 5
CAUSED = {
    VMX: {"out": (30, "IO_INSTRUCTION"), "cpuid": (10, "CPUID"), "rdmsr": (31, "MSR_READ"),
          "wrmsr": (32, "MSR_WRITE"), "hlt": (12, "HLT")},
    SVM: {"out": (0x7B, "IOIO"), "cpuid": (0x72, "CPUID"), "rdmsr": (0x7C, "MSR"),
          "wrmsr": (0x7C, "MSR"), "hlt": (0x78, "HLT")},
    ARM64: {"mmio": (0x124, "DABT_LOW"), "mrs": (0x118, "SYS64"), "hvc": (0x116, "HVC64"), "wfi": (0x101, "WFx")},
}
ISA = {"vmx": VMX, "svm": SVM, "arm64": ARM64}
ARCH = {VMX: "x86", SVM: "x86", ARM64: "arm64"}
# the instruction of every program's last exit (never re-entered), and where it goes
LAST = {"x86": ("out", DONE_PORT), "arm64": ("mmio", ARM64_DONE)}


def program_reasons(isa):
    """Reasons only the guest's programs cause (no host-side exit has them)."""
    return {code for code, _ in CAUSED[isa].values()}


def phases(program, arch="x86"):
    """A program's steps split at its syncs: phase k runs after the k-th release
    and ends with the sync that parks it (the last one with the program's end)."""
    kind, done = LAST[arch]
    out, cur = [], []
    for s in parse_program(program, arch):
        if s.kind == "sync":
            out.append(cur + [Step(kind, 1, SYNC_PORT if arch == "x86" else ARM64_SYNC)])
            cur = []
        else:
            cur.append(s)
    out.append(cur + [Step(kind, 1, done)])
    return out


def _exits(steps, arch):
    """expected_exits() of steps that carry their own last exit (phases()):
    its implicit one taken off."""
    exits = expected_exits(steps, arch)
    exits[LAST[arch]] -= 1
    return exits


def steps_exits(steps, isa):
    """{reason: exits} a list of steps causes (the steps of phases() carry
    their own last exit; expected_exits' implicit one is taken off)."""
    exp = {}
    for (kind, port), n in _exits(steps, ARCH[isa]).items():
        if n:
            code = CAUSED[isa][kind][0]
            exp[code] = exp.get(code, 0) + n
    return exp


def steps_details(steps, isa):
    """{(reason, kind, dir, value): events} of --detail for a list of steps
    (as steps_exits: the steps carry their own last exit)."""
    exp = {}
    for (kind, port), n in _exits(steps, ARCH[isa]).items():
        for detail in DETAILS[kind](port) if n else ():
            k = (CAUSED[isa][kind][0],) + detail
            exp[k] = exp.get(k, 0) + n
    return exp


def without_wakes(details):
    """--detail's {(tid, reason, kind, dir, value): n} less arm64's wfi wake-ups (WAKE)."""
    return {k: n for k, n in details.items() if k[2:] != WAKE}


def json_details(text):
    """{(tid, reason, kind, dir, value): count} of a kvmexit --detail -o json record."""
    rec = json.loads(text)
    return {(e["tid"], e["reason"], d["kind"], d["dir"], d["value"]): d["count"]
            for e in rec["exits"] for d in e["detail"]}


def parse_detail_table(text):
    """A kvmexit -p PID -a --detail table: ({(tid, reason name, detail label):
    count}, the exit rows under label None; {loss field: n} of its footer)."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = next(i for i, l in enumerate(lines) if "KVM_EXIT_REASON" in l)
    out, row, losses = {}, None, {}
    for l in lines[head + 1:]:
        parts, loss = l.split(), _footer(l)
        if loss:
            losses[loss[0]] = loss[1]
        elif l.startswith(" "):
            out[row + (" ".join(parts[:-1]),)] = int(parts[-1])
        elif parts[0].isdigit():
            row = (int(parts[0]), " ".join(parts[1:-1]))
            out[row + (None,)] = int(parts[-1])
    return out, losses


def json_rows(text):
    """{(tid, vcpu, reason): count} of a kvmexit -o json record, and the record."""
    rec = json.loads(text)
    rows = {}
    for e in rec["exits"]:
        k = (e["tid"], e["vcpu"], e["reason"])
        assert k not in rows, k
        rows[k] = e["count"]
    return rows, rec


def only(rows, reasons):
    return {k: v for k, v in rows.items() if k[-1] in reasons}


def collapse(rows, keep):
    """Sum rows {(tid, vcpu, reason): n} to {key(tid, vcpu, reason): n}."""
    out = {}
    for k, n in rows.items():
        kk = keep(*k)
        out[kk] = out.get(kk, 0) + n
    return out


def _footer(line):
    """(field, n) of one of the table's footer lines of losses (output.LOSSES), else None."""
    for field, text in LOSSES:
        m = re.fullmatch(re.escape(text).replace(re.escape("{n}"), r"(\d+)").replace(re.escape("{max}"), r"\d+"),
                         line)
        if m:
            return field, int(m.group(1))
    return None


def parse_table(text, ncols):
    """A kvmexit table (its banner and header skipped): ([(col..., name, count)]
    in printed order, {loss field: n} of its footer); ncols = columns before the reason."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = next(i for i, l in enumerate(lines) if "KVM_EXIT_REASON" in l)
    rows, losses = [], {}
    for l in lines[head + 1:]:
        loss = _footer(l)
        if loss:
            losses[loss[0]] = loss[1]
            continue
        parts = l.split()
        rows.append(tuple(int(p) for p in parts[:ncols]) + (" ".join(parts[ncols:-1]), int(parts[-1])))
    return rows, losses


# -- comparisons that allow what the kernel skipped and said so, and no more --
def short_of(got, want, skipped):
    """A tracer's counts of a known part of the events (got) against what that
    part must be (want): equal, or, where the kernel reported skipping the
    tracer's program `skipped` times, short of it by no more than that in
    all, never over on any key, no key that want lacks."""
    if not skipped:
        assert got == want, (got, want)
        return
    assert set(got) <= set(want) and all(got[k] <= want[k] for k in got), (got, want)
    assert sum(want.values()) - sum(got.values()) <= skipped, (got, want, skipped)


def same_events(a, b, skipped_a, skipped_b, whole=True):
    """Two tracers' counts of the same run of events: each is those events
    less the ones its program was skipped for, as the kernel reported them.
    So the counts differ key by key by no more than both skipped in all, and
    where both counted the whole run (whole), not a filtered part of what
    they were skipped for, their totals differ by exactly the difference of
    the two skipped counts."""
    if not skipped_a and not skipped_b:
        assert a == b, (a, b)
        return
    assert sum(abs(a.get(k, 0) - b.get(k, 0)) for k in set(a) | set(b)) <= skipped_a + skipped_b, \
        (a, b, skipped_a, skipped_b)
    if whole:
        assert sum(a.values()) + skipped_a == sum(b.values()) + skipped_b, (a, b, skipped_a, skipped_b)


def kernel_names(format_text, isa):
    """{name: code} of one isa's table in the kernel's kvm_exit print fmt
    (the names perf kvm stat prints)."""
    tables = [c for c in format_text.split("__print_symbolic(")[1:] if c.startswith("REC->exit_reason")]
    body = _call_body(tables[0 if isa == VMX else 1])       # VMX's table comes first (isa == 1 ? ...)
    return {name: int(code, 0) for code, name in re.findall(r'\{\s*(0x[0-9a-fA-F]+|\d+),\s*"([^"]+)"\s*\}', body)}


def arm64_kernel_names(format_text):
    """{name: kvmexit's reason} of arm64's kvm_exit print fmt: its ret table
    (TRAP left out: a trap is named by its class) and its esr_ec table
    (0x100 | class), the names perf kvm stat prints."""
    def table(field):
        chunk = next(c for c in format_text.split("__print_symbolic(")[1:] if c.startswith("REC->" + field))
        # codes as written, or as the ESR_ELx_EC_* macros expand: { (((0x24UL))), "DABT_LOW" }
        return re.findall(r'\{\s*\(*\s*(0x[0-9a-fA-F]+|\d+)U?L?\s*\)*\s*,\s*"([^"]+)"\s*\}', _call_body(chunk))
    names = {name: int(code, 0) for code, name in table("ret") if name != "TRAP"}
    names.update({name: 0x100 | int(code, 0) for code, name in table("esr_ec")})
    return names


def _call_body(chunk):
    """The text of a __print_symbolic call up to its closing parenthesis."""
    depth = 1
    for i, c in enumerate(chunk):
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if not depth:
                return chunk[:i]
    return chunk


def perf_report(text):
    """{name: samples} of `perf kvm stat report` (vmexit or ioport)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"\s*(\S+)\s+(\d+)\s+[\d.]+%\s+[\d.]+%", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out
