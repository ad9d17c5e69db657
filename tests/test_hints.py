# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""--explain: every rule fires on a synthetic row with a fixture of module
parameters and a VMM command line (a fake /sys/module and /proc, read by
hostfacts), and stays silent when its condition is false; the texts state
no number they were not given; the README lists every rule; and the
built-in guest's dominant exits get their hint through the real CLI."""
import json
import re

import pytest

from helpers import REPO, GuestProc, calibrated, stop_all
from kvmexit import hints, hostfacts, output
from kvmexit.abi import (KVMEXIT_DETAIL_HYPERCALL as HC, KVMEXIT_DETAIL_MMIO as MMIO, KVMEXIT_DETAIL_MSR as MSR,
                         KVMEXIT_DETAIL_PIO as PIO, KVMEXIT_DETAIL_USER as USER, KVMEXIT_DIR_NONE as NONE,
                         KVMEXIT_DIR_READ as RD, KVMEXIT_DIR_WRITE as WR, KVMEXIT_DETAIL_SYSREG as SYSREG,
                         KVMEXIT_DIR_FAST_WRITE as FAST,
                         KVMEXIT_DETAIL_WFX as WFX)
from kvmexit.details import sys_reg
from kvmexit.report import DetailCount

PID, TIDS = 4242, (4243, 4244)
PARAMS = {"kvm": {"halt_poll_ns": "200000", "halt_poll_ns_grow": "2", "halt_poll_ns_shrink": "0",
                  "nx_huge_pages": "Y", "tdp_mmu": "Y", "lapic_timer_advance_ns": "-1", "mmio_caching": "Y",
                  "pi_inject_timer": "0"},
          "kvm_intel": {"enable_apicv": "Y", "ple_gap": "128", "ple_window": "4096", "preemption_timer": "Y",
                        "pml": "Y", "enable_ipiv": "Y"}}
MEMORY = {"numa_balancing": "1", "thp": "always [madvise] never", "ksm": "0"}
ARGV = ["/usr/bin/qemu-system-x86_64", "-name", "guest=web1", "-cpu", "host,+x2apic,kvm-pv-unhalt=off",
        "-overcommit", "cpu-pm=off", "-machine", "q35"]


def _facts(tmp_path, params=PARAMS, argv=ARGV, affinity=("3", "0-7")):
    sysm = tmp_path / "sys_module"
    for mod, values in params.items():
        (sysm / mod / "parameters").mkdir(parents=True)
        for k, v in values.items():
            (sysm / mod / "parameters" / k).write_text(v + "\n")
    proc = tmp_path / "proc"
    (proc / str(PID)).mkdir(parents=True)
    (proc / str(PID) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    for tid, cpus in zip(TIDS, affinity):
        (proc / str(PID) / "task" / str(tid)).mkdir(parents=True)
        (proc / str(PID) / "task" / str(tid) / "status").write_text("Name:\tCPU/KVM\nCpus_allowed_list:\t%s\n" % cpus)
    memory = {}
    for name, text in MEMORY.items():
        (tmp_path / name).write_text(text + "\n")
        memory[name] = str(tmp_path / name)
    return hostfacts.Facts(str(sysm), str(proc), memory).update({PID: list(TIDS)})


def _row(reason_name, isa="vmx", detail=(), count=1000, share=0.5, reason=0):
    return hints.Row(PID, "web1", isa, reason, reason_name, count, share, 100.0,
                     tuple(DetailCount(k, d, v, n) for k, d, v, n in detail))


def _hint(facts, row):
    return hints.hint(row, facts.params, facts.vms.get(PID), facts)


def _apicv(value):
    return {**PARAMS, "kvm_intel": {**PARAMS["kvm_intel"], "enable_apicv": value}}


# rule -> (row that fires it, its seen values; the row or facts under which it is silent)
CPU = "host,+x2apic,kvm-pv-unhalt=off"
WIN_ARGV = ["/usr/bin/qemu-system-x86_64", "-name", "guest=win10", "-cpu", "host"]
# the facts a rule fires under, where not the fixture's
FIRE_FACTS = {"apic-unaccelerated": {"params": _apicv("N")}, "windows-unenlightened": {"argv": WIN_ARGV}}
PLACED = "2 vCPUs, 1 pinned to one CPU, on %d host CPUs"
MEM_SEEN = {"numa_balancing": "1", "thp": "madvise", "ksm": "0"}
CASES = {
    "windows-unenlightened": (_row("IOIO", "svm", [(PIO, RD, 0x71, 900)]), {"-cpu": "host"},
                              {"argv": WIN_ARGV[:4] + ["host,hv-time,hv-stimer"]}),
    "io-delay-port": (_row("IOIO", "svm", [(PIO, WR, 0x80, 900), (USER, NONE, 2, 900)]),
                      {"vmm": "qemu-system-x86_64", "-cpu": CPU}, _row("IOIO", "svm", [(PIO, WR, 0x60, 900)])),
    "io-pm-timer": (_row("IO_INSTRUCTION", detail=[(PIO, RD, 0x608, 50)]), {"vmm": "qemu-system-x86_64", "-cpu": CPU},
                    _row("IO_INSTRUCTION", detail=[(PIO, RD, 0x600, 50)])),
    "io-rtc": (_row("IO_INSTRUCTION", detail=[(PIO, RD, 0x71, 50)]), {"vmm": "qemu-system-x86_64", "-cpu": CPU},
               _row("IO_INSTRUCTION", detail=[(PIO, RD, 0x72, 5)])),
    "io-serial": (_row("IOIO", "svm", [(PIO, WR, 0x3F8, 50)]), {"vmm": "qemu-system-x86_64"},
                  _row("IOIO", "svm", [(PIO, WR, 0x3F0, 50)])),
    "io-pci-config": (_row("IOIO", "svm", [(PIO, RD, 0xCFC, 50)]), {"vmm": "qemu-system-x86_64"},
                      _row("IOIO", "svm", [(PIO, WR, 0xCF9, 50)])),
    "io-device": (_row("IOIO", "svm", [(PIO, WR, 0xC050, 50)]), {"vmm": "qemu-system-x86_64"}, _row("IOIO", "svm")),
    "hlt": (_row("HLT"), {"kvm.halt_poll_ns": "200000", "kvm.halt_poll_ns_grow": "2", "kvm.halt_poll_ns_shrink": "0",
                          "-overcommit": "cpu-pm=off"}, {"argv": ARGV[:5] + ["-overcommit", "cpu-pm=on"]}),
    "mwait": (_row("MWAIT_INSTRUCTION"), {"-overcommit": "cpu-pm=off", "placement": PLACED}, _row("HLT")),
    "pause": (_row("PAUSE_INSTRUCTION"), {"kvm_intel.ple_gap": "128", "kvm_intel.ple_window": "4096",
                                          "placement": PLACED, "-overcommit": "cpu-pm=off"}, _row("HLT")),
    "external-interrupt": (_row("INTR", "svm"), {"placement": PLACED}, _row("NMI", "svm")),
    "msr-tsc-deadline": (_row("MSR_WRITE", detail=[(MSR, WR, 0x6E0, 700)]), {"kvm_intel.preemption_timer": "Y",
                         "kvm.pi_inject_timer": "0", "kvm.lapic_timer_advance_ns": "-1"},
                         _row("MSR_READ", detail=[(MSR, RD, 0x6E0, 700)])),
    "msr-x2apic-icr": (_row("MSR_WRITE", detail=[(MSR, WR, 0x830, 700)]), {"kvm_intel.enable_apicv": "Y",
                       "kvm_intel.enable_ipiv": "Y", "-cpu": CPU}, _row("MSR_READ", detail=[(MSR, RD, 0x830, 7)])),
    "msr-x2apic-eoi": (_row("MSR", "svm", [(MSR, WR, 0x80B, 700)]), {"kvm_intel.enable_apicv": "Y", "-cpu": CPU},
                       _row("MSR", "svm", [(MSR, WR, 0x80C, 7)])),
    "msr-hyperv": (_row("MSR_WRITE", detail=[(MSR, WR, 0x40000105, 700)]), {"-cpu": CPU},
                   _row("MSR_WRITE", detail=[(MSR, WR, 0x3B, 700)])),
    "msr-other": (_row("MSR_READ", detail=[(MSR, RD, 0x1A0, 7)]), {"-cpu": CPU}, _row("MSR_READ")),
    "mmio-apic": (_row("APIC_ACCESS", detail=[(MMIO, WR, 0xFEE00000, 70)]), {"kvm_intel.enable_apicv": "Y", "-cpu": CPU},
                  _row("EPT_MISCONFIG", detail=[(MMIO, WR, 0xFEBF0000, 70)])),
    "mmio-hpet": (_row("EPT_MISCONFIG", detail=[(MMIO, RD, 0xFED00000, 70)]), {"vmm": "qemu-system-x86_64", "-cpu": CPU},
                  _row("EPT_MISCONFIG", detail=[(MMIO, RD, 0xFED01000, 70)])),
    "mmio-ioapic": (_row("NPF", "svm", [(MMIO, WR, 0xFEC00000, 70)]), {"vmm": "qemu-system-x86_64"},
                    _row("NPF", "svm", [(MMIO, WR, 0xFEBF0000, 70)])),
    "mmio-ioeventfd": (_row("EPT_MISCONFIG", detail=[(MMIO, FAST, 0xFEBF1000, 70)]), {"vmm": "qemu-system-x86_64"},
                       _row("EPT_MISCONFIG", detail=[(MMIO, WR, 0xFEBF1000, 70)])),
    "mmio-device": (_row("NPF", "svm", [(MMIO, WR, 0xFEBF1000, 70)]), {"vmm": "qemu-system-x86_64"}, _row("NPF", "svm")),
    "mmio-unseen": (_row("EPT_MISCONFIG"), {"vmm": "qemu-system-x86_64", "kvm.mmio_caching": "Y"},
                    _row("EPT_MISCONFIG", detail=[(MMIO, WR, 0xFEBF0000, 70)])),
    "ept-fault": (_row("EPT_VIOLATION"), dict({"kvm.nx_huge_pages": "Y", "kvm.tdp_mmu": "Y", "kvm.mmio_caching": "Y",
                                               "kvm_intel.pml": "Y"}, **MEM_SEEN),
                  _row("EPT_VIOLATION", detail=[(MMIO, RD, 0xFEC00000, 5)])),
    "apic-unaccelerated": (_row("APIC_ACCESS"), {"kvm_intel.enable_apicv": "N"}, {"params": _apicv("Y")}),
    "apic-accelerated": (_row("EOI_INDUCED"), {"kvm_intel.enable_apicv": "Y", "-cpu": CPU}, {"params": _apicv("N")}),
    "cpuid": (_row("CPUID"), {}, _row("INVD")),
    "preemption-timer": (_row("PREEMPTION_TIMER"), {"kvm_intel.preemption_timer": "Y"}, _row("INVD")),
    "xsetbv": (_row("XSETBV", "svm"), {}, _row("INVD")),
    "rdtsc": (_row("RDTSCP"), {"-cpu": CPU}, _row("INVD")),
    "hypercall": (_row("VMCALL", detail=[(HC, NONE, 5, 70)]), {"placement": PLACED}, _row("VMCALL")),
    # arm64
    "arm64-wfi": (_row("WFx", "arm64", [(WFX, NONE, 0, 900)]), {"kvm.halt_poll_ns": "200000",
                  "kvm.halt_poll_ns_grow": "2", "kvm.halt_poll_ns_shrink": "0"}, _row("WFx", "arm64", [(WFX, NONE, 1, 9)])),
    "arm64-wfe": (_row("WFx", "arm64", [(WFX, NONE, 1, 900)]), {"placement": PLACED},
                  _row("WFx", "arm64", [(WFX, NONE, 0, 9)])),
    "arm64-idle": (_row("WFx", "arm64"), {"kvm.halt_poll_ns": "200000", "placement": PLACED}, _row("SYS64", "arm64")),
    "arm64-id-register": (_row("SYS64", "arm64", [(SYSREG, RD, sys_reg(3, 0, 0, 4, 0), 500)]), {},
                          _row("SYS64", "arm64", [(SYSREG, RD, sys_reg(3, 0, 1, 0, 0), 500)])),
    "arm64-timer-register": (_row("SYS64", "arm64", [(SYSREG, WR, sys_reg(3, 3, 14, 2, 1), 500)]), {},
                             _row("SYS64", "arm64", [(SYSREG, WR, sys_reg(3, 0, 14, 1, 0), 500)])),
    "arm64-sysreg": (_row("SYS64", "arm64", [(SYSREG, WR, sys_reg(3, 0, 1, 0, 0), 500)]), {}, _row("SYS64", "arm64")),
    "arm64-mmio": (_row("DABT_LOW", "arm64", [(MMIO, WR, 0x9000000, 500), (USER, NONE, 6, 500)]),
                   {"vmm": "qemu-system-x86_64"}, _row("DABT_LOW", "arm64")),
    "arm64-stage2-fault": (_row("IABT_LOW", "arm64"), dict({"vmm": "qemu-system-x86_64"}, **MEM_SEEN),
                           _row("DABT_LOW", "arm64", [(MMIO, RD, 0x9000000, 5)])),
    "arm64-hvc": (_row("HVC64", "arm64", [(HC, NONE, 0xC4000001, 300)]), {}, _row("HVC64", "arm64")),
}
# a detail rule's row with its detail small beside a dominant other of the same kind: it must not fire
BESIDE = {
    "io-delay-port": (PIO, WR, 0xC040), "io-pm-timer": (PIO, RD, 0xC040), "io-rtc": (PIO, RD, 0xC040),
    "io-serial": (PIO, WR, 0x80), "io-pci-config": (PIO, WR, 0x80), "io-device": (PIO, WR, 0x80),
    "msr-tsc-deadline": (MSR, WR, 0x830), "msr-x2apic-icr": (MSR, WR, 0x6E0), "msr-x2apic-eoi": (MSR, WR, 0x830),
    "msr-hyperv": (MSR, WR, 0x830), "msr-other": (MSR, WR, 0x830), "mmio-apic": (MMIO, WR, 0xFEBF0000),
    "mmio-hpet": (MMIO, WR, 0xFEBF0000), "mmio-ioapic": (MMIO, WR, 0xFEBF0000), "mmio-ioeventfd": (MMIO, WR, 0xFEBF0000),
    "mmio-device": (MMIO, FAST, 0xFEBF0000), "hypercall": None, "arm64-wfi": (WFX, NONE, 1), "arm64-wfe": (WFX, NONE, 0),
    "arm64-id-register": (SYSREG, WR, sys_reg(3, 3, 14, 2, 1)), "arm64-timer-register": (SYSREG, RD, sys_reg(3, 0, 0, 4, 0)),
    "arm64-sysreg": (SYSREG, RD, sys_reg(3, 0, 0, 4, 0)), "arm64-mmio": None, "arm64-hvc": None,
}


@pytest.mark.parametrize("name", sorted(n for n, other in BESIDE.items() if other))
def test_a_rule_looks_at_the_dominant_detail_only(tmp_path, name):
    fires = CASES[name][0]
    kind, d, value = BESIDE[name]
    mine = [x for x in fires.detail if x.kind == kind]
    row = fires._replace(detail=tuple(mine[:1]) + (DetailCount(kind, d, value, 100 * mine[0].count),)) \
        if hasattr(fires, "_replace") else __import__("dataclasses").replace(
            fires, detail=(DetailCount(kind, d, value, 100 * mine[0].count),) + tuple(mine[:1]))
    h = _hint(_facts(tmp_path), row)
    assert h is not None and h.rule.name != name, (name, h and h.rule.name)


def test_every_rule_has_a_case():
    assert set(CASES) == {r.name for r in hints.RULES}
    assert len({r.name for r in hints.RULES}) == len(hints.RULES)
    # every rule about a detail has its case beside a dominant other (or says why it has none: any value fires)
    assert {r.name for r in hints.RULES if r.detail} == set(BESIDE)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_and_stays_silent(tmp_path, name):
    fires, seen, silent = CASES[name]
    facts = _facts(tmp_path / "a", **FIRE_FACTS.get(name, {}))
    h = _hint(facts, fires)
    assert h is not None and h.rule.name == name, h and h.rule.name
    if "placement" in seen:
        seen = dict(seen, placement=seen["placement"] % facts.host_cpus)
    if "clocksource" in seen:          # the host's own file: the one fact not in the fixture
        seen = {"clocksource": facts.clocksource} if facts.clocksource else {}
    assert dict(h.seen) == seen
    if fires.detail and h.rule.detail:   # the dominant detail's share, after the cause
        assert re.search(r" \(\d+(\.\d+)?% of the row's [a-zA-Z/ ]+\)$", h.why), h.why
    # every value shown is one read: a module parameter's file, or the command line's
    for k, v in h.seen:
        assert k in hints.FACTS or facts.params[k] == v
    if isinstance(silent, dict):          # the same row, other facts
        other = _hint(_facts(tmp_path / "b", **silent), fires)
    else:                                 # the same facts, another row
        other = _hint(facts, silent)
    assert other is None or other.rule.name != name


def test_placement_and_vmm_read_from_proc(tmp_path):
    facts = _facts(tmp_path)
    vm = facts.vms[PID]
    assert (vm.vmm, vm.pinned, vm.affinity) == ("qemu-system-x86_64", 1, {4243: "3", 4244: "0-7"})
    assert vm.cpu_flags() == {"x2apic": True, "kvm-pv-unhalt": False}
    assert vm.options["-machine"] == "q35"
    py = hostfacts.VmFacts(1, ["/usr/bin/python3", "-m", "kvmexit", "guest"], {}, 2)
    assert py.vmm == "kvmexit"
    assert hostfacts.VmFacts(1, ["/usr/bin/python3.11", "/usr/bin/kvmexit", "guest"], {}, 2).vmm == "kvmexit"


def test_absent_files_are_notes(tmp_path):
    """Another vendor's module, a VM gone: a note each, never an error."""
    facts = _facts(tmp_path, params={"kvm": {"halt_poll_ns": "0"}})
    f2 = hostfacts.Facts(str(tmp_path / "sys_module"), str(tmp_path / "proc"))
    host = f2.update({PID: [TIDS[0]], 99999: [1]})
    assert facts.notes == ["kvm_intel is not loaded: its parameters are not read",
                           "kvm_amd is not loaded: its parameters are not read"]
    assert host.notes[-1] == "PID 99999 had ended: its command line and vCPU placement are not read"
    assert host.vms[99999] is None
    # the rules that read kvm_intel's parameters show only what was read
    h = _hint(facts, _row("PAUSE_INSTRUCTION"))
    assert [k for k, _ in h.seen] == ["placement", "-overcommit"]


def test_texts_state_no_number_they_were_not_given():
    for r in hints.RULES:
        for text in (r.cause, r.remedy):
            assert hints.stated_numbers(text.replace("{", " {").replace("}", "} ")) == [], (r.name, text)
    assert hints.stated_numbers("port 0x0080 (POST/delay), IA32_TSC_DEADLINE, x2APIC, 7.5 s") == ["0x0080", "7.5"]


def test_top_rows_of_each_vm_and_their_output(tmp_path):
    from kvmexit.counts import CounterKey as K, DetailKey, Snapshot
    from kvmexit.procinfo import Names
    totals = {K(PID, TIDS[0], 30, 0, 1, 0): 900, K(PID, TIDS[1], 30, 1, 1, 0): 100, K(PID, TIDS[0], 12, 0, 1, 0): 300,
              K(PID, TIDS[0], 10, 0, 1, 0): 40, K(PID, TIDS[0], 1, 0, 1, 0): 39, K(7, 8, 12, 0, 1, 0): 5}
    det = {DetailKey(K(PID, TIDS[0], 30, 0, 1, 0), PIO, WR, 0x80): 900, DetailKey(K(PID, TIDS[1], 30, 1, 1, 0), PIO, WR, 0x80): 100}
    facts = _facts(tmp_path)
    names = Names(proc=str(tmp_path / "proc"))
    found = hints.explain(Snapshot(totals, details=det), facts, names, seconds=10)
    # PID 4242: IO (1000) and HLT (300) are its top rows; CPUID (40 of 1379) is under 5%; PID 7: HLT
    assert [(h.row.pid, h.row.reason_name, h.rule.name, h.row.count) for h in found] == [
        (7, "HLT", "hlt", 5), (PID, "IO_INSTRUCTION", "io-delay-port", 1000), (PID, "HLT", "hlt", 300)]
    block = output.hints_block(found[1:2], facts.notes)
    assert block.splitlines() == [
        "", "Hints (--explain):", "  not read: kvm_amd is not loaded: its parameters are not read",
        "  PID 4242 IO_INSTRUCTION: 1000 exits (73% of the VM's, 100.0/s): the guest writes port 0x0080 (POST/delay) "
        "to delay its I/O: each write a round trip to the VMM (100% of the row's port I/O); seen: vmm = "
        "qemu-system-x86_64, -cpu = "
        "host,+x2apic,kvm-pv-unhalt=off",
        "      fix: " + found[1].rule.remedy + " [" + found[1].rule.source + "]"]
    rec = json.loads(output.json_record("t", None, [], Snapshot(totals), "tp_btf", names, hints=found[1:2],
                                        notes=facts.notes))
    assert rec["hints"] == [{"pid": PID, "vm": "web1", "isa": "vmx", "reason": 30, "reason_name": "IO_INSTRUCTION",
                             "count": 1000, "share": 0.7252, "rate": 100.0, "rule": "io-delay-port",
                             "why": found[1].why, "seen": {"vmm": "qemu-system-x86_64",
                                                           "-cpu": "host,+x2apic,kvm-pv-unhalt=off"},
                             "fix": found[1].fix, "source": found[1].rule.source}]
    assert rec["facts_not_read"] == ["kvm_amd is not loaded: its parameters are not read"]
    csv_text = output.csv_rows("t", None, [], Snapshot(totals), names, header=True, hints=found[1:2])
    assert csv_text.splitlines()[0].endswith(",count,hint_rule,hint_why,hint_seen,hint_fix,hint_source")
    assert csv_text.splitlines()[1].startswith("t,,4242,,,web1,,vmx,30,IO_INSTRUCTION,1000,io-delay-port,")


def test_readme_lists_every_rule_with_its_source():
    readme = (REPO / "README.md").read_text()
    for r in hints.RULES:
        row = next((l for l in readme.splitlines() if l.startswith("| `%s` |" % r.name)), "")
        assert r.cause_source and r.fix_source and r.cause_source in row and r.fix_source in row, r.name


@pytest.mark.bpf
@pytest.mark.kvm
def test_builtin_guest_dominant_exits_get_their_hint():
    """Here, by the calibration hook: the guest's writes to port 0x80 are
    its dominant exits, and get the I/O-delay hint, with the VMM read from
    its command line (kvmexit guest), in the table and in JSON."""
    g = GuestProc(["sync,out:0x80:900,out:0x3f8:100,sync"])
    runs = {fmt: calibrated("-p", g.pid, "--detail", "--explain", "-o", fmt) for fmt in ("table", "json")}
    g.release()
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    outs = stop_all(runs)
    g.finish()
    rec = json.loads(outs["json"])
    assert [(h["reason_name"], h["rule"], h["count"], h["seen"]) for h in rec["hints"]] == [
        ("PORT_0x0080", "io-delay-port", 900, {"vmm": "kvmexit", "-cpu": "(not given)"}),
        ("PORT_0x03f8", "io-serial", 100, {"vmm": "kvmexit"})]
    lines = outs["table"].splitlines()
    at = lines.index("Hints (--explain):")
    hint = [l for l in lines[at:] if l.startswith("  PID %d PORT_0x0080: 900 exits (90%% of the VM's, " % g.pid)]
    assert len(hint) == 1 and hint[0].endswith("; seen: vmm = kvmexit, -cpu = (not given)")


# -- the matching defects, each reproduced before its fix ------------------------
def test_a_small_detail_beside_a_dominant_other_does_not_fire(tmp_path):
    """A rule about a detail looks at the row's dominant detail: 9000 writes
    to port 0xc040 and 3 reads of the RTC are a device's I/O, not the RTC's;
    9000 ICR writes and 3 TSC-deadline writes are IPIs."""
    facts = _facts(tmp_path)
    io = _hint(facts, _row("IOIO", "svm", [(PIO, WR, 0xC040, 9000), (PIO, RD, 0x71, 3)]))
    assert io.rule.name == "io-device" and io.why.endswith("(99.97% of the row's port I/O)"), io.why
    msr = _hint(facts, _row("MSR_WRITE", detail=[(MSR, WR, 0x830, 9000), (MSR, WR, 0x6E0, 3)]))
    assert msr.rule.name == "msr-x2apic-icr"


def test_mmio_device_advice_not_for_ioeventfd_hpet_or_ioapic(tmp_path):
    """kvm_fast_mmio's writes are ioeventfd kicks of a virtio device already;
    the HPET and the IOAPIC are no device to replace by virtio."""
    facts = _facts(tmp_path)
    fast = _hint(facts, _row("EPT_MISCONFIG", detail=[(MMIO, FAST, 0xFEBF1000, 900)]))
    hpet = _hint(facts, _row("EPT_MISCONFIG", detail=[(MMIO, RD, 0xFED00000, 900)]))
    ioapic = _hint(facts, _row("EPT_MISCONFIG", detail=[(MMIO, WR, 0xFEC00000, 900)]))
    assert (fast.rule.name, hpet.rule.name, ioapic.rule.name) == ("mmio-ioeventfd", "mmio-hpet", "mmio-ioapic")


def test_repeated_qemu_options_are_merged(tmp_path):
    """QEMU merges repeated -overcommit options; libvirt writes one of its own."""
    argv = ARGV[:5] + ["-overcommit", "mem-lock=off", "-overcommit", "cpu-pm=on"]
    facts = _facts(tmp_path, argv=argv)
    assert facts.vms[PID].options["-overcommit"] == "mem-lock=off,cpu-pm=on"
    assert _hint(facts, _row("HLT")) is None or _hint(facts, _row("HLT")).rule.name != "hlt"


def test_parameters_read_by_the_names_the_kernel_exposes(tmp_path):
    """kvm_intel exposes enable_pml as pml; newer kernels replaced
    kvm.lapic_timer_advance_ns by the bool kvm.lapic_timer_advance."""
    params = {"kvm": {**PARAMS["kvm"], "lapic_timer_advance": "Y"}, "kvm_intel": PARAMS["kvm_intel"]}
    del params["kvm"]["lapic_timer_advance_ns"]
    facts = _facts(tmp_path, params=params)
    ept = _hint(facts, _row("EPT_VIOLATION"))
    assert dict(ept.seen)["kvm_intel.pml"] == "Y"
    tsc = _hint(facts, _row("MSR_WRITE", detail=[(MSR, WR, 0x6E0, 700)]))
    assert dict(tsc.seen)["kvm.lapic_timer_advance"] == "Y"
