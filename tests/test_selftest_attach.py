# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit selftest, and each attach mode of this kernel through the real CLI."""
import os

import pytest

from conftest import assert_nothing_left, kvmexit_progs, run_kvmexit
from kvmexit import cli, kernel, selftest
from kvmexit.abi import KVMEXIT_ISA_PIO
from kvmexit.guest import DONE_PORT, Guest, Step
from kvmexit.tracer import Filter, Tracer

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
    ok = [l for l in lines if l.startswith("  ok   ")]
    assert len(ok) == 9 and not [l for l in lines if "FAIL" in l]
    assert lines[-1] == "PASS: all 9 counts exact"


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
    assert out[-1] == "FAIL: 1 of 6 counts differ"


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
@pytest.mark.parametrize("mode", ["raw_tp", "tracepoint"])
def test_legacy_object_counts_without_kernel_btf(mode):
    """As on a kernel without BTF: the relocation-free object, same exact counts."""
    t = Tracer(Filter(tgid=os.getpid()), mode=mode, source="kvm_pio",
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
