# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Exit reason names, decoded by the event's isa (not the host vendor), so
Hygon (SVM), Zhaoxin (VMX) and nested set-ups decode right.

Names are the uapi spelling without prefix (HLT, EPT_VIOLATION, IOIO, NPF),
as bcc's kvmexit prints them; SVM exception intercepts use the kernel's own
names ("PF excp").  tests/test_reasons.py checks these tables against the
running kernel's kvm_exit print fmt.
"""
from .abi import (KVMEXIT_ARM64_EC_MASK, KVMEXIT_ARM64_TRAP, KVMEXIT_ISA_ARM64, KVMEXIT_ISA_MSR, KVMEXIT_ISA_PIO,
                  KVMEXIT_ISA_SVM, KVMEXIT_ISA_VMX, KVMEXIT_KEY_NO_EXIT, KVMEXIT_KEY_NO_REASON)

# Source: arch/x86/include/uapi/asm/vmx.h, VMX_EXIT_REASONS (Linux 6.18),
# plus 6 OTHER_SMI (Intel SDM vol. 3C, appendix C) and 76 SEAMCALL (uapi, Oct 2025).
VMX_REASONS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 6: "OTHER_SMI", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH",
    10: "CPUID", 12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME",
    25: "VMWRITE", 26: "VMOFF", 27: "VMON", 28: "CR_ACCESS", 29: "DR_ACCESS",
    30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE",
    34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG",
    39: "MONITOR_INSTRUCTION", 40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY",
    43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS", 45: "EOI_INDUCED", 46: "GDTR_IDTR",
    47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG", 50: "INVEPT", 51: "RDTSCP",
    52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
    57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED", 62: "PML_FULL",
    63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT", 68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY",
    76: "SEAMCALL", 77: "TDCALL", 84: "MSR_READ_IMM", 85: "MSR_WRITE_IMM",
}

# Flag bits above the 16-bit basic reason (union vmx_exit_reason, arch/x86/kvm/vmx/vmx.h;
# the kernel's print fmt names only FAILED_VMENTRY).
VMX_FLAGS = (
    (0x04000000, "BUS_LOCK_DETECTED"),
    (0x08000000, "ENCLAVE_MODE"),
    (0x10000000, "SMI_PENDING_MTF"),
    (0x20000000, "SMI_FROM_VMX_ROOT"),
    (0x80000000, "FAILED_VMENTRY"),
)

# Source: arch/x86/include/uapi/asm/svm.h, SVM_EXIT_REASONS (Linux 6.18):
# code -> (uapi name without SVM_EXIT_/SVM_ prefix, the kernel's trace name).
_SVM_EXCP = {0: "DE", 1: "DB", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF", 10: "TS",
             11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC", 19: "XF"}
SVM_REASONS = {}
for _n in (0, 2, 3, 4, 8):
    SVM_REASONS[0x00 + _n] = ("READ_CR%d" % _n, "read_cr%d" % _n)
    SVM_REASONS[0x10 + _n] = ("WRITE_CR%d" % _n, "write_cr%d" % _n)
for _n in range(8):
    SVM_REASONS[0x20 + _n] = ("READ_DR%d" % _n, "read_dr%d" % _n)
    SVM_REASONS[0x30 + _n] = ("WRITE_DR%d" % _n, "write_dr%d" % _n)
for _v, _m in _SVM_EXCP.items():
    SVM_REASONS[0x40 + _v] = ("%s excp" % _m, "%s excp" % _m)
SVM_REASONS.update({
    0x60: ("INTR", "interrupt"), 0x61: ("NMI", "nmi"), 0x62: ("SMI", "smi"), 0x63: ("INIT", "init"),
    0x64: ("VINTR", "vintr"), 0x65: ("CR0_SEL_WRITE", "cr0_sel_write"),
    0x66: ("IDTR_READ", "read_idtr"), 0x67: ("GDTR_READ", "read_gdtr"),
    0x68: ("LDTR_READ", "read_ldtr"), 0x69: ("TR_READ", "read_rt"),
    0x6a: ("IDTR_WRITE", "write_idtr"), 0x6b: ("GDTR_WRITE", "write_gdtr"),
    0x6c: ("LDTR_WRITE", "write_ldtr"), 0x6d: ("TR_WRITE", "write_rt"),
    0x6e: ("RDTSC", "rdtsc"), 0x6f: ("RDPMC", "rdpmc"), 0x70: ("PUSHF", "pushf"),
    0x71: ("POPF", "popf"), 0x72: ("CPUID", "cpuid"), 0x73: ("RSM", "rsm"), 0x74: ("IRET", "iret"),
    0x75: ("SWINT", "swint"), 0x76: ("INVD", "invd"), 0x77: ("PAUSE", "pause"), 0x78: ("HLT", "hlt"),
    0x79: ("INVLPG", "invlpg"), 0x7a: ("INVLPGA", "invlpga"), 0x7b: ("IOIO", "io"),
    0x7c: ("MSR", "msr"), 0x7d: ("TASK_SWITCH", "task_switch"), 0x7e: ("FERR_FREEZE", "ferr_freeze"),
    0x7f: ("SHUTDOWN", "shutdown"), 0x80: ("VMRUN", "vmrun"), 0x81: ("VMMCALL", "hypercall"),
    0x82: ("VMLOAD", "vmload"), 0x83: ("VMSAVE", "vmsave"), 0x84: ("STGI", "stgi"),
    0x85: ("CLGI", "clgi"), 0x86: ("SKINIT", "skinit"), 0x87: ("RDTSCP", "rdtscp"),
    0x88: ("ICEBP", "icebp"), 0x89: ("WBINVD", "wbinvd"), 0x8a: ("MONITOR", "monitor"),
    0x8b: ("MWAIT", "mwait"), 0x8c: ("MWAIT_COND", None), 0x8d: ("XSETBV", "xsetbv"),
    0x8e: ("RDPRU", None), 0x8f: ("EFER_WRITE_TRAP", "write_efer_trap"),
    0xa2: ("INVPCID", "invpcid"), 0xa5: ("BUS_LOCK", "buslock"), 0xa6: ("IDLE_HLT", "idle-halt"),
    0x400: ("NPF", "npf"), 0x401: ("AVIC_INCOMPLETE_IPI", "avic_incomplete_ipi"),
    0x402: ("AVIC_UNACCELERATED_ACCESS", "avic_unaccelerated_access"), 0x403: ("VMGEXIT", "vmgexit"),
    0x80000001: ("VMGEXIT_MMIO_READ", "vmgexit_mmio_read"),
    0x80000002: ("VMGEXIT_MMIO_WRITE", "vmgexit_mmio_write"),
    0x80000003: ("VMGEXIT_NMI_COMPLETE", "vmgexit_nmi_complete"),
    0x80000004: ("VMGEXIT_AP_HLT_LOOP", "vmgexit_ap_hlt_loop"),
    0x80000005: ("VMGEXIT_AP_JUMP_TABLE", "vmgexit_ap_jump_table"),
    0x80000010: ("VMGEXIT_PSC", "vmgexit_page_state_change"),
    0x80000011: ("VMGEXIT_GUEST_REQUEST", "vmgexit_guest_request"),
    0x80000012: ("VMGEXIT_EXT_GUEST_REQUEST", "vmgexit_ext_guest_request"),
    0x80000013: ("VMGEXIT_AP_CREATION", "vmgexit_ap_creation"),
    0x8000fffd: ("VMGEXIT_HV_FEATURES", "vmgexit_hypervisor_feature"),
    0x8000ffff: ("VMGEXIT_UNSUPPORTED_EVENT", None),
    0xffffffff: ("ERR", "invalid_guest_state"),
})
for _n in range(16):
    # CR0..CR15 write traps; the kernel's trace table names 0, 4 and 8
    SVM_REASONS[0x90 + _n] = ("CR%d_WRITE_TRAP" % _n, "write_cr%d_trap" % _n if _n in (0, 4, 8) else None)

# arm64: kvm_exit's ret codes (arch/arm64/include/asm/kvm_asm.h, Linux 6.18), spelled as
# perf kvm stat spells them (tools/perf/arch/arm64/util/arm64_exception_types.h); code 2
# (TRAP) is never a reason of its own: traps are named by their exception class
ARM64_CODES = {0: "IRQ", 1: "SERROR", 3: "ILLEGAL", 0xBADCA11: "HYP_GONE"}
# exception classes, ESR_ELx_EC_* of arch/arm64/include/asm/esr.h (Linux 6.18), the
# names perf kvm stat prints for a TRAP (its table lacks some of the newer ones)
ARM64_EC = {
    0x00: "UNKNOWN", 0x01: "WFx", 0x03: "CP15_32", 0x04: "CP15_64", 0x05: "CP14_MR", 0x06: "CP14_LS",
    0x07: "FP_ASIMD", 0x08: "CP10_ID", 0x09: "PAC", 0x0A: "OTHER", 0x0C: "CP14_64", 0x0D: "BTI", 0x0E: "ILL",
    0x11: "SVC32", 0x12: "HVC32", 0x13: "SMC32", 0x15: "SVC64", 0x16: "HVC64", 0x17: "SMC64", 0x18: "SYS64",
    0x19: "SVE", 0x1A: "ERET", 0x1C: "FPAC", 0x1D: "SME", 0x1F: "IMP_DEF", 0x20: "IABT_LOW", 0x21: "IABT_CUR",
    0x22: "PC_ALIGN", 0x24: "DABT_LOW", 0x25: "DABT_CUR", 0x26: "SP_ALIGN", 0x27: "MOPS", 0x28: "FP_EXC32",
    0x2C: "FP_EXC64", 0x2D: "GCS", 0x2F: "SERROR", 0x30: "BREAKPT_LOW", 0x31: "BREAKPT_CUR",
    0x32: "SOFTSTP_LOW", 0x33: "SOFTSTP_CUR", 0x34: "WATCHPT_LOW", 0x35: "WATCHPT_CUR", 0x38: "BKPT32",
    0x3A: "VECTOR32", 0x3C: "BRK64",
}

ISA_NAMES = {KVMEXIT_ISA_VMX: "vmx", KVMEXIT_ISA_SVM: "svm", KVMEXIT_ISA_PIO: "pio", KVMEXIT_ISA_MSR: "msr",
             KVMEXIT_ISA_ARM64: "arm64"}


def arm64_reason(code, ec=0):
    """The reason kvm_exit.bpf.c counts for a ret code and exception class (pure)."""
    return KVMEXIT_ARM64_TRAP | ec & KVMEXIT_ARM64_EC_MASK if code == 2 else code


def arm64_name(reason):
    """DABT_LOW, SYS64, IRQ, EC(0x3b), UNKNOWN(7) ..."""
    if reason & ~KVMEXIT_ARM64_EC_MASK == KVMEXIT_ARM64_TRAP:
        ec = reason & KVMEXIT_ARM64_EC_MASK
        return ARM64_EC.get(ec, "EC(0x%02x)" % ec)
    return ARM64_CODES.get(reason, "UNKNOWN(%d)" % reason)


def vmx_name(reason):
    """HLT, INVALID_STATE FAILED_VMENTRY, UNKNOWN(69) ..."""
    basic, flags = reason & 0xFFFF, reason & ~0xFFFF & 0xFFFFFFFF
    name = VMX_REASONS.get(basic, "UNKNOWN(%d)" % basic)
    for bit, flag in VMX_FLAGS:
        if flags & bit:
            name += " " + flag
            flags &= ~bit
    if flags:
        name += " FLAGS(0x%x)" % flags
    return name


def svm_name(reason):
    """IOIO, NPF, PF excp, UNKNOWN(0x41) ..."""
    entry = SVM_REASONS.get(reason)
    if entry:
        return entry[0]
    if 0x40 <= reason <= 0x5F:
        return "vector%d excp" % (reason - 0x40)  # an exception the kernel's table does not name
    return "UNKNOWN(0x%x)" % reason


def decode(isa, reason, flags=0):
    """The display name of one exit reason.

    Args:
        isa: KVMEXIT_ISA_VMX, _SVM, _ARM64 (reason: arm64_reason()), or the
            calibration hooks' _PIO (reason is a port) and _MSR (an MSR index).
        reason: the full 32-bit reason (VMX flag bits included).
        flags: kvmexit_key.flags.
    """
    if flags & KVMEXIT_KEY_NO_EXIT:
        return "NO_EXIT_SEEN"     # --detail: events of a thread before its first exit was seen
    if flags & KVMEXIT_KEY_NO_REASON:
        return "UNREADABLE"
    if isa == KVMEXIT_ISA_VMX:
        return vmx_name(reason)
    if isa == KVMEXIT_ISA_SVM:
        return svm_name(reason)
    if isa == KVMEXIT_ISA_ARM64:
        return arm64_name(reason)
    if isa == KVMEXIT_ISA_PIO:
        return "PORT_0x%04x" % reason
    if isa == KVMEXIT_ISA_MSR:
        return "MSR_0x%x" % reason
    return "ISA%d_REASON(%d)" % (isa, reason)
