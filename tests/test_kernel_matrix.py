# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Real kvm_exit events on real Debian kernels, under emulation: AMD SVM in
QEMU TCG, Intel VMX in Bochs, arm64 (VHE and nVHE) in QEMU TCG with EL2
(tests/kernels/).  Each machine boots once and
runs tests/kernels/inside.py through the installed CLI; here every number
it brought back is checked: against the guest's programs where they cause
the exit, against the other views and perf kvm stat for every exit."""
import json

import pytest

from helpers import dashboard_metrics
from kernels import expect
from kernels.inside import EXPLAIN_PROGRAMS, MOVES_PROGRAMS, PERF_PROGRAMS, VIEWS_PROGRAMS
from kernels.matrix import MACHINES
from kvmexit import __version__, details
from kvmexit.abi import KVMEXIT_DIR_NONE
from kvmexit.guest import DONE_PORT

pytestmark = [pytest.mark.matrix]

# QEMU's first: Bochs' results come last
NAMES = sorted(MACHINES, key=lambda n: (MACHINES[n].emulator == "bochs", n))
ISA_LABEL = {"svm": "SVM", "vmx": "VMX", "arm64": "arm64"}


def arch(run):
    return expect.ARCH[_isa(run)]


def auto_mode(run):
    """The mode auto must pick: tp_btf wherever kvm has module BTF (arm64:
    kvm is built in, its BTF in vmlinux's); raw_tp (old prototype,
    relocation-free object) on x86 5.10, which has none."""
    if run.machine.vendor == "arm64":
        return "tp_btf"
    return "raw_tp" if "kvm" not in run.results["facts"]["btf"] else "tp_btf"


def vcpu_id(run, i):
    """vCPU i as auto mode reports it: without kernel BTF for kvm_vcpu (5.10)
    the raw_tp program cannot read vcpu_id (-v then takes the tracepoint)."""
    return None if auto_mode(run) == "raw_tp" else i


@pytest.fixture(params=NAMES)
def run(request, matrix):
    r = matrix.result(request.param)
    errors = {k: v["error"] for k, v in r.results.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    return r


def test_machine_is_the_kernel_and_vendor_asked_for(run):
    f = run.results["facts"]
    assert f["release"] == run.kernel.release
    if run.machine.vendor == "arm64":
        assert f["machine"] == "aarch64" and "kvm" not in f["btf"] and "vmlinux" in f["btf"]
        mode = "Hyp mode initialized successfully" if run.machine.nvhe else "VHE mode initialized successfully"
        assert any(mode in l for l in f["dmesg_kvm"]), f["dmesg_kvm"]
        assert f["version"] == "kvmexit, version %s" % __version__
        return
    want = {"svm": {"svm", "npt"}, "vmx": {"vmx", "ept"}}[run.machine.vendor]
    assert want <= set(f["cpu_flags"])
    assert f["version"] == "kvmexit, version %s" % __version__
    assert ("kvm" in f["btf"]) == (run.machine.series != "5.10")     # Debian 5.10: no module BTF


# Bochs runs the selftest in the forced modes only (auto is its views' mode)
@pytest.mark.parametrize("run,mode", [(n, m) for n in NAMES for m in MACHINES[n].modes], indirect=["run"])
def test_selftest_in_each_mode(run, mode):
    assert sorted(run.results["selftest"]) == sorted(run.machine.modes)
    r = run.results["selftest"][mode]
    if mode == "tp_btf" and auto_mode(run) == "raw_tp":
        assert (r["rc"], r["stdout"]) == (1, "kvmexit selftest: 2 vCPUs, 3452 guest exits each run\n")
        assert r["stderr"] == ("kvmexit selftest: tp_btf mode needs BTF of the kvm module (no btf_trace_kvm_exit "
                               "in kernel BTF: /sys/kernel/btf/kvm is missing); use --mode auto\n")
        return
    assert r["rc"] == 0, r["stdout"] + r["stderr"]
    lines = r["stdout"].splitlines()
    used = auto_mode(run) if mode == "auto" else mode
    title = "kvm:kvm_exit, %s mode, %s reasons:" % (used, ISA_LABEL[run.machine.vendor])
    assert title in lines, r["stdout"]
    section = lines[lines.index(title) + 1:]
    section = section[:next(i for i, l in enumerate(section) if not l.startswith("  "))]
    # 2 vCPUs x (IO, CPUID, MSR_READ, MSR_WRITE, HLT); SVM has one MSR reason; arm64:
    # 2 x (DABT_LOW, SYS64, HVC64, WFx)
    assert len([l for l in section if l.startswith("  ok   tid ")]) == \
        {"vmx": 10, "svm": 8, "arm64": 8}[run.machine.vendor]
    assert not [l for l in section if not l.startswith("  ok   ")]      # real exits: exact, none skipped
    # the calibration hook is x86's
    assert ("calibration, kvm:kvm_pio through the same counting code, %s mode:" % used in lines) == \
        (run.machine.vendor != "arm64")
    # --detail: per vCPU 3 ports and the exits to userspace under IO, the MSR read and write, the
    # hlt's exit to userspace (arm64: 3 MMIO pages and the exits to userspace, the register,
    # the call, WFI); KVM's tracepoints run preemptible, so a detail may be skipped (7.x)
    title = "--detail, KVM's events under %s exits, %s mode:" % (ISA_LABEL[run.machine.vendor], used)
    assert title in lines, r["stdout"]
    section = lines[lines.index(title) + 1:]
    section = section[:next(i for i, l in enumerate(section) if not l.startswith("  "))]
    assert len([l for l in section if l.startswith(("  ok   tid ", "  miss tid "))]) == 2 * 7, section
    assert not [l for l in lines if "FAIL" in l]
    assert lines[-1].startswith("PASS: ")
    # a count short of the guest's is allowed only with the kernel's own report of skipping as many
    if "miss" in r["stdout"]:
        assert lines[-1].endswith("short by events the kernel skipped and reported")


@pytest.fixture
def views(run):
    return run.results["views"]


def _isa(run):
    return expect.ISA[run.machine.vendor]


def _reference(views):
    """The -p -o json record: {(tid, vcpu, reason): count}, reason names,
    and the exits the kernel reported skipping its program for."""
    rows, rec = expect.json_rows(views["outs"]["json"]["stdout"])
    assert (rec["drops"], rec["interval"]) == (0, None)
    names = {e["reason"]: e["reason_name"] for e in rec["exits"]}
    return rows, names, rec["skipped"]


def test_views_of_real_exits_exact(run, views):
    isa, tids, pid = _isa(run), views["tids"], views["pid"]
    ref, names, ref_skipped = _reference(views)
    assert views["programs"] == list(VIEWS_PROGRAMS[arch(run)])
    # what the programs cause, exactly, per thread and vCPU (vCPU i runs on thread i)
    want = {}
    for i, prog in enumerate(VIEWS_PROGRAMS[arch(run)]):
        for phase in expect.phases(prog, arch(run))[1:]:               # phase 0 ran before any tracer attached
            for reason, n in expect.steps_exits(phase, isa).items():
                k = (tids[i], vcpu_id(run, i), reason)
                want[k] = want.get(k, 0) + n
    expect.short_of(expect.only(ref, expect.program_reasons(isa)), want, ref_skipped)
    for code, name in expect.CAUSED[isa].values():
        assert names.get(code, name) == name
    assert {k[:2] for k in ref} == {(tids[0], vcpu_id(run, 0)), (tids[1], vcpu_id(run, 1))}
    # every view shows every exit of the reference, real host-side ones (interrupts, NPT/EPT faults) included:
    # the same events, each short by what the kernel reported skipping (filtered views: no more than that)
    outs = views["outs"]
    ctrl_c = "... Hit Ctrl-C to end."
    banners = {"all": "all threads" + ctrl_c, "pid": "PID %d%s" % (pid, ctrl_c),
               "alltids": "PID %d and its all threads%s" % (pid, ctrl_c), "vcpu": "PID %d VCPU 1%s" % (pid, ctrl_c),
               "tid": "TID %d%s" % (tids[0], ctrl_c), "tids": "TIDS ['%d', '%d']%s" % (tids[1], tids[0], ctrl_c),
               "duration": "PID %d after sleeping %d secs." % (pid, views["duration"])}
    views_want = {
        "all": (2, True, expect.collapse(ref, lambda t, v, r: (pid, t, names[r]))),
        "pid": (0, True, expect.collapse(ref, lambda t, v, r: (names[r],))),
        "alltids": (1, True, expect.collapse(ref, lambda t, v, r: (t, names[r]))),
        # -v takes a mode that reads vCPU ids (vCPU 1 runs on thread 1)
        "vcpu": (0, False, expect.collapse({k: n for k, n in ref.items() if k[0] == tids[1]},
                                          lambda t, v, r: (names[r],))),
        "tid": (0, False, expect.collapse({k: n for k, n in ref.items() if k[0] == tids[0]},
                                         lambda t, v, r: (names[r],))),
        "tids": (1, True, expect.collapse(ref, lambda t, v, r: (t, names[r]))),
        "duration": (0, True, expect.collapse(ref, lambda t, v, r: (names[r],))),
    }
    for view, (ncols, whole, rows) in views_want.items():
        o = outs[view]
        assert o["rc"] == 0, o["stderr"]
        assert o["stdout"].splitlines()[0] == "Display kvm exit reasons and statistics for " + banners[view], view
        # Ctrl-C views print bcc's empty line before the table; the duration view does not
        assert (o["stdout"].splitlines()[1] == "") == (view != "duration"), view
        printed, losses = expect.parse_table(o["stdout"], ncols)
        assert set(losses) <= {"skipped"}, (view, losses)
        got, skipped = {r[:-1]: r[-1] for r in printed}, losses.get("skipped", 0)
        assert len(printed) == len(got), view
        # the skipped count is of every thread's exits, a filtered view's of one thread's
        expect.same_events(got, rows, skipped, ref_skipped, whole=whole)
        counts = [r[-1] for r in printed]
        assert counts == sorted(counts, reverse=True), view
    # the duration tracer outlived the guest: it saw the same whole life
    assert views["guest_done_s"] < views["duration"]


def test_detail_of_real_exits_exact(run, views):
    """--detail on real exits: each port, MSR and exit to userspace under
    the exit reason the guest's instruction causes, none under the host's
    exits; the table shows what the JSON does."""
    isa, tids = _isa(run), views["tids"]
    outs = views["outs"]
    for view in ("detail", "detail_json"):
        assert outs[view]["rc"] == 0, outs[view]["stderr"]
    rec = json.loads(outs["detail_json"]["stdout"])
    assert (rec["drops"], rec["undetailed"]) == (0, 0)
    want = {}
    for i, prog in enumerate(VIEWS_PROGRAMS[arch(run)]):
        for phase in expect.phases(prog, arch(run))[1:]:    # phase 0 ran before any tracer attached
            for detail, n in expect.steps_details(phase, isa).items():
                want[(tids[i],) + detail] = want.get((tids[i],) + detail, 0) + n
    got = expect.without_wakes(expect.json_details(outs["detail_json"]["stdout"]))
    expect.short_of({k: n for k, n in got.items() if k[0] in tids}, want, rec["details_skipped"])
    # the table of -p PID -a --detail: each exit row and the details under it, as the JSON has them
    kinds = {v: k for k, v in details.KINDS.items()}
    dirs = {kind: {v: k for k, v in d.items()} for kind, d in details.DIRS.items()}
    table = {}
    for e in rec["exits"]:
        table[(e["tid"], e["reason_name"], None)] = e["count"]
        for d in e["detail"]:
            kind = kinds[d["kind"]]
            code = dirs.get(kind, {}).get(d["dir"], KVMEXIT_DIR_NONE)
            table[(e["tid"], e["reason_name"], details.label(kind, code, d["value"]))] = d["count"]
    printed, losses = expect.parse_detail_table(outs["detail"]["stdout"])
    expect.same_events({k: n for k, n in printed.items() if k[2] is None},
                       {k: n for k, n in table.items() if k[2] is None}, losses.get("skipped", 0), rec["skipped"])
    expect.same_events({k: n for k, n in printed.items() if k[2] is not None},
                       {k: n for k, n in table.items() if k[2] is not None},
                       losses.get("details_skipped", 0), rec["details_skipped"])


def test_intervals_of_real_exits_exact(run, views):
    isa, tids = _isa(run), views["tids"]
    ref, _, ref_skipped = _reference(views)
    out = views["outs"]["intervals"]
    assert out["rc"] == 0, out["stderr"]
    lines = out["stdout"].splitlines()
    records = [expect.json_rows(line) for line in lines]
    assert {rec["interval"] for _, rec in records} == {views["interval"]}
    phase_at = [lines.index(r.rstrip("\n")) for r in views["phase_records"]]
    assert phase_at == list(range(phase_at[0], phase_at[0] + 3))
    total, skipped = {}, sum(rec["skipped"] for _, rec in records)
    for i, (rows, rec) in enumerate(records):
        if i not in phase_at:
            assert rows == {} and rec["skipped"] == 0, i     # the guest parked, or done
            continue
        k = phase_at.index(i) + 1                    # phase 0 ran before the tracers attached
        want = {}
        for j, prog in enumerate(VIEWS_PROGRAMS[arch(run)]):
            for reason, n in expect.steps_exits(expect.phases(prog, arch(run))[k], isa).items():
                want[(tids[j], vcpu_id(run, j), reason)] = n
        expect.short_of(expect.only(rows, expect.program_reasons(isa)), want, rec["skipped"])
        for key, n in rows.items():
            total[key] = total.get(key, 0) + n
    expect.same_events(total, ref, skipped, ref_skipped)    # the intervals add up to the whole run


def test_latency_times_every_reentered_exit(run, views):
    ref, _, ref_skipped = _reference(views)
    rows, rec = expect.json_rows(views["outs"]["latency"]["stdout"])
    expect.same_events(rows, ref, rec["skipped"], ref_skipped)
    assert rec["untimed"] == 0
    io = expect.CAUSED[_isa(run)][expect.LAST[arch(run)][0]][0]
    # each thread's last exit (the program's final out or store) is never re-entered; an exit
    # whose kvm_entry the kernel skipped the entry program for has no time
    reentered = {(e["tid"], e["vcpu"], e["reason"]): e["count"] - (e["reason"] == io) for e in rec["exits"]}
    timed = {(e["tid"], e["vcpu"], e["reason"]): e["latency"]["count"] if e["latency"] else 0 for e in rec["exits"]}
    expect.short_of(timed, reentered, rec["entries_skipped"])
    for e in rec["exits"]:
        lat = e["latency"]
        if not lat:
            continue
        assert sum(lat["hist_log2_ns"]) == lat["count"]
        assert 0 < lat["min_ns"] <= lat["avg_ns"] <= lat["max_ns"]
        assert lat["total_ns"] >= lat["count"] * lat["min_ns"]


def test_exporter_scrape_equals_the_cli(run, views):
    from prometheus_client.parser import text_string_to_metric_families
    ref, names, ref_skipped = _reference(views)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(views["scrape"]) for s in f.samples}
    exits = {(int(dict(k[1])["tid"]), int(dict(k[1])["vcpu"]) if dict(k[1])["vcpu"] else None,
              dict(k[1])["reason"]): v for k, v in samples.items() if k[0] == "kvmexit_exits_total"}
    dropped = {dict(k[1])["cause"]: int(v) for k, v in samples.items() if k[0] == "kvmexit_dropped_exits_total"}
    expect.same_events(exits, {(t, v, names[r]): float(n) for (t, v, r), n in ref.items()},
                       dropped["skipped"], ref_skipped)
    assert {dict(k[1])["pid"] for k in samples if k[0] == "kvmexit_exits_total"} == {str(views["pid"])}
    assert (dropped["map_full"], dropped["untimed"], dropped["undetailed"]) == (0, 0, 0)
    assert samples[("kvmexit_info", (("mode", auto_mode(run)), ("source", "kvm_exit"), ("version", __version__)))] == 1
    assert views["outs"]["exporter"]["rc"] == 0
    # --latency: one histogram per series, its count the latency view's, its buckets cumulative
    lat = json.loads(views["outs"]["latency"]["stdout"])
    want = {(e["tid"], e["vcpu"], e["reason_name"]): float(e["latency"]["count"])
            for e in lat["exits"] if e["latency"]}

    def series(name, labels):
        return {tuple(dict(k[1]).get(x) for x in labels): v for k, v in samples.items() if k[0] == name}
    counts = series("kvmexit_exit_latency_seconds_count", ("tid", "vcpu", "reason"))
    # timed exits: short of the re-entered ones by the skipped exits and entries (of any thread)
    expect.same_events({(int(t), int(v) if v else None, r): n for (t, v, r), n in counts.items()}, want,
                       dropped["skipped"] + dropped["entries_skipped"], lat["skipped"] + lat["entries_skipped"],
                       whole=False)
    buckets = series("kvmexit_exit_latency_seconds_bucket", ("tid", "vcpu", "reason", "le"))
    for (t, v, r), n in counts.items():
        mine = [buckets[(t, v, r, le)] for le in sorted({k[3] for k in buckets}, key=float)]
        assert mine == sorted(mine) and mine[-1] == n and len(mine) == 13
    # --detail: the detail view's events under each reason
    ref_det = expect.json_details(views["outs"]["detail_json"]["stdout"])
    det = series("kvmexit_exit_details_total", ("tid", "reason", "kind", "dir", "value"))
    expect.same_events({(int(t), r, kind, d or None, int(value, 16)): n for (t, r, kind, d, value), n in det.items()},
                       {(t, names[r], kind, d, value): float(n) for (t, r, kind, d, value), n in ref_det.items()},
                       dropped["details_skipped"], json.loads(views["outs"]["detail_json"]["stdout"])["details_skipped"])
    # every metric the Grafana dashboard asks for is served
    assert dashboard_metrics() <= {k[0] for k in samples}


def test_perf_kvm_stat_agrees(run):
    """perf kvm stat pairs each exit with the next entry, so it leaves out
    each thread's last exit, which is never re-entered; kvmexit --latency
    counts exactly the re-entered ones, and its plain counts all of them.
    kvmexit's classic tracepoint program is attached while perf records:
    a program that returned 0 would discard the record for perf too, so
    perf's counts equal to the guest's show its return 1 on real kvm_exit.
    A run of that program the kernel skips (and reports) discards perf's
    record as well (perf_trace_run_bpf_submit): perf then lacks exactly the
    exits the tracepoint mode lacks, but a thread's last, which perf leaves
    out anyway."""
    p = run.results["perf"]
    isa = _isa(run)
    programs = PERF_PROGRAMS[arch(run)]
    assert p["record"]["rc"] == 0, p["record"]["stderr"]
    guest = json.loads(p["record"]["stdout"].splitlines()[0])
    tids = guest["tids"]
    auto, rec = expect.json_rows(p["outs"]["auto"]["stdout"])
    tp, tp_rec = expect.json_rows(p["outs"]["tracepoint"]["stdout"])
    assert (rec["mode"], tp_rec["mode"]) == (auto_mode(run), "tracepoint")
    assert (rec["drops"], tp_rec["drops"]) == (0, 0)
    mine = {k: n for k, n in auto.items() if k[0] in tids}
    # tracepoint mode: the same exits (and vCPU ids from the record, where auto mode has none)
    tp = {k: n for k, n in tp.items() if k[0] in tids}
    expect.same_events(tp, {(t, tids.index(t) if v is None else v, r): n for (t, v, r), n in mine.items()},
                       tp_rec["skipped"], rec["skipped"])
    # the guest's whole life: its programs' exits, exactly
    want = {}
    for i, prog in enumerate(programs):
        for reason, n in expect.steps_exits(expect.phases(prog, arch(run))[0], isa).items():
            want[(tids[i], vcpu_id(run, i), reason)] = n
    expect.short_of(expect.only(mine, expect.program_reasons(isa)), want, rec["skipped"])
    # perf, reason by reason, for every exit of the guest
    fmt = run.results["facts"]["kvm_exit_format"]
    names = expect.arm64_kernel_names(fmt) if arch(run) == "arm64" else expect.kernel_names(fmt, isa)
    report = expect.perf_report(p["reports"]["vmexit"]["stderr"] + p["reports"]["vmexit"]["stdout"])
    assert report, p["reports"]["vmexit"]
    perf = {names[name]: n for name, n in report.items()}
    if arch(run) == "arm64":
        _perf_arm64(perf, mine, tp, rec, tp_rec, tids, p)
        return
    reentered = expect.collapse({(e["tid"], e["vcpu"], e["reason"]): e["latency"]["count"]
                                 for e in rec["exits"] if e["tid"] in tids}, lambda t, v, r: r)
    io = expect.CAUSED[isa]["out"][0]
    plain = expect.collapse(mine, lambda t, v, r: r)
    if rec["skipped"]:     # auto mode's own counts are short: perf within what both skipped
        expect.same_events(perf, reentered, tp_rec["skipped"], rec["skipped"] + rec["entries_skipped"], whole=False)
    else:
        assert rec["entries_skipped"] == 0
        # the exits the tracepoint program was skipped for, by reason: perf's record of each is gone
        lost = {r: n - expect.collapse(tp, lambda t, v, r: r).get(r, 0) for r, n in plain.items()}
        assert min(lost.values()) >= 0 and sum(lost.values()) == tp_rec["skipped"], lost
        want_perf = {r: n - lost[r] for r, n in reentered.items()}
        assert {r: n for r, n in perf.items() if r != io} == {r: n for r, n in want_perf.items() if n and r != io}
        # each thread's last exit (an out) perf leaves out, skipped or not
        assert 0 <= perf[io] - want_perf[io] <= min(lost[io], len(tids))
        if not lost[io]:
            assert {r: plain[r] - perf.get(r, 0) - lost[r] for r in plain
                    if plain[r] != perf.get(r, 0) + lost[r]} == {io: len(tids)}
    # --detail over the guest's whole life: its programs' events exactly, and port by port
    # perf kvm stat --event ioport's accesses (which, paired with the next entry, leave out the
    # last out of each thread, to the done port)
    det, drec = expect.json_details(p["outs"]["detail"]["stdout"]), json.loads(p["outs"]["detail"]["stdout"])
    assert (drec["drops"], drec["undetailed"]) == (0, 0)
    want = {}
    for i, prog in enumerate(programs):
        for detail, n in expect.steps_details(expect.phases(prog)[0], isa).items():
            want[(tids[i],) + detail] = n
    det = {k: n for k, n in det.items() if k[0] in tids}
    expect.short_of(det, want, drec["details_skipped"])
    ports = {}
    for (t, r, kind, d, value), n in det.items():
        if kind == "pio":
            key = "%#x:%s" % (value, "POUT" if d == "out" else "PIN")
            ports[key] = ports.get(key, 0) + n
    ioport = expect.perf_report(p["reports"]["ioport"]["stderr"] + p["reports"]["ioport"]["stdout"])
    assert ioport, p["reports"]["ioport"]
    ports["%#x:POUT" % DONE_PORT] -= len(tids)
    expect.short_of({k: n for k, n in ports.items() if n}, ioport, drec["details_skipped"])


def _perf_arm64(perf, mine, tp, rec, tp_rec, tids, p):
    """arm64: perf kvm stat times each exit from the kvm_entry before it
    (tools/perf/arch/arm64/util/kvm-stat.c: begin kvm_entry, end kvm_exit),
    so over the guest's whole life it counts every exit, each thread's last
    included; less those whose record kvmexit's tracepoint program was
    skipped for (reported).  --detail: the guest's events exactly."""
    plain = expect.collapse(mine, lambda t, v, r: r)
    if rec["skipped"]:
        expect.same_events(perf, plain, tp_rec["skipped"], rec["skipped"], whole=False)
    else:
        lost = {r: n - expect.collapse(tp, lambda t, v, r: r).get(r, 0) for r, n in plain.items()}
        assert min(lost.values()) >= 0 and sum(lost.values()) == tp_rec["skipped"], lost
        assert perf == {r: n - lost[r] for r, n in plain.items() if n - lost[r]}
    det, drec = expect.json_details(p["outs"]["detail"]["stdout"]), json.loads(p["outs"]["detail"]["stdout"])
    assert (drec["drops"], drec["undetailed"]) == (0, 0)
    want = {}
    for i, prog in enumerate(PERF_PROGRAMS["arm64"]):
        for detail, n in expect.steps_details(expect.phases(prog, "arm64")[0], expect.ARM64).items():
            want[(tids[i],) + detail] = n
    expect.short_of(expect.without_wakes({k: n for k, n in det.items() if k[0] in tids}), want,
                    drec["details_skipped"])


def test_explain_hints_the_guests_dominant_exits(run):
    """The guest's writes to port 0x80 (arm64: MMIO stores) dominate, its
    halts (WFI) come second: each gets its hint, showing what that machine
    has (the VMM's command line, the kvm module's halt-polling parameters as
    read there), and the other vendor's module is said not to be loaded."""
    e = run.results["explain"]
    isa = _isa(run)
    for fmt in ("table", "json"):
        assert e["outs"][fmt]["rc"] == 0, e["outs"][fmt]["stderr"]
    rec = json.loads(e["outs"]["json"]["stdout"])
    if arch(run) == "arm64":
        got = {h["reason_name"]: h for h in rec["hints"]}
        stores = sum(expect.expected_exits(expect.parse_program(p, "arm64"), "arm64")[("mmio", 0x10001000)]
                     for p in EXPLAIN_PROGRAMS["arm64"])
        assert (got["DABT_LOW"]["rule"], got["DABT_LOW"]["seen"]) == ("arm64-mmio", {"vmm": "kvmexit"})
        assert got["DABT_LOW"]["why"].startswith("MMIO to page 0x10001000 of a device the VMM emulates")
        # the stores, each wfi's two marks, each vCPU's last store (its first sync ran before)
        marks = 2 * len(e["tids"])
        expect.short_of({0x124: got["DABT_LOW"]["count"]}, {0x124: stores + marks + len(e["tids"])}, rec["skipped"])
        assert got["WFx"]["rule"] == "arm64-wfi"
        assert got["WFx"]["seen"] == {"kvm." + p: v for p, v in e["params"].items()}
        assert e["modules"] == ["kvm"]           # built in; no vendor module
        return
    io, hlt = expect.CAUSED[isa]["out"], expect.CAUSED[isa]["hlt"]
    outs = sum(expect.expected_exits(expect.parse_program(p))[("out", 0x80)] for p in EXPLAIN_PROGRAMS["x86"])
    got = {h["reason_name"]: h for h in rec["hints"]}
    assert (got[io[1]]["rule"], got[io[1]]["seen"]) == ("io-delay-port", {"vmm": "kvmexit", "-cpu": "(not given)"})
    assert got[io[1]]["why"].startswith("the guest writes port 0x0080 (POST/delay) to delay its I/O")
    # its outs and each vCPU's last (its first sync ran before)
    expect.short_of({io[0]: got[io[1]]["count"]}, {io[0]: outs + len(e["tids"])}, rec["skipped"])
    assert got[hlt[1]]["rule"] == "hlt"
    assert got[hlt[1]]["seen"] == dict({"kvm." + p: v for p, v in e["params"].items()}, **{"-overcommit": "(not given)"})
    other = {"svm": "kvm_intel", "vmx": "kvm_amd"}[run.machine.vendor]
    assert other not in e["modules"]
    assert "%s is not loaded: its parameters are not read" % other in rec["facts_not_read"]
    table = e["outs"]["table"]["stdout"].splitlines()
    assert "Hints (--explain):" in table
    assert any(l.startswith("  PID %d %s: " % (e["pid"], io[1])) and "seen: vmm = kvmexit, -cpu = (not given)" in l
               for l in table)


def test_vcpus_moved_between_threads_exact(run):
    """kvmexit guest --rotate: thread i runs vCPU i+1 after the first release
    and vCPU i after the second; each exit is under the vCPU its thread ran
    then, in -p -a and in -p -v 1 (x86: the cache keeps the kvm_vcpu
    pointer, or the record's vcpu_id; arm64: the kprobe's record of each
    thread's vCPU)."""
    m = run.results["moves"]
    isa, a = _isa(run), arch(run)
    for name in ("all", "vcpu1", "guest"):
        assert m["outs"][name]["rc"] == 0, m["outs"][name]["stderr"]
    tids, progs = m["tids"], MOVES_PROGRAMS[a]
    ran = {}                                            # {(tid, vCPU index, reason): n}
    for k in (1, 2):                                    # phase 0 ran before the tracers attached
        for i, tid in enumerate(tids):
            v = (i + k) % len(tids)                     # the vCPU thread i runs in phase k
            for reason, n in expect.steps_exits(expect.phases(progs[v], a)[k], isa).items():
                ran[(tid, v, reason)] = ran.get((tid, v, reason), 0) + n
    rows, rec = expect.json_rows(m["outs"]["all"]["stdout"])
    assert rec["drops"] == 0
    want = expect.collapse(ran, lambda t, v, r: (t, vcpu_id(run, v), r))
    expect.short_of(expect.only(rows, expect.program_reasons(isa)), want, rec["skipped"])
    # -v 1 takes a mode that reads vCPU ids wherever auto mode cannot (5.10: the tracepoint)
    rows, rec = expect.json_rows(m["outs"]["vcpu1"]["stdout"])
    expect.short_of(expect.only(rows, expect.program_reasons(isa)),
                    {(t, 1, r): n for (t, v, r), n in ran.items() if v == 1}, rec["skipped"])


@pytest.mark.parametrize("run", [n for n in NAMES if MACHINES[n].vendor == "arm64"], indirect=True)
def test_zipapp_counts_real_arm64_exits(run):
    """The one-file kvmexit (make zipapp's layout) on the machine's own python3:
    its selftest, exact on real arm64 exits, with the arm64 object it carries."""
    z = run.results["zipapp"]
    assert (z["version"]["rc"], z["version"]["stdout"]) == (0, "kvmexit, version %s\n" % __version__)
    r = z["selftest"]
    assert r["rc"] == 0, r["stdout"] + r["stderr"]
    lines = r["stdout"].splitlines()
    assert "kvm:kvm_exit, tp_btf mode, arm64 reasons:" in lines
    assert lines[-1] in ("PASS: all 22 counts exact",) or lines[-1].endswith("short by events the kernel skipped and "
                                                                              "reported"), lines[-1]


@pytest.mark.parametrize("run", [n for n in NAMES if MACHINES[n].bench], indirect=True)
def test_bench_real_programs_see_the_same_exits(run):
    """make bench-real in the machine (bench/real.py; its table is in the
    matrix's summary): kvmexit took its direct programs where the kernel
    allows them; every program attached at once ran on the same real exits
    (or was reported skipped), round by round, as many as the guest made at
    least; each took time; then, each alone, ran on every exit of the
    guest's timed runs.  The figures are the benchmark's to print, not to
    judge."""
    b = run.results["bench"]
    assert b["rc"] == 0, b["stderr"][-2000:]
    data = b["data"]
    rounds, hit, miss = (int(x) for x in run.machine.bench.split(","))
    assert (data["vendor"], data["rounds"], data["hit"], data["miss"]) == (run.machine.vendor, rounds, hit, miss)
    names = ["empty", "pidtgid", "kvmexit", "latency", "detail"]
    cases = ("hit", "miss") if miss else ("hit",)
    want = {"%s/%s/%s" % (m, c, n) for m in ("tp_btf", "raw_tp", "tracepoint") for c in cases for n in names}
    if run.machine.vendor != "arm64":
        want |= {"tracepoint/%s/bcc" % c for c in cases}
    res, progs = data["results"], data["programs"]
    # kvmexit's own choice in each mode, and beside a direct program the one it falls back to
    direct = {"svm": ("handle_kvm_exit_btf_direct", "handle_kvm_exit_raw_direct"),
              "vmx": ("handle_kvm_exit_btf_direct", "handle_kvm_exit_raw_direct"),
              "arm64": ("handle_kvm_exit_arm64_btf_direct", "handle_kvm_exit_arm64_raw")}[run.machine.vendor]
    assert (progs["tp_btf/kvmexit"], progs["raw_tp/kvmexit"]) == direct
    fallback = {"%s/fallback" % m: p.replace("_direct", "") for m, p in zip(("tp_btf", "raw_tp"), direct)
                if p.endswith("_direct")}
    assert {k: v for k, v in progs.items() if k.endswith("/fallback")} == fallback
    want |= {"%s/%s/fallback" % (k.split("/")[0], c) for k in fallback for c in cases}
    if run.machine.vendor != "arm64":
        assert progs["tp_btf/vcpu_pid"] == "handle_kvm_exit_btf_direct_vpid"
        want |= {"tp_btf/%s/vcpu_pid" % c for c in cases}
    assert set(res) == want
    for case, least in (("hit", hit), ("miss", 2 * miss))[:len(cases)]:
        for r in range(rounds):
            # what the kernel ran each on, and what it reported skipping it for
            seen = {k: v[r]["exits"] + v[r]["skipped"] for k, v in res.items() if k.split("/")[1] == case}
            assert len(set(seen.values())) == 1, seen
            assert min(seen.values()) >= least
            assert all(v[r]["ns"] > 0 for k, v in res.items() if k.split("/")[1] == case)
    # the guest's time per exit, each alone: the program ran on every exit of both runs of each round
    alone = data["alone"]
    assert set(alone) == {"none", "tp_btf/empty", "tracepoint/empty", "tp_btf/kvmexit"} | (
        {"tracepoint/bcc"} if run.machine.vendor != "arm64" else set())
    for name, runs in alone.items():
        assert len(runs) == rounds, (name, runs)
        assert all(r["exits"] is None if name == "none" else r["exits"] >= 3 * hit for r in runs), (name, runs)
