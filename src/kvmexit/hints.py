# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--explain: what a frequent exit means on this host and what usually
removes it (pure: the rules are data, the host's facts come in).

Each rule names the exit reasons it is about (VMX, SVM and arm64 spellings; the
calibration hook's rows are port writes, so the I/O rules take them too),
optionally the detail it needs (a port, an MSR, an MMIO page, a hypercall:
--detail's counts under the row), a condition over the row, the module
parameters and the VMM's command line, the facts it shows ("seen"), its
text, and its source.  A row gets the first rule that applies; the texts
state no number but those measured or read, which come in as fields.
"""
import re
from dataclasses import dataclass

from . import details, report
from .abi import (KVMEXIT_DETAIL_HYPERCALL, KVMEXIT_DETAIL_MMIO, KVMEXIT_DETAIL_MSR, KVMEXIT_DETAIL_PIO,
                  KVMEXIT_DETAIL_SYSREG, KVMEXIT_DETAIL_WFX, KVMEXIT_DIR_FAST_WRITE, KVMEXIT_DIR_WRITE)
from .report import DetailCount

IO = frozenset({"IO_INSTRUCTION", "IOIO"})
MSR = frozenset({"MSR_READ", "MSR_WRITE", "MSR", "MSR_READ_IMM", "MSR_WRITE_IMM"})
MMIO_EXITS = frozenset({"EPT_MISCONFIG", "EPT_VIOLATION", "NPF", "APIC_ACCESS"})
APIC = frozenset({"APIC_ACCESS", "APIC_WRITE", "EOI_INDUCED", "TPR_BELOW_THRESHOLD", "AVIC_INCOMPLETE_IPI",
                  "AVIC_UNACCELERATED_ACCESS"})
# arm64: ID registers are Op0 3, Op1 0, CRn 0 (arch/arm64/include/asm/sysreg.h); the
# timer's, Op0 3, Op1 3, CRn 14
ARM64_ID_REG = lambda d: d.value >> 12 == (3 << 7 | 0 << 4 | 0)          # noqa: E731
ARM64_TIMER_REG = lambda d: d.value >> 12 == (3 << 7 | 3 << 4 | 14)      # noqa: E731
# the rows --explain looks at: at most this many per VM, each this share of the VM's exits or more
TOP_ROWS, MIN_SHARE = 3, 0.05


@dataclass(frozen=True)
class Row:
    """One VM's exits of one reason, as a rule sees them."""
    pid: int
    vm: str
    isa: str          # "vmx", "svm", "arm64", "pio" (the calibration hook: reason is a port)
    reason: int
    reason_name: str
    count: int
    share: float      # of the VM's exits
    rate: float       # per second, None where the time is not known
    detail: tuple     # report.DetailCount, most first


@dataclass(frozen=True)
class Ctx:
    row: Row
    params: dict      # HostFacts.params
    vm: object        # hostfacts.VmFacts or None
    host: object      # HostFacts

    def param(self, name):
        return self.params.get(name)

    def dominant(self, kind):
        """(the row's most frequent detail of a kind, its share of that
        kind's events under the row), or (None, 0); a calibration row (a port
        write) is its own I/O detail."""
        found = self.row.detail
        if kind == KVMEXIT_DETAIL_PIO and self.row.isa == "pio":
            found = (DetailCount(KVMEXIT_DETAIL_PIO, KVMEXIT_DIR_WRITE, self.row.reason, self.row.count),)
        found = [d for d in found if d.kind == kind]
        if not found:
            return None, 0
        top = max(found, key=lambda d: d.count)       # the first of equals: most first already
        return top, top.count / sum(d.count for d in found)

    def flag(self, name):
        """A -cpu flag of the VMM: True, False, or None (not given)."""
        return self.vm.cpu_flags().get(name) if self.vm else None


def _port(*ranges):
    return lambda d: any(lo <= d.value <= hi for lo, hi in ranges)


def _msr(*values, write=None):
    return lambda d: d.value in values and (write is None or (d.dir == KVMEXIT_DIR_WRITE) == write)


def _on(value):
    return value is not None and value.upper() in ("Y", "1")


def _off(value):
    return value is not None and value.upper() in ("N", "0")


# -- the facts a rule may show: name -> callable(ctx) -> str or None (not read here)
def _vmm_cpu(c):
    return None if c.vm is None else c.vm.options.get("-cpu", "(not given)")


def _placement(c):
    if c.vm is None or not c.vm.affinity:
        return None
    return "%d vCPUs, %d pinned to one CPU, on %d host CPUs" % (c.vm.vcpus, c.vm.pinned, c.host.host_cpus)


def _windows(vm):
    """A VM whose command line names Windows (-name, -smbios, drive or image names)."""
    return any(re.search(r"win(dows|\d|2k)", a, re.I) for a in vm.argv[1:])


FACTS = {
    "vmm": lambda c: None if c.vm is None else c.vm.vmm,
    "-cpu": _vmm_cpu,
    "-overcommit": lambda c: None if c.vm is None else c.vm.options.get("-overcommit", "(not given)"),
    "placement": _placement,
    "clocksource": lambda c: c.host.clocksource,
    "numa_balancing": lambda c: c.host.memory.get("numa_balancing"),
    "thp": lambda c: c.host.memory.get("thp"),
    "ksm": lambda c: c.host.memory.get("ksm"),
}
# a parameter under each name a kernel may expose it by, the newest first
PARAM_NAMES = {"kvm.lapic_timer_advance": ("kvm.lapic_timer_advance", "kvm.lapic_timer_advance_ns")}
# what --detail's kinds are, in the words of the dominant detail's share
KIND_WORDS = {KVMEXIT_DETAIL_PIO: "port I/O", KVMEXIT_DETAIL_MSR: "MSR accesses", KVMEXIT_DETAIL_MMIO: "MMIO",
              KVMEXIT_DETAIL_HYPERCALL: "calls", KVMEXIT_DETAIL_SYSREG: "register accesses",
              KVMEXIT_DETAIL_WFX: "waits"}


@dataclass(frozen=True)
class Rule:
    name: str
    reasons: frozenset
    cause: str        # what causes the exit; may use {port} {port_name} {msr} {msr_name} {page} {page_name} {hypercall}
    remedy: str       # the usual remedy
    cause_source: str      # where the cause is stated: kernel file and function, doc and section
    fix_source: str        # where the remedy is
    detail: tuple = None   # (kind, pred): the row's dominant detail of that kind must satisfy pred
    when: object = None    # callable(Ctx) -> bool, beyond reasons and detail
    seen: tuple = ()       # module parameters ("kvm.halt_poll_ns") and FACTS names shown with their values
    about: str = ""        # the detail and condition, in words (the README's table)

    @property
    def source(self):
        """Both sources, as output shows them."""
        return self.cause_source if self.cause_source == self.fix_source else "%s; %s" % (
            self.cause_source, self.fix_source)


RULES = (
    Rule("windows-unenlightened", IO | MMIO_EXITS | APIC, "a Windows guest without Hyper-V enlightenments: it "
         "drives the emulated timers and APIC itself", "give it the enlightenments QEMU recommends (hv-relaxed, "
         "hv-vapic, hv-spinlocks, hv-time, hv-synic, hv-stimer, hv-avic with APICv/AVIC)",
         "QEMU docs/system/i386/hyperv.rst", "QEMU docs/system/i386/hyperv.rst (Recommendations)",
         when=lambda c: c.vm is not None and _windows(c.vm) and not any(
             f.startswith("hv") and on for f, on in c.vm.cpu_flags().items()),
         seen=("-cpu",), about="a VMM whose -name, -smbios or drives say Windows, no hv-* CPU flag"),
    # -- port I/O (the dominant port of the row) --------------------------------
    Rule("io-delay-port", IO, "the guest writes port {port}{port_name} to delay its I/O: each write a round trip "
         "to the VMM",
         "a Linux guest skips these delays with the boot option io_delay=none, or when it runs on KVM with "
         "QEMU's kvm-nopiodelay CPU flag (on by default)",
         "Linux arch/x86/kernel/io_delay.c (io_delay_type, port 0x80)",
         "Linux Documentation/admin-guide/kernel-parameters.txt (io_delay); QEMU docs/system/i386/kvm-pv.rst "
         "(kvm-nopiodelay)", detail=(KVMEXIT_DETAIL_PIO, _port((0x80, 0x80))), seen=("vmm", "-cpu"),
         about="port 0x80"),
    Rule("io-pm-timer", IO, "the guest reads the ACPI PM timer at port {port}: its clocksource is acpi_pm, "
         "which Linux takes when it trusts neither the TSC nor kvm-clock",
         "give the guest kvm-clock (QEMU's kvmclock CPU flag, on by default) or an invariant TSC it can trust; "
         "Windows guests: hv-time", "Linux Documentation/virt/kvm/x86/timekeeping.rst (ACPI PM timer)",
         "QEMU docs/system/i386/kvm-pv.rst (kvmclock); QEMU docs/system/i386/hyperv.rst (hv-time)",
         detail=(KVMEXIT_DETAIL_PIO, _port((0x608, 0x60B), (0xB008, 0xB00B))), seen=("vmm", "-cpu"),
         about="ports 0x608-0x60b, 0xb008-0xb00b"),
    Rule("io-rtc", IO, "the guest accesses the RTC/CMOS at port {port}: clock reads, or the RTC's periodic "
         "interrupt, which older Windows uses as its tick", "Linux guests: kvm-clock, and no hwclock or RTC "
         "timer in a loop; Windows guests: the Hyper-V clock and timers (hv-time, hv-stimer)",
         "Linux Documentation/virt/kvm/x86/timekeeping.rst (RTC)",
         "QEMU docs/system/i386/hyperv.rst (hv-time, hv-stimer)", detail=(KVMEXIT_DETAIL_PIO, _port((0x70, 0x71))),
         seen=("vmm", "-cpu"), about="ports 0x70-0x71"),
    Rule("io-serial", IO, "the guest writes an emulated UART at port {port}{port_name}, a byte per exit: a "
         "serial console", "lower the guest's console log level (loglevel=, quiet) or give it a virtio console "
         "(-device virtconsole)", "QEMU hw/char/serial.c (one register access per byte)",
         "QEMU manual: -device virtconsole; Linux Documentation/admin-guide/kernel-parameters.txt (loglevel)",
         detail=(KVMEXIT_DETAIL_PIO, _port((0x3F8, 0x3FF), (0x2F8, 0x2FF), (0x3E8, 0x3EF), (0x2E8, 0x2EF))),
         seen=("vmm",), about="COM1-4 ports"),
    Rule("io-pci-config", IO, "PCI configuration space through ports {port}: Linux reads the legacy part of "
         "config space (its PCI-compatible part) this way even where MMCONFIG exists", "at run time only drivers or tools that read config space "
         "(lspci, monitoring agents) do this: find them in the guest", "Linux arch/x86/pci/common.c (raw_pci_read: "
         "reg < 256 takes raw_pci_ops)", "Linux arch/x86/pci/common.c (raw_pci_read)",
         detail=(KVMEXIT_DETAIL_PIO, _port((0xCF8, 0xCF8), (0xCFA, 0xCFF))), seen=("vmm",),
         about="ports 0xcf8, 0xcfa-0xcff (not 0xcf9, reset)"),
    Rule("io-device", IO, "port I/O to a device the VMM emulates (port {port}{port_name}): each access a round "
         "trip to userspace", "a virtio device in place of the emulated one: its notifications KVM completes in "
         "the kernel (ioeventfd)", "Linux Documentation/virt/kvm/api.rst (KVM_EXIT_IO)",
         "Linux Documentation/virt/kvm/api.rst (KVM_IOEVENTFD)",
         detail=(KVMEXIT_DETAIL_PIO, lambda d: True), seen=("vmm",), about="any other port"),
    # -- idling and spinning -----------------------------------------------------
    Rule("hlt", frozenset({"HLT", "IDLE_HLT"}), "the vCPU had nothing to run and halted; KVM polls for a wake-up "
         "up to halt_poll_ns before it sleeps", "idle exits cost the guest little: for wake-up latency raise "
         "kvm.halt_poll_ns (it burns host CPU) or let the guest poll (cpuidle-haltpoll, guest_halt_poll_ns); on "
         "host CPUs dedicated to the vCPUs, QEMU's -overcommit cpu-pm=on lets the guest halt without exiting",
         "Linux Documentation/virt/kvm/halt-polling.rst",
         "Linux Documentation/virt/guest-halt-polling.rst; QEMU manual (-overcommit cpu-pm)",
         when=lambda c: "cpu-pm=on" not in ((c.vm.options.get("-overcommit") if c.vm else None) or ""),
         seen=("kvm.halt_poll_ns", "kvm.halt_poll_ns_grow", "kvm.halt_poll_ns_shrink", "-overcommit"),
         about="unless the VMM has -overcommit cpu-pm=on"),
    Rule("mwait", frozenset({"MWAIT_INSTRUCTION", "MWAIT", "MWAIT_COND", "MONITOR_INSTRUCTION", "MONITOR"}),
         "the guest idles with MONITOR/MWAIT, which KVM intercepts and treats as a no-op (or as HLT, without "
         "the MWAIT CPUID bit)", "on host CPUs dedicated to the vCPUs, QEMU's -overcommit cpu-pm=on lets the "
         "guest run MWAIT natively; otherwise let it idle with HLT", "Linux arch/x86/kvm/x86.c "
         "(kvm_emulate_mwait, kvm_can_mwait_in_guest)", "QEMU manual (-overcommit cpu-pm)",
         seen=("-overcommit", "placement")),
    Rule("pause", frozenset({"PAUSE_INSTRUCTION", "PAUSE"}), "pause-loop exiting: a vCPU spun on a lock, usually "
         "one held by a preempted vCPU of the same VM", "fewer vCPUs than host CPUs, or vCPUs pinned to CPUs of "
         "their own; paravirtual spinlocks (kvm-pv-unhalt) let waiters sleep; with dedicated CPUs, QEMU's "
         "-overcommit cpu-pm=on turns pause-loop exiting off for that VM (the modules' ple_gap and "
         "pause_filter_count do it for all)", "Intel SDM Vol. 3C, PAUSE-Loop Exiting; AMD APM Vol. 2, Pause "
         "Intercept Filtering", "QEMU docs/system/i386/kvm-pv.rst (kvm-pv-unhalt); QEMU manual (-overcommit "
         "cpu-pm); Linux arch/x86/kvm/x86.c (KVM_X86_DISABLE_EXITS_PAUSE)",
         seen=("kvm_intel.ple_gap", "kvm_intel.ple_window", "kvm_amd.pause_filter_count",
               "kvm_amd.pause_filter_thresh", "placement", "-overcommit")),
    Rule("external-interrupt", frozenset({"EXTERNAL_INTERRUPT", "INTR", "IRQ"}), "a host interrupt (a device's, a "
         "timer tick, an IPI) arrived on the CPU while the guest ran", "pin the vCPU threads to CPUs kept free "
         "of host interrupts and housekeeping (irqaffinity=, isolcpus=, nohz_full=)",
         "Intel SDM Vol. 3C, External-Interrupt Exiting; AMD APM Vol. 2, INTR intercept; Arm ARM, HCR_EL2.IMO",
         "Linux Documentation/admin-guide/kernel-per-CPU-kthreads.rst; Documentation/admin-guide/"
         "kernel-parameters.txt (irqaffinity, nohz_full)", seen=("placement",)),
    # -- MSRs (the dominant MSR of the row) ---------------------------------------
    Rule("msr-tsc-deadline", MSR, "the guest arms its APIC timer in TSC-deadline mode: one wrmsr of {msr} per timer",
         "fewer guest timers make fewer (a tickless guest kernel); on host CPUs dedicated to the vCPUs, with "
         "APICv and QEMU's -overcommit cpu-pm=on, turning kvm.pi_inject_timer on posts the timer interrupt "
         "without a further exit",
         "Intel SDM Vol. 3A, TSC-Deadline Mode; Linux arch/x86/kvm/lapic.c (kvm_set_lapic_tscdeadline_msr)",
         "Linux Documentation/admin-guide/kernel-parameters.txt (kvm.pi_inject_timer); arch/x86/kvm/lapic.c "
         "(kvm_can_post_timer_interrupt)", detail=(KVMEXIT_DETAIL_MSR, _msr(0x6E0, write=True)),
         seen=("kvm_intel.preemption_timer", "kvm.pi_inject_timer", "kvm.lapic_timer_advance"),
         about="wrmsr 0x6e0"),
    Rule("msr-x2apic-icr", MSR, "the guest sends IPIs through the x2APIC ICR ({msr}): APICv alone still exits "
         "on these writes", "IPI virtualization (kvm_intel.enable_ipiv, on CPUs that have it) or AVIC deliver "
         "IPIs without this exit; paravirtual IPIs (kvm-pv-ipi) send many in one hypercall; Windows guests: "
         "hv-ipi", "Linux arch/x86/kvm/vmx/vmx.c (enable_ipiv); Intel SDM Vol. 3C, IPI Virtualization",
         "Linux Documentation/virt/kvm/x86/hypercalls.rst (KVM_HC_SEND_IPI); QEMU docs/system/i386/kvm-pv.rst "
         "(kvm-pv-ipi); QEMU docs/system/i386/hyperv.rst (hv-ipi)",
         detail=(KVMEXIT_DETAIL_MSR, _msr(0x830, write=True)),
         seen=("kvm_intel.enable_apicv", "kvm_intel.enable_ipiv", "kvm_amd.avic", "-cpu"), about="wrmsr 0x830"),
    Rule("msr-x2apic-eoi", MSR, "the guest signals end of interrupt through the x2APIC EOI register ({msr})",
         "APICv's virtual-interrupt delivery or AVIC take EOIs without exits; else paravirtual EOI (kvm-pv-eoi, "
         "QEMU's default)", "Intel SDM Vol. 3C, Virtual-Interrupt Delivery",
         "Linux Documentation/virt/kvm/x86/msr.rst (MSR_KVM_PV_EOI_EN)",
         detail=(KVMEXIT_DETAIL_MSR, _msr(0x80B, write=True)),
         seen=("kvm_intel.enable_apicv", "kvm_amd.avic", "-cpu"), about="wrmsr 0x80b"),
    Rule("msr-hyperv", MSR, "a Hyper-V enlightened guest (Windows) uses synthetic MSR {msr}{msr_name}: KVM "
         "handles these in the kernel, they are there because the enlightenments are on", "nothing to remove; "
         "with hv-synic, give hv-avic too, or APICv/AVIC is off for the VM",
         "Linux arch/x86/kvm/hyperv.c (kvm_hv_set_msr_common)", "QEMU docs/system/i386/hyperv.rst (hv-synic, "
         "hv-avic)", detail=(KVMEXIT_DETAIL_MSR, lambda d: 0x40000000 <= d.value <= 0x40000108), seen=("-cpu",),
         about="MSRs 0x40000000-0x40000108"),
    Rule("msr-other", MSR, "the guest reads or writes MSR {msr}{msr_name}, which KVM intercepts", "the MSR's name "
         "says which feature: the guest's kernel or its CPU model (-cpu ...,-feature) decides whether it is used",
         "Intel SDM Vol. 4, Model-Specific Registers", "QEMU manual (-cpu)", detail=(KVMEXIT_DETAIL_MSR, lambda d: True),
         seen=("-cpu",), about="any other MSR"),
    # -- MMIO (the dominant page of the row) ----------------------------------------
    Rule("mmio-apic", MMIO_EXITS, "the guest accesses its xAPIC by MMIO (page {page})", "x2APIC mode (QEMU "
         "-cpu ...,+x2apic) with APICv or AVIC makes these accesses exit-free or cheap",
         "Intel SDM Vol. 3C, APIC Virtualization; AMD APM Vol. 2, AVIC", "QEMU manual (-cpu x2apic)",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: d.value == 0xFEE00000),
         seen=("kvm_intel.enable_apicv", "kvm_amd.avic", "-cpu"), about="MMIO page 0xfee00000"),
    Rule("mmio-hpet", MMIO_EXITS, "the guest reads the emulated HPET (page {page}): its clocksource or timer is "
         "the HPET", "Linux guests: kvm-clock; Windows guests: the Hyper-V clock and timers (hv-time, hv-stimer), "
         "and the HPET off (-machine hpet=off)", "Linux Documentation/virt/kvm/x86/timekeeping.rst (HPET)",
         "QEMU docs/system/i386/hyperv.rst (hv-time, hv-stimer); QEMU manual (-machine hpet)",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: d.value == 0xFED00000), seen=("vmm", "-cpu"),
         about="MMIO page 0xfed00000"),
    Rule("mmio-ioapic", MMIO_EXITS, "the guest programs the IOAPIC (page {page}): masking and unmasking legacy "
         "interrupt lines", "devices that interrupt by MSI or MSI-X (virtio-pci does) in place of legacy lines",
         "Intel 82093AA I/O APIC datasheet; Linux arch/x86/kvm/ioapic.c", "Linux Documentation/PCI/msi-howto.rst",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: d.value == 0xFEC00000), seen=("vmm",), about="MMIO page 0xfec00000"),
    Rule("mmio-ioeventfd", MMIO_EXITS, "virtio notifications to page {page}: KVM's fast MMIO path signals the "
         "device's eventfd in the kernel (ioeventfd)", "already the cheapest MMIO exit; fewer come with fewer "
         "notifications (larger requests, the virtio event index)", "Linux Documentation/virt/kvm/api.rst "
         "(KVM_IOEVENTFD); arch/x86/kvm/vmx/vmx.c (handle_ept_misconfig: kvm_fast_mmio)",
         "virtio specification, Driver Notifications (VIRTIO_F_EVENT_IDX)",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: d.dir == KVMEXIT_DIR_FAST_WRITE), seen=("vmm",),
         about="fast MMIO writes (kvm_fast_mmio)"),
    Rule("mmio-device", MMIO_EXITS, "MMIO to page {page}{page_name} of an emulated device: each access decoded "
         "and emulated by KVM, most handed on to the VMM", "a virtio device (virtio-net, virtio-blk) in place of "
         "an emulated one (e1000, IDE); virtio's notifications stay in the kernel (ioeventfd)",
         "Linux Documentation/virt/kvm/x86/mmu.rst (MMIO sptes); Documentation/virt/kvm/api.rst (KVM_EXIT_MMIO)",
         "Linux Documentation/virt/kvm/api.rst (KVM_IOEVENTFD)",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: True), seen=("vmm",), about="any other MMIO page"),
    Rule("mmio-unseen", frozenset({"EPT_MISCONFIG"}), "MMIO to an emulated device: KVM marks device pages so that "
         "their accesses exit as EPT misconfigurations", "run with --detail to see the page; then the mmio-* "
         "rules apply", "Linux Documentation/virt/kvm/x86/mmu.rst (MMIO sptes)",
         "this tool (--detail)", seen=("vmm", "kvm.mmio_caching"), about="no MMIO seen under the row (without --detail)"),
    Rule("ept-fault", frozenset({"EPT_VIOLATION", "NPF"}), "guest memory the host had not mapped: first touch, "
         "pages the host reclaimed, migrated (NUMA balancing), merged (KSM) or split, or write tracking for "
         "dirty logging; on AMD also MMIO where kvm.mmio_caching is off", "back the guest with huge pages and "
         "preallocate it (hugetlbfs with -mem-prealloc, or a memory backend with prealloc=on); pin it to a NUMA "
         "node; where the iTLB multihit mitigation is not needed, kvm.nx_huge_pages=off",
         "Linux Documentation/virt/kvm/x86/mmu.rst; Documentation/admin-guide/mm/ksm.rst; "
         "Documentation/admin-guide/sysctl/kernel.rst (numa_balancing)",
         "QEMU manual (-mem-prealloc, memory-backend prealloc); Linux Documentation/admin-guide/hw-vuln/multihit.rst",
         seen=("kvm.nx_huge_pages", "kvm.tdp_mmu", "kvm.mmio_caching", "kvm_intel.pml", "numa_balancing",
               "thp", "ksm"), about="no MMIO under the row"),
    # -- the local APIC ------------------------------------------------------------
    Rule("apic-unaccelerated", frozenset({"APIC_ACCESS", "TPR_BELOW_THRESHOLD"}), "local APIC accesses with APIC "
         "virtualization off", "turn on APICv (kvm_intel's enable_apicv) or AVIC (kvm_amd's avic) where the CPU "
         "has it", "Intel SDM Vol. 3C, APIC Virtualization; AMD APM Vol. 2, AVIC",
         "Linux Documentation/admin-guide/kernel-parameters.txt (kvm-amd.avic); arch/x86/kvm/vmx/vmx.c "
         "(enable_apicv)", when=lambda c: _off(c.param("kvm_intel.enable_apicv")) or _off(c.param("kvm_amd.avic")),
         seen=("kvm_intel.enable_apicv", "kvm_amd.avic"), about="enable_apicv or avic off"),
    Rule("apic-accelerated", APIC, "what APIC virtualization still traps: APIC register writes, EOIs of "
         "level-triggered interrupts, IPIs to vCPUs not running; or APICv inhibited for this VM (Hyper-V SynIC "
         "without hv-avic, PIT reinjection, nesting, ...)", "x2APIC mode in the guest, MSI (edge) interrupts "
         "where the device has them; for an inhibited VM, remove the inhibit's cause (its list is in the "
         "kernel's enum kvm_apicv_inhibit)", "Intel SDM Vol. 3C, APIC Virtualization; AMD APM Vol. 2, AVIC; "
         "Linux arch/x86/include/asm/kvm_host.h (enum kvm_apicv_inhibit)",
         "QEMU docs/system/i386/hyperv.rst (hv-avic); Linux arch/x86/include/asm/kvm_host.h (enum kvm_apicv_inhibit)",
         when=lambda c: _on(c.param("kvm_intel.enable_apicv")) or _on(c.param("kvm_amd.avic")),
         seen=("kvm_intel.enable_apicv", "kvm_amd.avic", "-cpu"), about="enable_apicv or avic on"),
    # -- instructions that always exit, timers, hypercalls ----------------------------
    Rule("cpuid", frozenset({"CPUID"}), "CPUID always exits: the guest queries CPU features, at boot and in "
         "software that serializes or identifies the CPU with it", "frequent CPUID at run time comes from the "
         "guest's software; nothing on the host removes the exit",
         "Intel SDM Vol. 3C, Instructions That Cause VM Exits Unconditionally", "Linux "
         "Documentation/virt/kvm/x86/cpuid.rst"),
    Rule("preemption-timer", frozenset({"PREEMPTION_TIMER"}), "the VMX preemption timer expired: KVM runs the "
         "guest's APIC timer on it", "one exit per guest timer expiry: a tickless guest with fewer timers has "
         "fewer; with kvm_intel preemption_timer off the timer moves to a host hrtimer and its interrupt",
         "Intel SDM Vol. 3C, VMX-Preemption Timer", "Linux arch/x86/kvm/vmx/vmx.c (enable_preemption_timer)",
         seen=("kvm_intel.preemption_timer",)),
    Rule("xsetbv", frozenset({"XSETBV"}), "the guest writes XCR0, its extended-state features: at boot and CPU "
         "bring-up, or from software that changes XCR0 at run time", "frequent XSETBV comes from the guest's "
         "software; nothing on the host removes the exit", "Intel SDM Vol. 3C, Instructions That Cause VM Exits "
         "Unconditionally (XSETBV); AMD APM Vol. 2, XSETBV intercept", "Linux arch/x86/kvm/x86.c "
         "(kvm_emulate_xsetbv)"),
    Rule("rdtsc", frozenset({"RDTSC", "RDTSCP"}), "KVM does not intercept the guest's TSC reads itself: these "
         "come from a nested hypervisor in the guest that intercepts its own guests' reads, or RDTSCP where the "
         "CPU model lacks it", "look at the nested hypervisor's TSC settings; give the guest a CPU model with "
         "rdtscp", "Linux arch/x86/kvm/vmx/nested.c (RDTSC exiting only for L2); arch/x86/kvm/vmx/vmx.c "
         "(vmx_exec_control)", "QEMU manual (-cpu rdtscp)", seen=("-cpu",)),
    Rule("hypercall", frozenset({"VMCALL", "VMMCALL"}), "hypercalls, mostly {hypercall}: {hypercall_meaning}",
         "these replace costlier exits; many kicks mean lock contention in the guest, many yields vCPU "
         "overcommit", "Linux Documentation/virt/kvm/x86/hypercalls.rst", "Linux "
         "Documentation/virt/kvm/x86/hypercalls.rst", detail=(KVMEXIT_DETAIL_HYPERCALL, lambda d: True),
         seen=("placement",), about="the top hypercall"),
    # -- arm64 -------------------------------------------------------------
    Rule("arm64-wfi", frozenset({"WFx"}), "the vCPU had nothing to run and executed WFI: KVM blocks it until an "
         "interrupt, polling for one up to halt_poll_ns first", "idle exits cost the guest little: for wake-up "
         "latency raise kvm.halt_poll_ns (it burns host CPU); on host CPUs dedicated to the vCPUs, a kernel "
         "with kvm-arm.wfi_trap_policy can leave WFI untrapped (notrap; the architecture allows that, without "
         "guaranteeing it)",
         "Linux arch/arm64/kvm/handle_exit.c (kvm_handle_wfx); Documentation/virt/kvm/halt-polling.rst",
         "Linux Documentation/virt/kvm/halt-polling.rst; Documentation/admin-guide/kernel-parameters.txt "
         "(kvm-arm.wfi_trap_policy)", detail=(KVMEXIT_DETAIL_WFX, lambda d: d.value == 0),
         seen=("kvm.halt_poll_ns", "kvm.halt_poll_ns_grow", "kvm.halt_poll_ns_shrink"), about="WFI"),
    Rule("arm64-wfe", frozenset({"WFx"}), "the guest waits with WFE, in a spinlock or for an event; KVM traps WFE "
         "only while other tasks share the vCPU's CPU, and yields to another vCPU", "vCPUs on host CPUs of "
         "their own (KVM then stops trapping WFE), fewer vCPUs than host CPUs",
         "Linux arch/arm64/kvm/handle_exit.c (kvm_handle_wfx: kvm_vcpu_on_spin)",
         "Linux arch/arm64/kvm/arm.c (kvm_arch_vcpu_load: vcpu_set_wfx_traps)",
         detail=(KVMEXIT_DETAIL_WFX, lambda d: d.value == 1),
         seen=("placement",), about="WFE"),
    Rule("arm64-idle", frozenset({"WFx"}), "WFI or WFE: the vCPU idled (WFI) or waited in a spinlock (WFE); "
         "--detail tells which", "WFI: raise kvm.halt_poll_ns for wake-up latency; WFE: vCPUs on host CPUs of "
         "their own", "Linux arch/arm64/kvm/handle_exit.c (kvm_handle_wfx)", "Linux "
         "Documentation/virt/kvm/halt-polling.rst; arch/arm64/kvm/arm.c (kvm_arch_vcpu_load: vcpu_set_wfx_traps)",
         seen=("kvm.halt_poll_ns", "placement"), about="without --detail"),
    Rule("arm64-id-register", frozenset({"SYS64"}), "the guest reads its CPU ID register {sysreg}: KVM traps them "
         "(HCR_EL2.TID3) to present the VM's own feature set", "reads at boot are few; frequent ones at run time "
         "come from guest software that probes CPU features on every call, and nothing on the host removes them",
         "Linux arch/arm64/kvm/sys_regs.c (ID register emulation); Documentation/arch/arm64/"
         "cpu-feature-registers.rst", "Linux Documentation/arch/arm64/cpu-feature-registers.rst",
         detail=(KVMEXIT_DETAIL_SYSREG, ARM64_ID_REG), about="ID registers (Op0 3, Op1 0, CRn 0)"),
    Rule("arm64-timer-register", frozenset({"SYS64"}), "the guest uses timer register {sysreg}, which KVM "
         "emulates: the EL1 physical timer and counter trap where the CPU lacks enhanced counter virtualization",
         "a guest kernel on the virtual timer and counter (Linux's arch_timer uses them at EL1), or a CPU with "
         "FEAT_ECV", "Linux arch/arm64/kvm/arch_timer.c (the emulated EL1 physical timer); "
         "arch/arm64/kvm/sys_regs.c (access_arch_timer)", "Linux arch/arm64/kvm/arch_timer.c (FEAT_ECV)",
         detail=(KVMEXIT_DETAIL_SYSREG, ARM64_TIMER_REG), about="timer registers (Op0 3, Op1 3, CRn 14)"),
    Rule("arm64-sysreg", frozenset({"SYS64"}), "the guest accesses system register {sysreg}, which KVM traps and "
         "emulates", "the register's name says which feature uses it: the guest's kernel or software decides "
         "how often", "Linux arch/arm64/kvm/sys_regs.c (the trapped registers and their handlers)",
         "Linux arch/arm64/include/asm/sysreg.h (the register's definition)",
         detail=(KVMEXIT_DETAIL_SYSREG, lambda d: True), about="any other register"),
    Rule("arm64-mmio", frozenset({"DABT_LOW"}), "MMIO to page {page} of a device the VMM emulates: each access "
         "a fault in the guest-physical translation, decoded by KVM and handed to the VMM", "virtio devices, whose notifications KVM "
         "completes in the kernel (ioeventfd), in place of emulated ones", "Linux arch/arm64/kvm/mmio.c "
         "(io_mem_abort)", "Linux Documentation/virt/kvm/api.rst (KVM_IOEVENTFD)",
         detail=(KVMEXIT_DETAIL_MMIO, lambda d: True), seen=("vmm",), about="an MMIO page"),
    Rule("arm64-stage2-fault", frozenset({"DABT_LOW", "IABT_LOW"}), "guest memory the host had not mapped for "
         "the guest: first touch, reclaimed or migrated pages, or write tracking for dirty logging", "back the "
         "guest with huge pages and preallocate it (hugetlbfs with -mem-prealloc, or a memory backend with "
         "prealloc=on)", "Linux arch/arm64/kvm/mmu.c (kvm_handle_guest_abort, user_mem_abort)", "QEMU manual "
         "(-mem-prealloc, memory-backend prealloc)", seen=("vmm", "numa_balancing", "thp", "ksm"),
         about="no MMIO under the row"),
    Rule("arm64-hvc", frozenset({"HVC64"}), "SMCCC calls to the hypervisor, mostly {hypercall}: "
         "{hypercall_meaning}", "the calls are the guest's: power management (PSCI), firmware services, "
         "mitigation queries at boot; frequent CPU_SUSPEND is the guest's idle", "Linux "
         "arch/arm64/kvm/hypercalls.c (kvm_smccc_call_handler)", "Linux Documentation/virt/kvm/arm/hypercalls.rst; "
         "include/uapi/linux/psci.h",
         detail=(KVMEXIT_DETAIL_HYPERCALL, lambda d: True), about="the top call"),
)

HYPERCALL_MEANING = {0x84000000: "the guest asks KVM's PSCI version", 0x84000001: "a vCPU idles (PSCI CPU_SUSPEND)",
                     0xC4000001: "a vCPU idles (PSCI CPU_SUSPEND)", 0x84000002: "a vCPU powers off (PSCI CPU_OFF)",
                     0xC4000003: "a vCPU is brought up (PSCI CPU_ON)", 0x86000001: "the guest's ptp_kvm clock",
                     0x80000001: "the guest asks which firmware mitigations exist",
                     5: "a paravirtual spinlock's waiter woken (kvm-pv-unhalt)", 10: "paravirtual IPIs (kvm-pv-ipi)",
                     11: "a vCPU yielding to a preempted one (kvm-pv-sched-yield)",
                     12: "a confidential guest converting memory", 9: "the guest's clock paired with the host's"}


@dataclass(frozen=True)
class Hint:
    row: Row
    rule: Rule
    why: str
    seen: tuple       # (name, value) read
    fix: str


def _fields(detail):
    """The template fields a detail gives ({port}, {msr_name}, ...)."""
    if detail is None:
        return {}
    n = details.name(detail.kind, detail.value)
    named = " (%s)" % n if n else ""
    if detail.kind == KVMEXIT_DETAIL_PIO:
        return {"port": "0x%04x" % detail.value, "port_name": named}
    if detail.kind == KVMEXIT_DETAIL_MSR:
        return {"msr": "0x%x" % detail.value, "msr_name": named}
    if detail.kind == KVMEXIT_DETAIL_MMIO:
        return {"page": "0x%x" % detail.value, "page_name": named}
    if detail.kind == KVMEXIT_DETAIL_HYPERCALL:
        return {"hypercall": n or "hypercall %d" % detail.value,
                "hypercall_meaning": HYPERCALL_MEANING.get(detail.value, "see the documentation")}
    if detail.kind == KVMEXIT_DETAIL_SYSREG:
        return {"sysreg": n}
    if detail.kind == KVMEXIT_DETAIL_WFX:
        return {"wfx": n}
    return {}


def hint(row, params, vm, host, rules=RULES):
    """The first rule that applies to a row, as a Hint, or None."""
    ctx = Ctx(row, params, vm, host)
    for rule in rules:
        if row.reason_name not in rule.reasons and not (row.isa == "pio" and IO <= rule.reasons):
            continue
        d, share = ctx.dominant(rule.detail[0]) if rule.detail is not None else (None, 0)
        if rule.detail is not None and (d is None or not rule.detail[1](d)):
            continue
        if rule.when is not None and not rule.when(ctx):
            continue
        why = rule.cause.format(**_fields(d))
        if d is not None:
            why += " (%s%% of the row's %s)" % (("%.2f" % (100 * share)).rstrip("0").rstrip("."),
                                                 KIND_WORDS[d.kind])
        seen = []
        for name in rule.seen:
            if name in FACTS:
                value = FACTS[name](ctx)
            else:
                name, value = next(((n, params[n]) for n in PARAM_NAMES.get(name, (name,)) if n in params),
                                   (name, None))
            if value is not None:
                seen.append((name, value))
        return Hint(row, rule, why, tuple(seen), rule.remedy)
    return None


def rows_to_explain(rows):
    """Of report rows (one VM's), those --explain looks at: the VM's first
    TOP_ROWS by count that make MIN_SHARE of its exits or more."""
    total = sum(r.count for r in rows)
    return [r for r in sorted(rows, key=lambda r: -r.count)[:TOP_ROWS] if total and r.count / total >= MIN_SHARE]


NUMBER = re.compile(r"(?<![\w.])(0x[0-9a-f]+|\d+(\.\d+)?)(?![\w.])", re.I)


def stated_numbers(text):
    """The numbers a text states (not those inside names such as x2APIC or IA32_PAT)."""
    return [m.group(0) for m in NUMBER.finditer(text)]


def explain(snap, facts, names, seconds=None):
    """The hints for the top rows of each VM of a snapshot (pure but for names).

    Args:
        snap: counts.Snapshot (its details, with --detail, pick the rules that need them).
        facts: hostfacts.HostFacts.
        names: procinfo.Names (VM names).
        seconds: the time the snapshot covers, for rates; None: not known.
    Returns:
        [Hint], by PID, then by count.
    """
    by_vm = {}
    for r in report.rows(snap.totals, "vm", detail_counts=snap.details):
        by_vm.setdefault(r.tgid, []).append(r)
    out = []
    for pid in sorted(by_vm):
        rows = by_vm[pid]
        total = sum(r.count for r in rows)
        for r in rows_to_explain(rows):
            row = Row(pid, names.vm(pid), r.isa_name, r.reason, r.name, r.count, r.count / total,
                      r.count / seconds if seconds else None, r.detail)
            h = hint(row, facts.params, facts.vms.get(pid), facts)
            if h is not None:
                out.append(h)
    return out
