# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
import re

import pytest

from kvmexit import kernel
from kvmexit.errors import KvmexitError
from kvmexit.reasons import SVM_REASONS, VMX_REASONS, decode


@pytest.mark.parametrize("isa,reason,flags,name", [
    (1, 12, 0, "HLT"),
    (1, 30, 0, "IO_INSTRUCTION"),
    (1, 77, 0, "TDCALL"),
    (1, 76, 0, "SEAMCALL"),
    (1, 85, 0, "MSR_WRITE_IMM"),
    (1, 0x80000021, 0, "INVALID_STATE FAILED_VMENTRY"),
    (1, 0x04000000 | 48, 0, "EPT_VIOLATION BUS_LOCK_DETECTED"),
    (1, 0x00010000 | 12, 0, "HLT FLAGS(0x10000)"),
    (1, 69, 0, "UNKNOWN(69)"),
    (2, 0x7B, 0, "IOIO"),
    (2, 0x7C, 0, "MSR"),
    (2, 0x400, 0, "NPF"),
    (2, 0x4E, 0, "PF excp"),
    (2, 0x4F, 0, "vector15 excp"),
    (2, 0x81, 0, "VMMCALL"),
    (2, 0xFFFFFFFF, 0, "ERR"),
    (2, 0x80000010, 0, "VMGEXIT_PSC"),
    (2, 0x9F, 0, "CR15_WRITE_TRAP"),
    (2, 0x1234, 0, "UNKNOWN(0x1234)"),
    (3, 0x80, 0, "PORT_0x0080"),
    (1, 0, 1, "UNREADABLE"),
    (9, 5, 0, "ISA9_REASON(5)"),
])
def test_decode(isa, reason, flags, name):
    assert decode(isa, reason, flags) == name


def _kernel_tables():
    try:
        _, fmt = kernel.event_format("kvm", "kvm_exit")
    except KvmexitError as e:
        pytest.skip(str(e))
    vmx, svm = fmt.split("__print_symbolic(REC->exit_reason & 0xffff,")[1].split("__print_symbolic(REC->exit_reason,")
    def entries(text):
        return {eval(m.group(1)) & 0xFFFFFFFF: m.group(2) for m in re.finditer(r'\{ ([^,{}]+), "([^"]+)" \}', text)}
    return entries(vmx.split(") :")[0]), entries(svm.split("),")[0])


def test_tables_agree_with_this_kernels_print_fmt():
    try:
        kvmx, ksvm = _kernel_tables()
    except PermissionError:
        pytest.skip("tracefs needs root")
    assert len(kvmx) > 60 and len(ksvm) > 100
    # every code the kernel names, named the same (VMX: trace name == uapi name)
    assert {c: VMX_REASONS.get(c) for c in kvmx} == kvmx
    # SVM: the kernel's trace name is kept next to the uapi name we print
    assert {c: SVM_REASONS[c][1] for c in ksvm if c in SVM_REASONS} == ksvm
    # ours beyond the kernel's: only documented extras
    assert set(VMX_REASONS) - set(kvmx) == {6, 76}
    assert {c for c, (_, t) in SVM_REASONS.items() if t} == set(ksvm)


def test_svm_names_follow_the_kernels_trace_names():
    """The uapi name we print is the kernel's trace name in capitals, but
    for these (arch/x86/include/uapi/asm/svm.h beside SVM_EXIT_REASONS)."""
    renamed = {
        0x60: ("INTR", "interrupt"), 0x66: ("IDTR_READ", "read_idtr"), 0x67: ("GDTR_READ", "read_gdtr"),
        0x68: ("LDTR_READ", "read_ldtr"), 0x69: ("TR_READ", "read_rt"), 0x6a: ("IDTR_WRITE", "write_idtr"),
        0x6b: ("GDTR_WRITE", "write_gdtr"), 0x6c: ("LDTR_WRITE", "write_ldtr"), 0x6d: ("TR_WRITE", "write_rt"),
        0x7b: ("IOIO", "io"), 0x81: ("VMMCALL", "hypercall"), 0x8f: ("EFER_WRITE_TRAP", "write_efer_trap"),
        0x90: ("CR0_WRITE_TRAP", "write_cr0_trap"), 0x94: ("CR4_WRITE_TRAP", "write_cr4_trap"),
        0x98: ("CR8_WRITE_TRAP", "write_cr8_trap"), 0xa5: ("BUS_LOCK", "buslock"),
        0xa6: ("IDLE_HLT", "idle-halt"), 0x80000010: ("VMGEXIT_PSC", "vmgexit_page_state_change"),
        0x8000fffd: ("VMGEXIT_HV_FEATURES", "vmgexit_hypervisor_feature"), 0xffffffff: ("ERR", "invalid_guest_state"),
    }
    excp = {c: (d, t) for c, (d, t) in SVM_REASONS.items() if 0x40 <= c < 0x60}
    assert all(d == t == "%s excp" % d.split()[0] for d, t in excp.values()) and len(excp) == 17
    assert {c: (d, t) for c, (d, t) in SVM_REASONS.items() if t and d.lower() != t and c not in excp} == renamed
    assert (decode(2, 0x70), decode(2, 0x71)) == ("PUSHF", "POPF")
