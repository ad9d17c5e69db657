# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit selftest, and each attach mode of this kernel through the real CLI."""
import errno
import os
import re
import signal

import pytest

from helpers import GuestProc, assert_nothing_left, calibrated, kvmexit_progs, port, run_kvmexit
from kvmexit import cli, kernel, selftest
from kvmexit.abi import KVMEXIT_ISA_PIO
from kvmexit.guest import DONE_PORT, Guest, Step
from kvmexit.skeleton import Filter
from kvmexit.tracer import TraceOptions, Tracer

pytestmark = [pytest.mark.bpf]
PVM = os.path.exists("/sys/module/kvm_pvm")


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["auto", "raw_tp", "tracepoint"])
def test_selftest_passes(mode):
    r = run_kvmexit("selftest", "--mode", mode, "--vcpus", 3)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "kvmexit selftest: 3 vCPUs, %d guest exits each run" % sum(
        sum(selftest.expected_exits(p).values()) for p in selftest.workload(3))
    if PVM:
        assert lines[1].startswith("kvm:kvm_exit: 0 of the guest's ")
        assert lines[1].endswith("(this host's KVM (kvm_pvm) never emits it); "
                                 "checking the counting path with kvm:kvm_pio instead")
    assert not [l for l in lines if "FAIL" in l]
    if not PVM:
        return      # where kvm_exit fires, the reasons' checks come first (the kernel matrix's case)
    # 3 ports of each of the 3 vCPUs; --detail, under the calibration exits (the last port
    # written): each out and its exit to userspace, and the rdmsr, wrmsr and hlt after out 0x80+i
    title = next(i for i, l in enumerate(lines) if l.startswith("--detail, "))
    assert lines[title].startswith("--detail, kvm:kvm_pio/kvm_msr/kvm_userspace_exit under calibration exits, ")
    want = []
    for i in range(3):
        port = "PORT_0x%04x: " % (0x80 + i)
        for what, n in (("PORT_0x0070: out 0x0070 RTC/CMOS index", 503 + 101 * i),
                        ("PORT_0x0070: userspace IO", 503 + 101 * i),
                        (port + "out 0x%04x%s" % (0x80 + i, " POST/delay" if i == 0 else ""), 1009 + 211 * i),
                        (port + "rdmsr 0x1a0 IA32_MISC_ENABLE", 11 + i + 1), (port + "wrmsr 0x1a0 IA32_MISC_ENABLE", 13 + i),
                        (port + "userspace IO", 1009 + 211 * i), (port + "userspace HLT", 7 + i),
                        ("PORT_0x00f4: out 0x00f4", 1), ("PORT_0x00f4: userspace IO", 1)):
            want.append("  ok   tid N %-46s %8d == %d" % (what, n, n))
    assert [re.sub(r"tid \d+ *", "tid N ", l) for l in lines[title + 1:title + 28]] == want
    assert len([l for l in lines if l.startswith("  ok   ")]) == 9 + 27
    assert lines[-1] == "PASS: all 36 counts exact"


@pytest.mark.kvm
def test_selftest_fails_on_a_wrong_count(monkeypatch, capsys):
    real = selftest.expected_counts

    def off_by_one(programs, tids, isa):
        exp = real(programs, tids, isa)
        if isa == KVMEXIT_ISA_PIO:
            exp[(tids[1], 0x81)] += 1
        return exp
    monkeypatch.setattr(selftest, "expected_counts", off_by_one)
    with pytest.raises(SystemExit) as e:
        cli.main(["selftest"])
    assert e.value.code == 1
    out = capsys.readouterr().out.splitlines()
    fails = [l for l in out if l.startswith("  FAIL")]
    assert len(fails) == 1
    assert fails[0].split()[3:] == ["PORT_0x0081", "1220", "!=", "1221"]
    assert out[-1] == "FAIL: 1 of 24 counts differ"


@pytest.mark.parametrize("mode", ["tp_btf", "raw_tp", "tracepoint", "auto"])
def test_each_mode_attaches_and_detaches(mode):
    before = kvmexit_progs()
    r = run_kvmexit("--mode", mode, "--verbose", "-p", os.getpid(), 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("Display kvm exit reasons and statistics for PID %d after sleeping 1 secs.\n"
                        "KVM_EXIT_REASON                     COUNT\n" % os.getpid())
    want = {"auto": "tracepoint" if PVM else "tp_btf"}.get(mode, mode)
    assert "kvmexit: attached %s (handle_kvm_exit_" % want in r.stderr
    if PVM:
        assert "this host's KVM (kvm_pvm) never emits kvm:kvm_exit" in r.stderr
        assert ("cannot read exit reasons, they show as UNREADABLE" in r.stderr) == (mode in ("tp_btf", "raw_tp"))
    assert_nothing_left(before)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["tp_btf", "raw_tp", "tracepoint"])
def test_each_mode_counts_live(mode):
    """Each mode, forced, counts a running guest's exits exactly (through
    the calibration hook, where this host's KVM emits no kvm_exit)."""
    before = kvmexit_progs()
    g = GuestProc(["sync,out:0x80:%d,out:0x71:%d" % (700 + i, 30 + i) for i in range(2)])
    p = calibrated("--mode", mode, "-p", g.pid, "-a")
    g.finish()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "Traceback" not in err
    assert out.splitlines() == [
        "Display kvm exit reasons and statistics for PID %d and its all threads... Hit Ctrl-C to end." % g.pid, "",
        "TID      KVM_EXIT_REASON                     COUNT"] + [
        "%-8u %-35s %-8u" % (g.tids[i], port(pt), n) for pt, n, i in
        ((0x80, 701, 1), (0x80, 700, 0), (0x71, 31, 1), (0x71, 30, 0), (DONE_PORT, 1, 0), (DONE_PORT, 1, 1))]
    kind = {"tp_btf": "btf", "raw_tp": "raw", "tracepoint": "tp"}[mode]
    assert p.attached == "kvmexit: attached %s (handle_kvm_pio_%s)" % (mode, kind)
    assert_nothing_left(before)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["raw_tp", "tracepoint"])
def test_legacy_object_counts_without_kernel_btf(mode):
    """As on a kernel without BTF: the relocation-free object, same exact counts."""
    t = Tracer(TraceOptions(Filter(tgid=os.getpid()), mode, "kvm_pio"),
               kbtf=kernel.KernelBtf(available=False, error="test"))
    t.start()
    try:
        assert t.attached.obj == "kvm_exit_legacy.bpf.o"
        g = Guest([[Step("out", 29, 0x60), Step("hlt", 2)]])
        try:
            g.start()
            g.join()
        finally:
            g.close()
        t.detach()
        snap = t.read()
    finally:
        t.close()
    tid = g.tids[0]
    assert snap.totals == {(os.getpid(), tid, 0x60, 0, KVMEXIT_ISA_PIO, 0): 29,
                           (os.getpid(), tid, DONE_PORT, 0, KVMEXIT_ISA_PIO, 0): 1}


def test_selftest_verdict_on_vmx_and_svm_hosts():
    """What selftest checks where kvm_exit fires: the guest's own reasons, exactly;
    the host's own exits for the guest (interrupts, EPT faults) are allowed."""
    from kvmexit import selftest
    progs = selftest.workload(2)
    tids = [101, 102]
    vmx = selftest.expected_counts(progs, tids, 1)
    assert vmx == {(101, 30): 1009 + 503 + 1, (101, 10): 23, (101, 31): 11 + 1, (101, 32): 13, (101, 12): 7,
                   (102, 30): 1220 + 604 + 1, (102, 10): 24, (102, 31): 12 + 1, (102, 32): 14, (102, 12): 8}
    svm = selftest.expected_counts(progs, tids, 2)
    assert svm[(101, 0x7C)] == 11 + 1 + 13 and svm[(102, 0x7B)] == 1220 + 604 + 1
    seen = dict(vmx)
    seen[(101, 1)] = 57          # EXTERNAL_INTERRUPT: the host's, not checked
    lines, bad, short = selftest.compare(vmx, seen, 1, exact_set=False)
    assert (bad, short, len(lines)) == (0, 0, 10)
    seen[(102, 12)] = 9
    lines, bad, short = selftest.compare(vmx, seen, 1, exact_set=False)
    assert (bad, short) == (1, 0) and "FAIL tid 102      HLT" in [l for l in lines if "FAIL" in l][0]


def test_selftest_accounts_for_events_the_kernel_skipped():
    """Counts short by no more than the events the kernel reported skipping
    are accounted for; a shortfall beyond them, or any excess, fails."""
    from kvmexit import selftest
    want = {(7, 0x80): 1009, (7, 0x70): 503, (8, 0x81): 1220}
    seen = {(7, 0x80): 1000, (7, 0x70): 503, (8, 0x81): 1217}
    lines, bad, short = selftest.compare(want, seen, 3, skipped=12)
    assert (bad, short) == (0, 2)
    assert lines == ["  ok   tid 7        PORT_0x0070                   503 == 503",
                     "  miss tid 7        PORT_0x0080                  1000 < 1009",
                     "  miss tid 8        PORT_0x0081                  1217 < 1220",
                     "  ok   12 short in all; the kernel skipped the program for 12 events and said so"]
    lines, bad, short = selftest.compare(want, seen, 3, skipped=11)
    assert (bad, short) == (2, 0) and lines[-1].startswith("  FAIL 12 short in all")
    lines, bad, short = selftest.compare(want, {**seen, (7, 0x70): 504}, 3, skipped=12)
    assert bad == 1 and "  FAIL tid 7        PORT_0x0070                   504 != 503" in lines
    assert selftest.compare(want, seen, 3)[1:] == (2, 0)      # nothing skipped: short is wrong


@pytest.mark.kvm
def test_detail_without_one_of_its_tracepoints(monkeypatch):
    """A kernel lacking one of --detail's tracepoints: said once, in one note;
    the other details are counted as ever (here, the legacy object too)."""
    from kvmexit.bpfobject import BpfObject
    from kvmexit.errors import LibbpfError
    real = BpfObject.attach

    def attach(self, prog, kind, tp_name, category="kvm"):     # what libbpf says of a tracepoint not there
        if tp_name == "kvm_msr" and prog.startswith("detail_"):
            raise LibbpfError(errno.ENOENT, "bpf_program__attach_raw_tracepoint")
        return real(self, prog, kind, tp_name, category)
    monkeypatch.setattr(BpfObject, "attach", attach)
    t = Tracer(TraceOptions(Filter(tgid=os.getpid()), "raw_tp", "kvm_pio", detail=True),
               kbtf=kernel.KernelBtf(available=False, error="test"))
    with t:
        assert t.attached.obj == "kvm_exit_legacy.bpf.o"
        assert t.notes == ["--detail: this kernel has no kvm:kvm_msr tracepoint, so those details are not shown"]
        g = Guest([[Step("out", 5, 0x80), Step("rdmsr", 3)]])
        g.start()
        g.join()
        g.close()
        t.detach()
        snap = t.read()
    tid = g.tids[0]
    assert {(d.exit.reason, d.kind, d.value): n for d, n in snap.details.items() if d.exit.tid == tid} == {
        (0x80, 1, 0x80): 5, (0x80, 5, 2): 5, (DONE_PORT, 1, DONE_PORT): 1, (DONE_PORT, 5, 2): 1}
