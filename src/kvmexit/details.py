# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--detail's names: what each counted KVM event was about (pure: tables as
data, like reasons.py), and its one-line label under an exit reason.

Sources: include/uapi/linux/kvm.h (KVM_EXIT_*), kvm_para.h (KVM_HC_*),
arch/x86/include/asm/msr-index.h and asm/kvm_para.h / hyperv-tlfs.h
(MSRs), the PC's fixed I/O ports (Intel ICH/PIIX datasheets; QEMU's
hw/i386 for fw_cfg 0x510, the ACPI PM blocks at 0x600 (q35) and 0xb000
(i440fx), and the debug port 0x402).
"""
from .abi import (KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DETAIL_MMIO, KVMEXIT_DETAIL_MSR, KVMEXIT_DETAIL_PIO,
                  KVMEXIT_DETAIL_USER, KVMEXIT_DIR_FAST_WRITE, KVMEXIT_DIR_NONE, KVMEXIT_DIR_READ,
                  KVMEXIT_DIR_READ_USER, KVMEXIT_DIR_WRITE)

KINDS = {KVMEXIT_DETAIL_PIO: "pio", KVMEXIT_DETAIL_MSR: "msr", KVMEXIT_DETAIL_MMIO: "mmio",
         KVMEXIT_DETAIL_HYPERCALL: "hypercall", KVMEXIT_DETAIL_USER: "userspace"}
# direction names per kind (JSON, CSV) and in labels
DIRS = {
    KVMEXIT_DETAIL_PIO: {KVMEXIT_DIR_READ: "in", KVMEXIT_DIR_WRITE: "out"},
    KVMEXIT_DETAIL_MSR: {KVMEXIT_DIR_READ: "rdmsr", KVMEXIT_DIR_WRITE: "wrmsr"},
    KVMEXIT_DETAIL_MMIO: {KVMEXIT_DIR_READ: "read", KVMEXIT_DIR_WRITE: "write",
                          KVMEXIT_DIR_READ_USER: "read_user", KVMEXIT_DIR_FAST_WRITE: "fast_write"},
}

# (first, last, name): exact ports before the ranges that hold them
PORTS = (
    (0x0020, 0x0021, "PIC master"), (0x00A0, 0x00A1, "PIC slave"), (0x04D0, 0x04D1, "PIC ELCR"),
    (0x0040, 0x0043, "PIT"), (0x0061, 0x0061, "port B (PIT ch2, NMI)"),
    (0x0060, 0x0060, "i8042 data"), (0x0064, 0x0064, "i8042 command"),
    (0x0070, 0x0070, "RTC/CMOS index"), (0x0071, 0x0071, "RTC/CMOS data"),
    (0x0080, 0x0080, "POST/delay"), (0x0092, 0x0092, "fast A20"), (0x00B2, 0x00B3, "APM/SMI"),
    (0x01F0, 0x01F7, "ATA primary"), (0x03F6, 0x03F6, "ATA primary control"),
    (0x0170, 0x0177, "ATA secondary"), (0x0376, 0x0376, "ATA secondary control"),
    (0x03F8, 0x03FF, "COM1"), (0x02F8, 0x02FF, "COM2"), (0x03E8, 0x03EF, "COM3"), (0x02E8, 0x02EF, "COM4"),
    (0x0378, 0x037A, "LPT1"), (0x03B0, 0x03DF, "VGA"), (0x0402, 0x0402, "firmware debug"),
    (0x0510, 0x0510, "fw_cfg selector"), (0x0511, 0x0511, "fw_cfg data"), (0x0514, 0x051B, "fw_cfg DMA"),
    (0x0608, 0x060B, "ACPI PM timer (q35)"), (0x0600, 0x067F, "ACPI PM (q35)"),
    (0xB008, 0xB00B, "ACPI PM timer (i440fx)"), (0xB000, 0xB03F, "ACPI PM (i440fx)"),
    (0x0CF9, 0x0CF9, "reset control"), (0x0CF8, 0x0CFB, "PCI config address"), (0x0CFC, 0x0CFF, "PCI config data"),
    (0x5658, 0x5658, "VMware backdoor"),
)

MSRS = {
    0x10: "IA32_TSC", 0x11: "KVM_WALL_CLOCK", 0x12: "KVM_SYSTEM_TIME", 0x1B: "IA32_APIC_BASE",
    0x3A: "IA32_FEATURE_CONTROL", 0x3B: "IA32_TSC_ADJUST", 0x48: "IA32_SPEC_CTRL", 0x49: "IA32_PRED_CMD",
    0x8B: "IA32_UCODE_REV", 0xCE: "PLATFORM_INFO", 0xE7: "IA32_MPERF", 0xE8: "IA32_APERF",
    0xFE: "IA32_MTRRCAP", 0x10A: "IA32_ARCH_CAPABILITIES", 0x140: "MISC_FEATURES_ENABLES",
    0x174: "IA32_SYSENTER_CS", 0x175: "IA32_SYSENTER_ESP", 0x176: "IA32_SYSENTER_EIP",
    0x179: "IA32_MCG_CAP", 0x17A: "IA32_MCG_STATUS", 0x1A0: "IA32_MISC_ENABLE", 0x1D9: "IA32_DEBUGCTL",
    0x277: "IA32_PAT", 0x2FF: "IA32_MTRR_DEF_TYPE", 0x38D: "IA32_FIXED_CTR_CTRL",
    0x38F: "IA32_PERF_GLOBAL_CTRL", 0x6E0: "IA32_TSC_DEADLINE",
    0x802: "x2APIC ID", 0x803: "x2APIC version", 0x808: "x2APIC TPR", 0x80B: "x2APIC EOI",
    0x80D: "x2APIC LDR", 0x80F: "x2APIC SVR", 0x830: "x2APIC ICR", 0x832: "x2APIC LVT timer",
    0x838: "x2APIC timer initial count", 0x839: "x2APIC timer current count", 0x83E: "x2APIC timer divide",
    0x83F: "x2APIC self IPI",
    0x40000000: "HV_GUEST_OS_ID", 0x40000001: "HV_HYPERCALL", 0x40000002: "HV_VP_INDEX",
    0x40000020: "HV_TIME_REF_COUNT", 0x40000021: "HV_REFERENCE_TSC", 0x40000070: "HV_EOI",
    0x40000071: "HV_ICR", 0x40000072: "HV_TPR", 0x40000080: "HV_SCONTROL", 0x40000082: "HV_SIEFP",
    0x40000083: "HV_SIMP", 0x40000084: "HV_EOM", 0x400000B0: "HV_STIMER0_CONFIG", 0x400000B1: "HV_STIMER0_COUNT",
    0x4B564D00: "KVM_WALL_CLOCK_NEW", 0x4B564D01: "KVM_SYSTEM_TIME_NEW", 0x4B564D02: "KVM_ASYNC_PF_EN",
    0x4B564D03: "KVM_STEAL_TIME", 0x4B564D04: "KVM_PV_EOI_EN", 0x4B564D05: "KVM_POLL_CONTROL",
    0x4B564D06: "KVM_ASYNC_PF_INT", 0x4B564D07: "KVM_ASYNC_PF_ACK", 0x4B564D08: "KVM_MIGRATION_CONTROL",
    0xC0000080: "EFER", 0xC0000081: "STAR", 0xC0000082: "LSTAR", 0xC0000083: "CSTAR", 0xC0000084: "SYSCALL_MASK",
    0xC0000100: "FS_BASE", 0xC0000101: "GS_BASE", 0xC0000102: "KERNEL_GS_BASE", 0xC0000103: "TSC_AUX",
    0xC0010015: "AMD HWCR", 0xC001011F: "AMD VIRT_SPEC_CTRL",
}
# the rest of the x2APIC block and the MTRRs, by range
MSR_RANGES = ((0x800, 0x8FF, "x2APIC"), (0x200, 0x21F, "IA32_MTRR_PHYS"), (0x250, 0x26F, "IA32_MTRR_FIX"))

MMIO_PAGES = {0xFEE00000: "LAPIC", 0xFEC00000: "IOAPIC", 0xFED00000: "HPET"}

HYPERCALLS = {1: "KVM_HC_VAPIC_POLL_IRQ", 2: "KVM_HC_MMU_OP", 3: "KVM_HC_FEATURES", 5: "KVM_HC_KICK_CPU",
              9: "KVM_HC_CLOCK_PAIRING", 10: "KVM_HC_SEND_IPI", 11: "KVM_HC_SCHED_YIELD", 12: "KVM_HC_MAP_GPA_RANGE"}

KVM_EXITS = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
    7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 11: "SET_TPR", 12: "TPR_ACCESS",
    16: "NMI", 17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT", 26: "IOAPIC_EOI", 27: "HYPERV", 29: "X86_RDMSR",
    30: "X86_WRMSR", 31: "DIRTY_RING_FULL", 32: "AP_RESET_HOLD", 33: "X86_BUS_LOCK", 34: "XEN", 37: "NOTIFY",
    39: "MEMORY_FAULT", 40: "TDX",
}


def _ranged(value, ranges):
    return next((name for lo, hi, name in ranges if lo <= value <= hi), "")


def name(kind, value):
    """The well-known name of a detail's value ("" if none)."""
    if kind == KVMEXIT_DETAIL_PIO:
        return _ranged(value, PORTS)
    if kind == KVMEXIT_DETAIL_MSR:
        return MSRS.get(value) or _ranged(value, MSR_RANGES)
    if kind == KVMEXIT_DETAIL_MMIO:
        return MMIO_PAGES.get(value, "")
    if kind == KVMEXIT_DETAIL_HYPERCALL:
        return HYPERCALLS.get(value, "")
    if kind == KVMEXIT_DETAIL_USER:
        return KVM_EXITS.get(value, "")
    return ""


def dir_name(kind, d):
    """The direction's word, None where the kind has none."""
    return None if d == KVMEXIT_DIR_NONE else DIRS.get(kind, {}).get(d, str(d))


def label(kind, d, value):
    """One detail as the table prints it under its exit reason:
    "out 0x0080 POST/delay", "wrmsr 0x6e0 IA32_TSC_DEADLINE",
    "mmio write 0xfee00000 LAPIC", "hypercall 5 KVM_HC_KICK_CPU",
    "userspace IO" (the exit to the VMM that followed)."""
    n = name(kind, value)
    if kind == KVMEXIT_DETAIL_PIO:
        text = "%s 0x%04x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_MSR:
        text = "%s 0x%x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_MMIO:
        text = "mmio %s 0x%x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_HYPERCALL:
        text = "hypercall %d" % value
    elif kind == KVMEXIT_DETAIL_USER:
        return "userspace %s" % (n or value)
    else:
        text = "kind%d %d 0x%x" % (kind, d, value)
    return "%s %s" % (text, n) if n else text
