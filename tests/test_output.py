# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Golden output: bcc kvmexit's exact formats, per view."""
from kvmexit import output, report
from kvmexit.counts import CounterKey as K, Snapshot
from kvmexit.output import View

TOTALS = {
    # tgid, tid, reason, vcpu, isa, flags: count
    K(100, 101, 32, 0, 1, 0): 13467,
    K(100, 101, 12, 0, 1, 0): 5060,
    K(100, 102, 12, 1, 1, 0): 40,
    K(100, 102, 30, 1, 1, 0): 40,
    K(200, 201, 0x7B, 0, 2, 0): 7,
}


def test_banner():
    assert View("pid", "PID 1273795").banner(5) == \
        "Display kvm exit reasons and statistics for PID 1273795 after sleeping 5 secs."
    assert View("all", "all threads").banner(None) == \
        "Display kvm exit reasons and statistics for all threads... Hit Ctrl-C to end."


def test_all_threads_view():
    assert output.table(View("all", ""), report.rows(TOTALS, "all")) == "\n".join([
        "PID      TID      KVM_EXIT_REASON                     COUNT",
        "100      101      MSR_WRITE                           13467   ",
        "100      101      HLT                                 5060    ",
        "100      102      IO_INSTRUCTION                      40      ",
        "100      102      HLT                                 40      ",
        "200      201      IOIO                                7       ",
    ])


def test_pid_view_collapses_threads_and_sorts():
    t = {k: v for k, v in TOTALS.items() if k[0] == 100}
    assert output.table(View("pid", ""), report.rows(t, "pid")) == "\n".join([
        "KVM_EXIT_REASON                     COUNT",
        "MSR_WRITE                           13467   ",
        "HLT                                 5100    ",
        "IO_INSTRUCTION                      40      ",
    ])


def test_per_thread_views():
    t = {k: v for k, v in TOTALS.items() if k[0] == 100}
    rows = report.rows(t, "tids")
    assert output.table(View("tids", ""), rows) == "\n".join([
        "TID      KVM_EXIT_REASON                     COUNT",
        "101      MSR_WRITE                           13467   ",
        "101      HLT                                 5060    ",
        "102      IO_INSTRUCTION                      40      ",
        "102      HLT                                 40      ",
    ])
    assert output.table(View("tids", "", "TIDS"), rows).splitlines()[0] == \
        "TIDS     KVM_EXIT_REASON                     COUNT"


def test_empty_and_drops():
    assert output.table(View("pid", ""), []) == "KVM_EXIT_REASON                     COUNT"
    assert output.losses_footer(Snapshot({}), 2) == ""
    assert output.losses_footer(Snapshot({}, drops=9, skipped=3, entries_skipped=2, untimed=5), 2).splitlines() == [
        "Dropped 9 exits: the counts map (2 entries) was full; raise --max-entries",
        "Missed 3 exits: the kernel skipped kvmexit's program, that CPU being inside another BPF run "
        "(see SKIPPED EVENTS in kvmexit(8))",
        "Missed 2 kvm_entry events: the exits before them have no exit-handling time",
        "Untimed 5 exits: the latency maps (2 entries) were full; raise --max-entries"]


def test_same_reason_in_two_isas_stays_apart():
    t = {K(1, 1, 0x12, 0, 1, 0): 3, K(1, 1, 0x12, 0, 2, 0): 4}
    assert [(r.name, r.count) for r in report.rows(t, "pid")] == [("WRITE_CR2", 4), ("VMCALL", 3)]


def test_ties_go_to_the_higher_reason_code():
    t = {K(1, 1, 12, 0, 1, 0): 5, K(1, 1, 32, 0, 1, 0): 5, K(1, 1, 10, 0, 1, 0): 6}
    assert [r.name for r in report.rows(t, "pid")] == ["CPUID", "MSR_WRITE", "HLT"]


def test_ties_then_go_to_the_higher_isa_the_lower_pid_and_tid():
    t = {K(7, 9, 12, 0, 1, 0): 5, K(7, 8, 12, 0, 1, 0): 5, K(3, 4, 12, 0, 1, 0): 5, K(5, 6, 12, 0, 2, 0): 5}
    assert [(r.isa, r.tgid, r.tid) for r in report.rows(t, "all")] == [(2, 5, 6), (1, 3, 4), (1, 7, 8), (1, 7, 9)]
