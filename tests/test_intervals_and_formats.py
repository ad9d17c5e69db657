# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Beyond bcc: intervals, JSON/CSV, VM names, exit-handling time, Prometheus."""
import csv
import io
import json
import os
import re
import select
import signal
import subprocess
from pathlib import Path

import pytest

import kvmexit
from helpers import (KVMEXIT, GuestProc, calibrated, dashboard_metrics, free_port, kvmexit_progs, port, scrape, spawn,
                     started, stop_all)
from kvmexit import details, kernel, output, report
from kvmexit.guest import DONE_PORT, SYNC_PORT
from kvmexit.counts import CounterKey as K
from kvmexit.counts import DetailKey, LatencyStat, Snapshot, lat_slot
from kvmexit.output import View
from kvmexit.procinfo import vm_name_from_argv
from kvmexit.tracer import TraceOptions


@pytest.mark.parametrize("argv,name", [
    (["-name", "guest=web01,debug-threads=on", "-m", "1G"], "web01"),        # libvirt
    (["-name", "db,,prod,process=qemu-db"], "db,prod"),                     # QEMU, ",," is a comma
    (["-enable-kvm", "-name", "plain"], "plain"),
    (["-name=guest=eq"], "eq"),
    (["--api-sock", "/run/fc.sock", "--id", "fc-42"], "fc-42"),               # Firecracker
    (["--id=fc-7"], "fc-7"),
    (["--api-socket", "path=/run/ch/vm-3.sock", "--cpus", "boot=2"], "vm-3"),  # cloud-hypervisor
    (["run", "--name", "lkvm-guest"], "lkvm-guest"),                          # kvmtool
    (["-m", "1G", "-smp", "2"], None),
])
def test_vm_names_from_command_lines(argv, name):
    assert vm_name_from_argv(argv) == name


def _tables(text):
    """Interval tables of a table-format run: [(stamp, {(tid, name): count})]."""
    out = []
    for block in text.strip("\n").split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("Display"):
            lines = lines[1:]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", lines[0]), lines[0]
        rows = {}
        for l in lines[2:]:
            tid, name, count = l.split()
            rows[(int(tid), name)] = int(count)
        out.append((lines[0], rows))
    return out


PHASED = ["sync,out:0x80:%d,sync,out:0x80:%d,sync,out:0x80:%d" % (100 + i, 200 + i, 300 + i) for i in range(2)]


def _phase_counts(tids):
    """What each interval must show when the test releases one phase per interval."""
    per = []
    for phase, n in enumerate((100, 200, 300)):
        rows = {}
        for i, tid in enumerate(tids):
            rows[(tid, port(0x80))] = n + i
            rows[(tid, port(SYNC_PORT if phase < 2 else DONE_PORT))] = 1
        per.append(rows)
    return per


def _run_phase(g, tracer, phase):
    """Release one phase of PHASED right after an interval began (the
    tracer attached, or printed an interval) and wait for the guest to say
    it ran; the interval must not have ended meanwhile."""
    g.release()
    if phase < 2:
        assert json.loads(g.p.stdout.readline()) == {"sync": phase + 1}
    else:
        g.done()
    assert not select.select([tracer.stdout], [], [], 0)[0], "phase %d outlasted its interval" % phase


@pytest.mark.bpf
@pytest.mark.kvm
def test_json_intervals_exact_and_count_stops():
    g = GuestProc(PHASED, migrate=5)
    js = calibrated("-p", g.pid, "-o", "json", "-i", "1", "-c", "3")
    records = []
    for phase in range(3):
        _run_phase(g, js, phase)                  # one phase per interval
        records.append(json.loads(js.stdout.readline()))
    rest, _ = js.communicate(timeout=10)          # -c 3: stops by itself
    assert (js.returncode, rest) == (0, "")
    assert [r["interval"] for r in records] == [1.0, 1.0, 1.0]
    got = [{(e["tid"], e["reason_name"]): e["count"] for e in r["exits"]} for r in records]
    assert got == _phase_counts(g.tids)


@pytest.mark.bpf
@pytest.mark.kvm
def test_interval_tables_exact():
    g = GuestProc(PHASED, migrate=5)
    t = calibrated("-p", g.pid, "-a", "-i", "1", "-c", "3")
    chunks = [t.stdout.readline()]
    for phase in range(3):
        _run_phase(g, t, phase)
        while True:
            line = t.stdout.readline()
            chunks.append(line)
            if line == "\n":
                break
    rest, _ = t.communicate(timeout=10)
    assert (t.returncode, rest) == (0, "")
    tables = _tables("".join(chunks))
    assert [rows for _, rows in tables] == _phase_counts(g.tids)


@pytest.mark.bpf
@pytest.mark.kvm
def test_detail_in_table_json_and_csv_exact():
    """--detail through the CLI (the calibration hook: each exit is a port
    write, KVM's other events go under the last one): the guest's ports,
    MSRs and exits to userspace, exactly, the same in all three formats, in
    every view (-p -a here, -T and the default view too)."""
    progs = ["sync,out:0x80:%d,rdmsr:%d,wrmsr:%d,hlt:%d,out:0x3f8:%d" % (300 + i, 4 + i, 2 + i, 3, 20) for i in range(2)]
    g = GuestProc(progs)
    runs = {fmt: calibrated("-p", g.pid, "-a", "--detail", "-o", fmt) for fmt in ("table", "json", "csv")}
    runs["tids"] = calibrated("-T", "%d,%d" % tuple(g.tids), "--detail")
    runs["all"] = calibrated("--detail")
    g.finish()
    outs = stop_all(runs)
    want = {}          # (tid, exit reason, detail label or None): count
    for i, tid in enumerate(g.tids):
        p80 = port(0x80)
        want.update({(tid, p80, None): 300 + i, (tid, p80, "out 0x0080 POST/delay"): 300 + i,
                     (tid, p80, "userspace IO"): 300 + i, (tid, p80, "rdmsr 0x1a0 IA32_MISC_ENABLE"): 4 + i + 1,
                     (tid, p80, "wrmsr 0x1a0 IA32_MISC_ENABLE"): 2 + i, (tid, p80, "userspace HLT"): 3,
                     (tid, port(0x3F8), None): 20, (tid, port(0x3F8), "out 0x03f8 COM1"): 20,
                     (tid, port(0x3F8), "userspace IO"): 20,
                     (tid, port(DONE_PORT), None): 1, (tid, port(DONE_PORT), "out 0x00f4"): 1,
                     (tid, port(DONE_PORT), "userspace IO"): 1})
    for view, skip in (("table", 2), ("tids", 2), ("all", 2)):
        got, row = {}, None
        for line in outs[view].splitlines()[skip + 1:]:
            parts = line.split()
            if line.startswith(" "):
                got[row + (" ".join(parts[:-1]),)] = int(parts[-1])
            else:
                row = (int(parts[1 if view == "all" else 0]), parts[-2])
                got[row + (None,)] = int(parts[-1])
        assert {k: n for k, n in got.items() if k[0] in g.tids} == want, view
    record = json.loads(outs["json"])
    assert (record["undetailed"], record["details_skipped"]) == (0, 0)
    from_json = {}
    for e in record["exits"]:
        from_json[(e["tid"], e["reason_name"], None)] = e["count"]
        for d in e["detail"]:
            assert d["name"] == (details.name(next(k for k, v in details.KINDS.items() if v == d["kind"]), d["value"])
                                 or None)
            from_json[(e["tid"], e["reason_name"], report.DetailCount(
                next(k for k, v in details.KINDS.items() if v == d["kind"]),
                {None: 2, "out": 1, "in": 0, "rdmsr": 0, "wrmsr": 1}[d["dir"]], d["value"], 0).label)] = d["count"]
    assert from_json == want
    rows = list(csv.DictReader(io.StringIO(outs["csv"])))
    from_csv = {}
    for r in rows:
        label = None
        if r["detail_kind"]:
            label = report.DetailCount(next(k for k, v in details.KINDS.items() if v == r["detail_kind"]),
                                       {"": 2, "out": 1, "rdmsr": 0, "wrmsr": 1}[r["detail_dir"]],
                                       int(r["detail_value"]), 0).label
        from_csv[(int(r["tid"]), r["reason_name"], label)] = int(r["detail_count"] or r["count"])
    assert from_csv == want


def test_json_csv_and_table_agree_and_names():
    progs = ["sync,out:0x80:%d,out:0x%x:%d,sync" % (500 + 7 * i, 0x90 + i, 50 + i) for i in range(2)]
    g = GuestProc(progs, extra=["-name", "guest=web01,debug-threads=on"])
    tracers = {fmt: calibrated("-p", g.pid, "-a", "--wide", "-o", fmt) for fmt in ("table", "json", "csv")}
    g.release()                                   # runs, then parks at its last sync (names stay readable)
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    outs = stop_all(tracers)
    g.finish()
    lines = outs["table"].splitlines()
    assert lines[1] == ""
    assert lines[2].split() == ["TID", "COMM", "KVM_EXIT_REASON", "COUNT"]
    table = {}
    for l in lines[3:]:
        tid, comm, name, count = l[:8].strip(), l[9:25].strip(), l[26:61].strip(), l[62:].strip()
        table[(int(tid), comm, name)] = int(count)
    want = {}
    for i, tid in enumerate(g.tids):
        want[(tid, "CPU %d/KVM" % i, port(0x80))] = 500 + 7 * i
        want[(tid, "CPU %d/KVM" % i, port(0x90 + i))] = 50 + i
        want[(tid, "CPU %d/KVM" % i, port(SYNC_PORT))] = 1
    assert table == want
    record = json.loads(outs["json"])
    assert record["interval"] is None and record["drops"] == 0 and record["mode"] in ("tp_btf", "raw_tp", "tracepoint")
    assert {(e["tid"], e["comm"], e["reason_name"]): e["count"] for e in record["exits"]} == want
    assert {(e["pid"], e["vm"], e["isa"]) for e in record["exits"]} == {(g.pid, "web01", "pio")}
    assert {(e["tid"], e["vcpu"]) for e in record["exits"]} == {(t, i) for i, t in enumerate(g.tids)}
    rows = list(csv.DictReader(io.StringIO(outs["csv"])))
    assert list(rows[0]) == output.CSV_HEADER
    assert {(int(r["tid"]), r["comm"], r["reason_name"]): int(r["count"]) for r in rows} == want
    assert {r["vm"] for r in rows} == {"web01"}


@pytest.mark.bpf
@pytest.mark.kvm
def test_firecracker_style_vm_name_in_the_all_threads_view():
    g = GuestProc(["sync,out:0x80:9,sync"], migrate=None, extra=["--id", "fc-42"])
    t = calibrated("--wide", "-T", str(g.tids[0]))
    a = calibrated("--wide")
    g.release()
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    for p in (t, a):
        p.send_signal(signal.SIGINT)
    (out_t, err_t), (out_a, err_a) = t.communicate(timeout=30), a.communicate(timeout=30)
    g.finish()
    assert (t.returncode, a.returncode) == (0, 0), err_t + err_a
    assert out_t.splitlines()[2:] == [
        "TIDS     COMM             KVM_EXIT_REASON                     COUNT",
        "%-8u %-16s %-35s %-8u" % (g.tids[0], "CPU 0/KVM", port(0x80), 9),
        "%-8u %-16s %-35s %-8u" % (g.tids[0], "CPU 0/KVM", port(SYNC_PORT), 1)]
    assert "%-8u %-8u %-16s %-16s %-35s %-8u" % (g.pid, g.tids[0], "fc-42", "CPU 0/KVM", port(0x80), 9) \
        in out_a.splitlines()


def _hist(*samples):
    """A log-linear histogram of samples in ns (slot s: counts.slot_bounds(s))."""
    h = [0] * 128
    for ns in samples:
        h[lat_slot(ns)] += 1
    return tuple(h)


def test_latency_rows_histogram_and_top():
    # 500 ns is in slot 4 * 8 + 3 = [448, 512); 1000 in [896, 1024); 1500 in [1280, 1536); 4000 in [3584, 4096)
    lat = {K(1, 2, 12, 0, 1, 0): LatencyStat(3, 3000, 500, 1500, _hist(500, 1000, 1500)),
           K(1, 3, 12, 1, 1, 0): LatencyStat(1, 4000, 4000, 4000, _hist(4000))}
    totals = {K(1, 2, 12, 0, 1, 0): 3, K(1, 3, 12, 1, 1, 0): 1, K(1, 3, 30, 1, 1, 0): 9}
    rows = report.rows(totals, "pid", lat)
    # P50 of the four: the 2nd sample's bucket middle, 960 ns; P90 and P99: the 4th (4000 ns, the
    # bucket's middle 3840 ns); the first's bucket [448, 512) would say 480, kept at the min 500
    assert output.table(View("pid", ""), rows, latency=True).splitlines() == [
        "KVM_EXIT_REASON                     COUNT      TOTAL_us     MIN_us     AVG_us     P50_us     P90_us"
        "     P99_us     MAX_us",
        "IO_INSTRUCTION                      9              0.00       0.00       0.00       0.00       0.00"
        "       0.00       0.00",
        "HLT                                 4              7.00       0.50       1.75       0.96       3.84"
        "       3.84       4.00"]
    assert rows[1].lat.percentile(1) == 500
    assert output.histogram(rows[1].lat).splitlines()[-4:] == [
        "       256 -> 511        : 1        |****************************************|",
        "       512 -> 1023       : 1        |****************************************|",
        "      1024 -> 2047       : 1        |****************************************|",
        "      2048 -> 4095       : 1        |****************************************|"]
    assert [r.name for r in report.rows(totals, "pid", top=1)] == ["IO_INSTRUCTION"]


@pytest.mark.bpf
@pytest.mark.parametrize("mode", ["tp_btf", "raw_tp", "tracepoint"])
def test_latency_attaches_exit_and_entry(mode):
    before = kvmexit_progs()
    p = started(spawn(KVMEXIT + ["--latency", "--hist", "--mode", mode, "--verbose"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    progs = kvmexit_progs() - before
    names = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout
    latency = _rodata_byte(next(pr for pr in json.loads(names) if pr["id"] in progs), "latency")
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    # the kvm_exit and the kvm_entry program of that mode (the direct one where the kernel takes it)
    kind = {"tp_btf": "btf", "raw_tp": "raw", "tracepoint": "tp"}[mode]
    direct = "_direct" if kernel.probe_btf().direct and mode != "tracepoint" else ""
    assert sorted(pr["name"] for pr in json.loads(names) if pr["id"] in progs) == \
        ["handle_kvm_entry_" + kind, "handle_kvm_exit_%s%s" % (kind, direct)]
    assert latency == 1      # the exit program records each exit's time
    assert out.splitlines()[2] == ("PID      TID      KVM_EXIT_REASON                     COUNT      TOTAL_us     "
                                   "MIN_us     AVG_us     P50_us     P90_us     P99_us     MAX_us")


def _rodata_byte(prog, name):
    """The byte of .rodata variable name that a loaded program sees."""
    from elftools.elf.elffile import ELFFile
    with open(Path(kvmexit.__file__).parent / "bpf" / "kvm_exit.bpf.o", "rb") as f:
        off = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]
    for m in prog["map_ids"]:
        info = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(m)], capture_output=True,
                                         text=True, check=True).stdout)
        if info["name"].endswith(".rodata"):
            dump = json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m)], capture_output=True,
                                             text=True, check=True).stdout)
            return int(dump[0]["value"][off], 16)
    raise AssertionError("no .rodata map")


def test_exporter_labels_at_each_granularity(tmp_path):
    from kvmexit.exporter import exit_samples
    from kvmexit.procinfo import Names
    (tmp_path / "100").mkdir()
    (tmp_path / "100" / "cmdline").write_bytes(b"qemu-system-x86_64\0-name\0guest=web\0")
    totals = {K(100, 101, 30, 0, 1, 0): 5, K(100, 102, 30, 1, 1, 0): 7, K(100, 103, 30, 0xffff, 1, 0): 2,
              K(100, 101, 12, 0, 1, 0): 1, K(200, 201, 0x7b, 0xffff, 2, 0): 3}
    names = Names(proc=str(tmp_path))
    assert exit_samples(totals, "vm", names) == {
        ("100", "web", "vmx", "IO_INSTRUCTION"): 14, ("100", "web", "vmx", "HLT"): 1, ("200", "-", "svm", "IOIO"): 3}
    assert exit_samples(totals, "vcpu", names) == {
        ("100", "web", "0", "vmx", "IO_INSTRUCTION"): 5, ("100", "web", "1", "vmx", "IO_INSTRUCTION"): 7,
        ("100", "web", "", "vmx", "IO_INSTRUCTION"): 2, ("100", "web", "0", "vmx", "HLT"): 1,
        ("200", "-", "", "svm", "IOIO"): 3}
    assert exit_samples(totals, "thread", names) == {
        ("100", "web", "101", "0", "vmx", "IO_INSTRUCTION"): 5, ("100", "web", "102", "1", "vmx", "IO_INSTRUCTION"): 7,
        ("100", "web", "103", "", "vmx", "IO_INSTRUCTION"): 2, ("100", "web", "101", "0", "vmx", "HLT"): 1,
        ("200", "-", "201", "", "svm", "IOIO"): 3}


def test_exporter_latency_histogram_and_details(tmp_path):
    """--latency's histogram: cumulative counts below each power-of-4 bound,
    exact from the kernel's log-linear buckets; --detail's series."""
    from kvmexit.exporter import detail_samples, latency_samples
    from kvmexit.procinfo import Names
    names = Names(proc=str(tmp_path))
    # 1000 ns and 1023 ns lie below 2^10; 1024 ns does not (its bucket starts at it); 5 s above 2^32 ns
    lat = {K(100, 101, 30, 0, 1, 0): LatencyStat(3, 3047, 1000, 1024, _hist(1000, 1023, 1024)),
           K(100, 102, 30, 1, 1, 0): LatencyStat(2, 5000000300, 300, 5000000000, _hist(300, 5000000000))}
    samples = latency_samples(lat, "vm", names)
    assert list(samples) == [("100", "-", "vmx", "IO_INSTRUCTION")]
    buckets, total = samples[("100", "-", "vmx", "IO_INSTRUCTION")]
    assert total == 5000003347 / 1e9
    assert buckets == [("1.024e-06", 3)] + [(le, 4) for le in (
        "4.096e-06", "1.6384e-05", "6.5536e-05", "0.000262144", "0.00104858", "0.0041943", "0.0167772", "0.0671089",
        "0.268435", "1.07374", "4.29497")] + [("+Inf", 5)]
    det = {DetailKey(K(100, 101, 30, 0, 1, 0), 1, 1, 0x80): 7, DetailKey(K(100, 102, 30, 1, 1, 0), 1, 1, 0x80): 2,
           DetailKey(K(100, 101, 31, 0, 1, 0), 2, 0, 0x6E0): 1}
    assert detail_samples(det, "vcpu", names) == {
        ("100", "-", "0", "vmx", "IO_INSTRUCTION", "pio", "out", "0x80", "POST/delay"): 7,
        ("100", "-", "1", "vmx", "IO_INSTRUCTION", "pio", "out", "0x80", "POST/delay"): 2,
        ("100", "-", "0", "vmx", "MSR_READ", "msr", "rdmsr", "0x6e0", "IA32_TSC_DEADLINE"): 1}


@pytest.mark.bpf
@pytest.mark.kvm
def test_dashboard_queries_name_served_metrics():
    """Each metric of contrib/grafana-kvmexit.json, in a scrape of the
    exporter with --detail (here: the calibration hook), and, for the
    latency histogram, in the exposition of its collector over a snapshot
    with latency (kvm_exit never fires here; the kernel matrix scrapes it)."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families
    from kvmexit.exporter import ExitCollector
    g = GuestProc(["sync,out:0x80:5,rdmsr:2"])
    addr = "127.0.0.1:%d" % free_port()
    exp = spawn(KVMEXIT + ["exporter", "--calibrate", "--detail", "--listen", addr, "-p", g.pid],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert exp.stderr.readline().startswith("kvmexit exporter: ")
    try:
        g.finish()
        served = {k[0] for k in scrape(addr)}
    finally:
        exp.send_signal(signal.SIGTERM)
        exp.communicate(timeout=30)

    class Stub:
        options = TraceOptions(latency=True)
        attached = type("A", (), {"kind": "tp_btf"})

        def read(self):
            key = K(1, 2, 30, 0, 1, 0)
            return Snapshot({key: 1}, latency={key: LatencyStat(1, 900, 900, 900, _hist(900))}, details={})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExitCollector(Stub(), "vm"))
    served |= {s.name for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}
    assert dashboard_metrics() == {"kvmexit_exits_total", "kvmexit_exit_latency_seconds_bucket",
                                   "kvmexit_exit_details_total", "kvmexit_dropped_exits_total", "kvmexit_counters",
                                   "kvmexit_counters_max"}
    assert dashboard_metrics() <= served
    assert ("kvmexit_exit_details_total" in served, exp.returncode) == (True, 0)


@pytest.mark.bpf
@pytest.mark.kvm
def test_exporter_counts_equal_the_cli(tmp_path):
    pytest.importorskip("prometheus_client")
    progs = ["sync,out:0x80:%d,out:0x70:%d,sync" % (400 + i, 20 + i) for i in range(2)]
    g = GuestProc(progs, extra=["-name", "guest=db7"])
    addr = "127.0.0.1:%d" % free_port()
    textfile = tmp_path / "kvmexit.prom"
    exp = spawn(KVMEXIT + ["exporter", "--calibrate", "--listen", addr, "--by", "thread", "--textfile", textfile,
                           "--interval", "0.05", "-p", g.pid], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert exp.stderr.readline().startswith("kvmexit exporter: ")
    cli = calibrated("-p", g.pid, "-o", "json")
    try:
        g.release()
        assert json.loads(g.p.stdout.readline()) == {"sync": 1}
        samples = scrape(addr)       # every scrape reads the kernel's counters: the guest's exits are there
        # the textfile is replaced atomically (every read parses whole), here every 0.05 s:
        # read until it has been replaced three times
        from prometheus_client.parser import text_string_to_metric_families
        inodes, reads = set(), 0
        while len(inodes) < 4:
            assert exp.poll() is None, exp.stderr.read()
            inodes.add(os.stat(textfile).st_ino)
            fams = {f.name for f in text_string_to_metric_families(textfile.read_text())}
            assert {"kvmexit_exits", "kvmexit_dropped_exits", "kvmexit_info"} <= fams
            reads += 1
        assert reads > len(inodes)
    finally:
        exp.send_signal(signal.SIGTERM)
        exp_err = exp.communicate(timeout=30)[1]
        cli.send_signal(signal.SIGINT)
        record = json.loads(cli.communicate(timeout=30)[0])
        g.finish()
    assert exp.returncode == 0, exp_err
    exits = {k: v for k, v in samples.items() if k[0] == "kvmexit_exits_total"}
    want = {}
    for i, tid in enumerate(g.tids):
        for p, n in ((0x80, 400 + i), (0x70, 20 + i), (SYNC_PORT, 1)):
            labels = {"pid": str(g.pid), "vm": "db7", "tid": str(tid), "vcpu": str(i), "isa": "pio",
                      "reason": port(p)}
            want[("kvmexit_exits_total", tuple(sorted(labels.items())))] = float(n)
    assert exits == want
    # the same numbers as the CLI
    cli_counts = {(str(e["tid"]), e["reason_name"]): e["count"] for e in record["exits"]}
    assert cli_counts == {(dict(k[1])["tid"], dict(k[1])["reason"]): int(v) for k, v in exits.items()}
    assert samples[("kvmexit_dropped_exits_total", (("cause", "map_full"),))] == 0
    assert samples[("kvmexit_dropped_exits_total", (("cause", "skipped"),))] == 0
    assert samples[("kvmexit_counters", ())] == 6
    assert samples[("kvmexit_info", (("mode", record["mode"]), ("source", "kvm_pio"), ("version", "0.1.0")))] == 1
