# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--detail's names: what each counted KVM event was about (pure: tables as
data, like reasons.py), and its one-line label under an exit reason.

Sources: include/uapi/linux/kvm.h (KVM_EXIT_*), kvm_para.h (KVM_HC_*),
arm64: arch/arm64/include/asm/sysreg.h (system registers by Op0, Op1, CRn,
CRm, Op2), include/linux/arm-smccc.h and uapi/linux/psci.h (SMCCC and PSCI
function ids),
arch/x86/include/asm/msr-index.h and asm/kvm_para.h / hyperv-tlfs.h
(MSRs), the PC's fixed I/O ports (Intel ICH/PIIX datasheets; QEMU's
hw/i386 for fw_cfg 0x510, the ACPI PM blocks at 0x600 (q35) and 0xb000
(i440fx), and the debug port 0x402).
"""
from .abi import (KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DETAIL_MMIO, KVMEXIT_DETAIL_MSR, KVMEXIT_DETAIL_PIO,
                  KVMEXIT_DETAIL_SYSREG, KVMEXIT_DETAIL_USER, KVMEXIT_DETAIL_WFX, KVMEXIT_DIR_FAST_WRITE,
                  KVMEXIT_DIR_NONE, KVMEXIT_DIR_READ, KVMEXIT_DIR_READ_USER, KVMEXIT_DIR_WRITE)

KINDS = {KVMEXIT_DETAIL_PIO: "pio", KVMEXIT_DETAIL_MSR: "msr", KVMEXIT_DETAIL_MMIO: "mmio",
         KVMEXIT_DETAIL_HYPERCALL: "hypercall", KVMEXIT_DETAIL_USER: "userspace",
         KVMEXIT_DETAIL_SYSREG: "sysreg", KVMEXIT_DETAIL_WFX: "wfx"}
# direction names per kind (JSON, CSV) and in labels
DIRS = {
    KVMEXIT_DETAIL_PIO: {KVMEXIT_DIR_READ: "in", KVMEXIT_DIR_WRITE: "out"},
    KVMEXIT_DETAIL_MSR: {KVMEXIT_DIR_READ: "rdmsr", KVMEXIT_DIR_WRITE: "wrmsr"},
    KVMEXIT_DETAIL_SYSREG: {KVMEXIT_DIR_READ: "mrs", KVMEXIT_DIR_WRITE: "msr"},
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

def sys_reg(op0, op1, crn, crm, op2):
    """Linux's sys_reg(): the value of a KVMEXIT_DETAIL_SYSREG detail."""
    return op0 << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5


# arm64 system registers a guest's accesses trap on (ID registers, the VM
# registers trapped while the guest's caches are off, PMU, timers, GICv3 CPU
# interface, debug), by (Op0, Op1, CRn, CRm, Op2)
SYSREGS = {sys_reg(*enc): n for enc, n in {
    (3, 0, 0, 0, 0): "MIDR_EL1", (3, 0, 0, 0, 5): "MPIDR_EL1", (3, 0, 0, 0, 6): "REVIDR_EL1",
    (3, 0, 0, 4, 0): "ID_AA64PFR0_EL1", (3, 0, 0, 4, 1): "ID_AA64PFR1_EL1", (3, 0, 0, 4, 2): "ID_AA64PFR2_EL1",
    (3, 0, 0, 4, 4): "ID_AA64ZFR0_EL1", (3, 0, 0, 4, 5): "ID_AA64SMFR0_EL1",
    (3, 0, 0, 5, 0): "ID_AA64DFR0_EL1", (3, 0, 0, 5, 1): "ID_AA64DFR1_EL1", (3, 0, 0, 5, 4): "ID_AA64AFR0_EL1",
    (3, 0, 0, 6, 0): "ID_AA64ISAR0_EL1", (3, 0, 0, 6, 1): "ID_AA64ISAR1_EL1", (3, 0, 0, 6, 2): "ID_AA64ISAR2_EL1",
    (3, 0, 0, 7, 0): "ID_AA64MMFR0_EL1", (3, 0, 0, 7, 1): "ID_AA64MMFR1_EL1", (3, 0, 0, 7, 2): "ID_AA64MMFR2_EL1",
    (3, 0, 0, 7, 3): "ID_AA64MMFR3_EL1", (3, 1, 0, 0, 0): "CCSIDR_EL1", (3, 1, 0, 0, 1): "CLIDR_EL1",
    (3, 2, 0, 0, 0): "CSSELR_EL1", (3, 3, 0, 0, 1): "CTR_EL0", (3, 3, 0, 0, 7): "DCZID_EL0",
    (3, 0, 1, 0, 0): "SCTLR_EL1", (3, 0, 1, 0, 1): "ACTLR_EL1", (3, 0, 1, 0, 2): "CPACR_EL1",
    (3, 0, 2, 0, 0): "TTBR0_EL1", (3, 0, 2, 0, 1): "TTBR1_EL1", (3, 0, 2, 0, 2): "TCR_EL1",
    (3, 0, 5, 1, 0): "AFSR0_EL1", (3, 0, 5, 1, 1): "AFSR1_EL1", (3, 0, 5, 2, 0): "ESR_EL1",
    (3, 0, 6, 0, 0): "FAR_EL1", (3, 0, 10, 2, 0): "MAIR_EL1", (3, 0, 10, 3, 0): "AMAIR_EL1",
    (3, 0, 13, 0, 1): "CONTEXTIDR_EL1", (3, 0, 10, 4, 7): "LORID_EL1",
    (1, 0, 7, 6, 2): "DC ISW", (1, 0, 7, 10, 2): "DC CSW", (1, 0, 7, 14, 2): "DC CISW",
    (3, 3, 9, 12, 0): "PMCR_EL0", (3, 3, 9, 12, 1): "PMCNTENSET_EL0", (3, 3, 9, 12, 2): "PMCNTENCLR_EL0",
    (3, 3, 9, 12, 3): "PMOVSCLR_EL0", (3, 3, 9, 12, 4): "PMSWINC_EL0", (3, 3, 9, 12, 5): "PMSELR_EL0",
    (3, 3, 9, 12, 6): "PMCEID0_EL0", (3, 3, 9, 12, 7): "PMCEID1_EL0", (3, 3, 9, 13, 0): "PMCCNTR_EL0",
    (3, 3, 9, 13, 1): "PMXEVTYPER_EL0", (3, 3, 9, 13, 2): "PMXEVCNTR_EL0", (3, 3, 9, 14, 0): "PMUSERENR_EL0",
    (3, 0, 9, 14, 1): "PMINTENSET_EL1", (3, 0, 9, 14, 2): "PMINTENCLR_EL1", (3, 3, 9, 14, 3): "PMOVSSET_EL0",
    (3, 3, 14, 15, 7): "PMCCFILTR_EL0",
    (3, 3, 14, 0, 0): "CNTFRQ_EL0", (3, 3, 14, 0, 1): "CNTPCT_EL0", (3, 3, 14, 0, 2): "CNTVCT_EL0",
    (3, 3, 14, 2, 0): "CNTP_TVAL_EL0", (3, 3, 14, 2, 1): "CNTP_CTL_EL0", (3, 3, 14, 2, 2): "CNTP_CVAL_EL0",
    (3, 3, 14, 3, 0): "CNTV_TVAL_EL0", (3, 3, 14, 3, 1): "CNTV_CTL_EL0", (3, 3, 14, 3, 2): "CNTV_CVAL_EL0",
    (3, 0, 14, 1, 0): "CNTKCTL_EL1",
    (3, 0, 4, 6, 0): "ICC_PMR_EL1", (3, 0, 12, 11, 1): "ICC_DIR_EL1", (3, 0, 12, 11, 3): "ICC_RPR_EL1",
    (3, 0, 12, 11, 5): "ICC_SGI1R_EL1", (3, 0, 12, 11, 6): "ICC_ASGI1R_EL1", (3, 0, 12, 11, 7): "ICC_SGI0R_EL1",
    (3, 0, 12, 12, 0): "ICC_IAR1_EL1", (3, 0, 12, 12, 1): "ICC_EOIR1_EL1", (3, 0, 12, 12, 2): "ICC_HPPIR1_EL1",
    (3, 0, 12, 12, 3): "ICC_BPR1_EL1", (3, 0, 12, 12, 4): "ICC_CTLR_EL1", (3, 0, 12, 12, 5): "ICC_SRE_EL1",
    (3, 0, 12, 12, 7): "ICC_IGRPEN1_EL1",
    (2, 0, 0, 2, 2): "MDSCR_EL1", (2, 0, 1, 0, 4): "OSLAR_EL1", (2, 0, 1, 1, 4): "OSLSR_EL1",
    (2, 0, 1, 3, 4): "OSDLR_EL1", (2, 3, 0, 1, 0): "MDCCSR_EL0",
}.items()}

# SMCCC function ids (x0 of an hvc): the standard service calls (PSCI,
# SMCCC's own, TRNG) and KVM's vendor-specific hypervisor service
SMCCC = {
    0x80000000: "SMCCC_VERSION", 0x80000001: "SMCCC_ARCH_FEATURES", 0x80000002: "SMCCC_ARCH_SOC_ID",
    0x80008000: "SMCCC_ARCH_WORKAROUND_1", 0x80007FFF: "SMCCC_ARCH_WORKAROUND_2",
    0x80003FFF: "SMCCC_ARCH_WORKAROUND_3",
    0x84000000: "PSCI_VERSION", 0x84000001: "PSCI_CPU_SUSPEND", 0xC4000001: "PSCI_CPU_SUSPEND",
    0x84000002: "PSCI_CPU_OFF", 0x84000003: "PSCI_CPU_ON", 0xC4000003: "PSCI_CPU_ON",
    0x84000004: "PSCI_AFFINITY_INFO", 0xC4000004: "PSCI_AFFINITY_INFO", 0x84000005: "PSCI_MIGRATE",
    0xC4000005: "PSCI_MIGRATE", 0x84000006: "PSCI_MIGRATE_INFO_TYPE", 0x84000008: "PSCI_SYSTEM_OFF",
    0x84000009: "PSCI_SYSTEM_RESET", 0x8400000A: "PSCI_FEATURES", 0x8400000E: "PSCI_SYSTEM_SUSPEND",
    0xC400000E: "PSCI_SYSTEM_SUSPEND", 0x84000012: "PSCI_SYSTEM_RESET2", 0xC4000012: "PSCI_SYSTEM_RESET2",
    0x84000050: "TRNG_VERSION", 0x84000051: "TRNG_FEATURES", 0x84000052: "TRNG_GET_UUID",
    0x84000053: "TRNG_RND32", 0xC4000053: "TRNG_RND64",
    0x86000000: "KVM_FEATURES", 0x86000001: "KVM_PTP", 0x8600FF01: "KVM_VENDOR_HYP_CALL_UID",
}

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
        return HYPERCALLS.get(value) or SMCCC.get(value, "")
    if kind == KVMEXIT_DETAIL_USER:
        return KVM_EXITS.get(value, "")
    if kind == KVMEXIT_DETAIL_SYSREG:
        return SYSREGS.get(value) or "S%d_%d_C%d_C%d_%d" % (value >> 19 & 3, value >> 16 & 7, value >> 12 & 0xF,
                                                             value >> 8 & 0xF, value >> 5 & 7)
    if kind == KVMEXIT_DETAIL_WFX:
        return "WFE" if value else "WFI"
    return ""


def dir_name(kind, d):
    """The direction's word, None where the kind has none."""
    return None if d == KVMEXIT_DIR_NONE else DIRS.get(kind, {}).get(d, str(d))


def label(kind, d, value):
    """One detail as the table prints it under its exit reason:
    "out 0x0080 POST/delay", "wrmsr 0x6e0 IA32_TSC_DEADLINE",
    "mmio write 0xfee00000 LAPIC", "hypercall 5 KVM_HC_KICK_CPU",
    "userspace IO" (the exit to the VMM that followed); arm64:
    "hvc 0x84000000 PSCI_VERSION", "mrs ID_AA64PFR0_EL1", "wfx WFI"."""
    n = name(kind, value)
    if kind == KVMEXIT_DETAIL_PIO:
        text = "%s 0x%04x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_MSR:
        text = "%s 0x%x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_MMIO:
        text = "mmio %s 0x%x" % (dir_name(kind, d), value)
    elif kind == KVMEXIT_DETAIL_HYPERCALL:
        # arm64's SMCCC function ids have bit 31 set: in hex
        text = "hypercall %d" % value if value < 1 << 31 else "hvc 0x%x" % value
    elif kind == KVMEXIT_DETAIL_USER:
        return "userspace %s" % (n or value)
    elif kind == KVMEXIT_DETAIL_SYSREG:
        return "%s %s" % (dir_name(kind, d), n)       # mrs ID_AA64PFR0_EL1, msr S3_0_C15_C2_0
    elif kind == KVMEXIT_DETAIL_WFX:
        return "wfx %s" % n
    else:
        text = "kind%d %d 0x%x" % (kind, d, value)
    return "%s %s" % (text, n) if n else text
