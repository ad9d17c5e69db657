# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""make bench: what kvmexit costs, measured side by side in one run.

Every figure is a median over repeated runs (min-max beside it), and every
comparison is a ratio against a baseline measured in the same run, the
configurations alternating (A B C A B C ...).  Needs root, BPF and /dev/kvm.

  1. in-kernel cost per counted event (bpf_stats) on real kvm:kvm_pio events
     from the built-in guest: kvmexit's counting code vs an empty program
     (the floor) vs bcc kvmexit's design, per attach type, cache hits and misses
  2. guest-visible time per exit (kvm:kvm_msr, in-kernel wrmsr exits)
  3. readout time and kernel memory, by CPUs and counters
  4. start-up to attached, and peak RSS
  5. cost per event as the number of traced threads grows
  6. what --latency adds per exit/entry pair
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from kvmexit import _libbpf, kernel, maps
from kvmexit.abi import MAP_CACHE, MAP_COUNTS, kvmexit_cache, kvmexit_key
from kvmexit.bpfobject import BpfObject
from kvmexit.guest import Guest, Step, strict_turns
from kvmexit.skeleton import CORE_OBJECT, KvmExitObject
from kvmexit.tracer import TraceOptions, Tracer

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "build" / "baselines.bpf.o"
NO_LATENCY = REPO / "build" / "kvm_exit_nolat.bpf.o"
PYZ = REPO / "dist" / "kvmexit.pyz"
KINDS = {"tp_btf": "btf", "raw_tp": "raw", "tracepoint": "tp"}
PORT = 30  # < bcc's REASON_NUM, so bcc counts it too
RESULTS = {}


def med(xs):
    return statistics.median(xs)


def fmt(xs, unit="", prec=1):
    return "%.*f%s (%.*f-%.*f)" % (prec, med(xs), unit, prec, min(xs), prec, max(xs))


def table(title, header, rows):
    print("\n" + title)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths]] + rows:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


class Attached:
    """One program on a calibration hook: kvmexit's (via Tracer) or a baseline."""

    def __init__(self, design, hook, kind):
        self.design, self.hook, self.kind = design, hook, kind
        if design == "kvmexit":
            self.tracer = Tracer(TraceOptions(mode=kind, source="kvm_" + hook)).start()
            self.obj, self.prog = self.tracer.object, self.tracer.attached.prog
        else:
            self.tracer = None
            self.prog = "%s_%s_%s" % (design, hook, KINDS[kind])
            self.obj = baseline(self.prog)
            self.obj.attach(self.prog, kind, "kvm_" + hook)

    def stats(self):
        return self.obj.prog_stats(self.prog)

    def close(self):
        (self.tracer or self.obj).close()


def baseline(prog):
    """One program of bench/baselines.bpf.o, loaded."""
    obj = BpfObject(BASELINES.read_bytes(), "baselines")
    obj.load_only({prog})
    obj.load()
    return obj


def run_guest(programs, **kw):
    g = Guest(programs, **kw)
    try:
        g.start()
        t0 = time.perf_counter()
        g.join()
        return time.perf_counter() - t0
    finally:
        g.close()


def pingpong_guest(n):
    """Two vCPU threads on CPU 0 taking strict turns: every kvm_pio event
    comes from the other thread than the one before (a cache miss)."""
    pin = lambda vcpu, exits: {0} if exits == 0 else None
    return run_guest([[Step("sync", n)], [Step("sync", n)]], sync=strict_turns(n, 5), affinity=pin)


# -- 1 -----------------------------------------------------------------------
def bench_in_kernel(repeats, n_hit, n_miss):
    designs = ("empty", "pidtgid", "kvmexit", "bcc")
    res = {}
    for kind in KINDS:
        for case in ("hit", "miss"):
            for _ in range(repeats):
                for d in designs:
                    a = Attached(d, "pio", kind)
                    try:
                        t0, c0 = a.stats()
                        if case == "hit":
                            run_guest([[Step("out", n_hit, PORT)]], affinity=lambda v, e: {0} if e == 0 else None)
                        else:
                            pingpong_guest(n_miss)
                        t1, c1 = a.stats()
                    finally:
                        a.close()
                    res.setdefault((kind, case, d), []).append((t1 - t0) / max(1, c1 - c0))
    rows = []
    for kind in KINDS:
        for case in ("hit", "miss"):
            e, p, k, b = (res[(kind, case, d)] for d in designs)
            rows.append([kind, case, fmt(e, " ns"), fmt(p, " ns"), fmt(k, " ns"), fmt(b, " ns"),
                         "%.2fx" % (med(p) / med(e)), "%.2fx" % (med(k) / med(e)), "%.2fx" % (med(b) / med(e)),
                         "%.2fx" % (med(k) / med(b)), "%.2fx" % (med(k) / med(p))])
    table("1. In-kernel cost per counted kvm:kvm_pio event (bpf_stats run_time_ns / run_cnt), "
          "median (min-max) of %d runs; hit: one thread, %d events; miss: two threads alternating "
          "on CPU 0, %d events each; pid_tgid: an empty program that asks only which thread it is"
          % (repeats, n_hit, n_miss),
          ["attach", "case", "empty", "pid_tgid", "kvmexit", "bcc design", "pid_tgid/empty", "kvmexit/empty",
           "bcc/empty", "kvmexit/bcc", "kvmexit/pid_tgid"], rows)
    RESULTS["in_kernel"] = {"%s/%s/%s" % k: v for k, v in res.items()}


# -- 2 -----------------------------------------------------------------------
def bench_guest(repeats, n):
    configs = [("none", None, None), ("empty", "raw_tp", None), ("empty", "tracepoint", None),
               ("kvmexit", "tp_btf", None), ("kvmexit", "raw_tp", None), ("kvmexit", "tracepoint", None),
               ("bcc", "raw_tp", None), ("bcc", "tracepoint", None)]
    per = {c[:2]: [] for c in configs}
    for _ in range(repeats):
        for d, kind, _ in configs:
            a = Attached(d, "msr", kind) if d != "none" else None
            try:
                dt = run_guest([[Step("wrmsr", n)]], affinity=lambda v, e: {0} if e == 0 else None)
            finally:
                if a:
                    a.close()
            per[(d, kind)].append(dt / (n + 1) * 1e9)
    base = per[("none", None)]
    added = {k: [x - b for x, b in zip(v, base)] for k, v in per.items()}
    floor = med(added[("empty", "raw_tp")])
    rows = []
    for (d, kind), v in per.items():
        a = added[(d, kind)]
        rows.append([d, kind or "-", fmt(v, " ns"), "-" if d == "none" else fmt(a, " ns"),
                     "-" if d == "none" else "%.2fx" % (med(a) / floor)])
    table("2. Guest time per exit (wrmsr x %d, kvm:kvm_msr in the kernel), median (min-max) of %d runs; "
          "added = minus 'none' of the same round" % (n, repeats),
          ["program", "attach", "per exit", "added", "added / empty raw_tp"], rows)
    RESULTS["guest"] = {"%s/%s" % k: v for k, v in per.items()}


# -- 3 -----------------------------------------------------------------------
def synthetic(nkeys, ncpu):
    """Keys, per-CPU values and caches in the real layout: 8 reasons per thread, each CPU's cache owned."""
    keys = b"".join(bytes(kvmexit_key(1000 + i // 8, 2000 + i // 8, i % 8, 0, 1, 0)) for i in range(nkeys))
    values = struct.pack("<%dQ" % (nkeys * ncpu), *((i % 7) for i in range(nkeys * ncpu)))
    c = kvmexit_cache()
    c.owner, c.key = (1000 << 32) | 2000, kvmexit_key(1000, 2000, 0, 0, 1, 0)
    c.nreasons = len(c.reasons)
    for r in range(len(c.reasons)):
        c.reasons[r], c.dense[r] = r, 100
    return keys, values, [bytes(c)] * ncpu


def bench_readout(repeats):
    ncpu = maps.possible_cpus()
    rows = []
    lib = _libbpf.load()
    # real maps at this host's CPU count: the whole read, and its floor (the batched copy alone)
    for nkeys in (1024, 16384, 65536):
        obj = KvmExitObject(CORE_OBJECT, "handle_kvm_pio_raw", max_entries=nkeys)
        try:
            keys, values, _ = synthetic(nkeys, ncpu)
            fd = obj.obj.map_fd(MAP_COUNTS)
            for i in range(nkeys):
                lib.bpf_map_update_elem(fd, keys[16 * i:16 * i + 16], values[8 * ncpu * i:8 * ncpu * (i + 1)], 0)
            whole, floor = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                maps.read_hash(fd, 8 * ncpu, nkeys)
                t1 = time.perf_counter()
                snap = obj.read()
                t2 = time.perf_counter()
                floor.append((t1 - t0) * 1e3)
                whole.append((t2 - t1) * 1e3)
            assert len(snap.totals) == nkeys - sum(1 for i in range(nkeys) if not any(
                (j % 7) for j in range(i * ncpu, (i + 1) * ncpu)))
            rows.append([nkeys, ncpu, "read()", fmt(whole, " ms", 2), fmt(floor, " ms", 2),
                         "%.2fx" % (med(whole) / med(floor)), "%.1f" % (med(whole) * 1e6 / (nkeys * ncpu))])
        finally:
            obj.close()
    # the summing code beyond this host's CPUs: synthetic buffers of the real layout
    for ncpu_s in (1, 64, 640):
        for nkeys in (1024, 16384):
            keys, values, caches = synthetic(nkeys, ncpu_s)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                maps.combine(keys, values, ncpu_s, caches)
                times.append((time.perf_counter() - t0) * 1e3)
            rows.append([nkeys, ncpu_s, "combine()", fmt(times, " ms", 2), "-", "-",
                         "%.1f" % (med(times) * 1e6 / (nkeys * ncpu_s))])
    table("3a. Readout: read + sum every counter (counters = (thread, reason) pairs), median (min-max) of %d; "
          "floor: the BPF_MAP_LOOKUP_BATCH calls alone, same run" % repeats,
          ["counters", "CPUs", "what", "time", "floor", "time/floor", "ns per counter x CPU"], rows)
    RESULTS["readout"] = rows

    # kernel memory, measured at this host's CPU count, formula beyond
    obj = KvmExitObject(CORE_OBJECT, "handle_kvm_pio_raw", max_entries=16384)
    k_entry = obj.memlock(MAP_COUNTS) / 16384 - 8 * ncpu
    k_cache = obj.memlock(MAP_CACHE)
    obj.close()
    b = baseline("bcc_pio_raw")
    b_entry = b.memlock("bcc_pcpu_kvm_stat") / 1024 - 616 * ncpu
    b.close()
    mib = lambda x: "%.1f MiB" % (x / 2**20)
    rows = []
    for cpus in (2, 64, 256, 640):
        kvm = lambda entries: entries * (8 * cpus + k_entry) + k_cache / ncpu * cpus
        bcc = lambda value: 1024 * (value * cpus + b_entry) + (value + 8) * cpus * 2
        rows.append([cpus, mib(kvm(16384)), mib(kvm(4096 * 4)), mib(kvm(4096 * 8)), mib(bcc(616)), mib(bcc(8224))])
    table("3b. Kernel memory pinned (memlock measured at %d CPUs: %.0f B per counter + 8 B per CPU; formula beyond)"
          % (ncpu, k_entry),
          ["CPUs", "kvmexit default (16384)", "4096 threads x 4 reasons", "4096 threads x 8 reasons",
           "bcc VMX (1024 threads)", "bcc SVM (1024 threads)"], rows)


# -- 4 -----------------------------------------------------------------------
# Peak RSS through a small forking wrapper: a child forked from this (large)
# process would report this process's RSS as its own maximum.
RSS_WRAPPER = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execvp(sys.argv[1], sys.argv[1:])\n"
               "_, status, ru = os.wait4(pid, 0)\nsys.stderr.write('maxrss_kib %d\\n' % ru.ru_maxrss)\n")


def bench_startup(repeats):
    """Each command from exec to attached (the banner printed) or to its exit.
    The package is byte-compiled first, as every install ships it (pip,
    dh_python3, make install, the zipapp): a checkout run under
    PYTHONDONTWRITEBYTECODE would otherwise compile every module each time.
    `import click` is the floor the click CLI cannot go under; the zipapp
    runs on the host's python3, its own floor."""
    exe = str(Path(sys.executable).parent / "kvmexit")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "kvmexit")], check=True)
    floor, pyz_floor = "python -c pass (floor)", "python3 -c pass (the zipapp's floor)"
    cmds = [(floor, [sys.executable, "-c", "pass"], False, floor),
            ("python -c 'import click' (the CLI's floor)", [sys.executable, "-c", "import click"], False, floor),
            ("python -c 'import kvmexit.cli' (click and kvmexit's modules)", [sys.executable, "-c",
                                                                               "import kvmexit.cli"], False, floor),
            ("kvmexit --help", [exe, "--help"], False, floor)]
    cmds += [("kvmexit --mode %s 0" % m, [exe, "--mode", m, "0"], True, floor)
             for m in ("auto", "tp_btf", "raw_tp", "tracepoint")]
    if PYZ.exists():
        cmds += [(pyz_floor, ["python3", "-c", "pass"], False, pyz_floor),
                 ("python3 kvmexit.pyz --mode auto 0", ["python3", str(PYZ), "--mode", "auto", "0"], True, pyz_floor)]
    res = {}
    for _ in range(repeats):
        for name, argv, attach, _ in cmds:
            t0 = time.perf_counter()
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            if attach:
                p.stdout.readline()          # the banner: printed once attached
            elapsed = time.perf_counter() - t0
            p.communicate()
            if not attach:
                elapsed = time.perf_counter() - t0
            r = subprocess.run([sys.executable, "-c", RSS_WRAPPER] + argv, capture_output=True, text=True)
            rss = int(r.stderr.rsplit("maxrss_kib", 1)[1]) / 1024
            res.setdefault(name, []).append((elapsed, rss))
    base = {name: med([x[0] for x in res[f]]) for name, _, _, f in cmds}
    rows = [[name, fmt([x[0] * 1e3 for x in v], " ms"), "%.1fx" % (med([x[0] for x in v]) / base[name]),
             fmt([x[1] for x in v], " MiB")] for name, v in res.items()]
    table("4. Start-up (to attached: banner printed; else to exit) and peak RSS, median (min-max) of %d%s" % (
          repeats, "" if PYZ.exists() else "; no dist/kvmexit.pyz: make zipapp adds its row"),
          ["command", "time", "/ its python's floor", "peak RSS"], rows)
    RESULTS["startup"] = res
    bench_startup_phases(repeats)


def bench_startup_phases(repeats):
    """Where start-up goes after the imports, timed in this process: the
    kernel BTF read that picks the program, and the object's load with the
    counts map at the default size and at one entry (the difference: its
    preallocation)."""
    def ms(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    load = lambda n: KvmExitObject(CORE_OBJECT, "handle_kvm_pio_raw", max_entries=n).close()
    phases = {"kernel.probe_btf()": kernel.probe_btf, "object load, counts map 16384 entries": lambda: load(16384),
              "object load, counts map 1 entry": lambda: load(1)}
    res = {}
    for _ in range(repeats):
        for name, fn in phases.items():
            res.setdefault(name, []).append(ms(fn))
    prealloc = med(res["object load, counts map 16384 entries"]) - med(res["object load, counts map 1 entry"])
    rows = [[name, fmt(v, " ms")] for name, v in res.items()] + [["the counts map's preallocation (difference)",
                                                                   "%.1f ms" % prealloc]]
    table("4b. Start-up after the imports, in this process, median (min-max) of %d" % repeats,
          ["phase", "time"], rows)
    RESULTS["startup_phases"] = res


# -- 5 -----------------------------------------------------------------------
def bench_scale(events):
    """BPF_PROG_TEST_RUN from N threads on CPU 0 in strict rotation."""
    rows = []
    for nthreads in (1, 16, 1024):
        per = {}
        for design in ("kvmexit", "bcc"):
            if design == "kvmexit":
                prog = "handle_kvm_pio_raw"
                obj = KvmExitObject(CORE_OBJECT, prog)
            else:
                prog = "bcc_pio_raw"
                obj = baseline(prog)
            rounds = max(1, events // nthreads)
            evs = [threading.Event() for _ in range(nthreads)]

            def worker(i):
                os.sched_setaffinity(0, {0})
                for _ in range(rounds):
                    evs[i].wait()
                    evs[i].clear()
                    obj.test_run(prog, [1, PORT, 2, 1, 0])
                    evs[(i + 1) % nthreads].set()
            threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(nthreads)]
            for t in threads:
                t.start()
            t0, c0 = obj.prog_stats(prog)
            evs[0].set()
            for t in threads:
                t.join()
            t1, c1 = obj.prog_stats(prog)
            obj.close()
            per[design] = (t1 - t0) / (c1 - c0)
        rows.append([nthreads, "%.0f ns" % per["kvmexit"], "%.0f ns" % per["bcc"],
                     "%.2fx" % (per["kvmexit"] / per["bcc"])])
    table("5. Cost per event by traced threads (BPF_PROG_TEST_RUN on raw_tp, threads take turns on CPU 0, "
          "%d events)" % events, ["threads", "kvmexit", "bcc design", "kvmexit/bcc"], rows)


# -- 6 -----------------------------------------------------------------------
def bench_latency(repeats, events):
    """--latency's cost, and what a false `latency` in .rodata costs the plain
    path: the raw_tp exit program of an object without the latency code
    (built with -DKVMEXIT_NO_LATENCY), of the shipped object with latency
    false, and with latency true plus its entry program; BPF_PROG_TEST_RUN
    from one thread (cache hits), alternating."""
    os.sched_setaffinity(0, {0})
    exit_prog, entry_prog = "handle_kvm_exit_raw", "handle_kvm_entry_raw"
    nolat = BpfObject(NO_LATENCY.read_bytes(), "kvm_exit")
    nolat.load_only({exit_prog})
    nolat.load()
    objs = {"no latency code": nolat, "latency = false": KvmExitObject(CORE_OBJECT, exit_prog),
            "latency = true": KvmExitObject(CORE_OBJECT, exit_prog, entry_prog)}
    res = {name: [] for name in objs}
    res["entry (latency = true)"] = []
    try:
        for _ in range(repeats):
            for name, obj in objs.items():
                lat = name == "latency = true"
                e0, n0 = obj.prog_stats(exit_prog)
                x0, m0 = obj.prog_stats(entry_prog) if lat else (0, 0)
                for _ in range(events):
                    obj.test_run(exit_prog, [0, 1])
                    if lat:
                        obj.test_run(entry_prog, [0])
                e1, n1 = obj.prog_stats(exit_prog)
                res[name].append((e1 - e0) / (n1 - n0))
                if lat:
                    x1, m1 = obj.prog_stats(entry_prog)
                    res["entry (latency = true)"].append((x1 - x0) / (m1 - m0))
        sizes = {name: (obj.obj if name != "no latency code" else obj).prog_sizes(exit_prog) for name, obj in objs.items()}
    finally:
        for obj in objs.values():
            obj.close()
    added = med(res["latency = true"]) - med(res["latency = false"]) + med(res["entry (latency = true)"])
    base = med(res["no latency code"])
    rows = [[k, fmt(v, " ns"), "%.2fx" % (med(v) / base), "%d / %d" % sizes[k] if k in sizes else "-"]
            for k, v in res.items()]
    rows.append(["added per exit/entry pair", "%.1f ns" % added, "-", "-"])
    table("6. --latency in the kernel (bpf_stats; the raw_tp exit program by BPF_PROG_TEST_RUN, %d events), "
          "median (min-max) of %d; size: verifier's instructions / JIT bytes" % (events, repeats),
          ["program", "per event", "/ no latency code", "size"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and events (a smoke run)")
    ap.add_argument("--only", help="comma separated sections to run, e.g. 1,3")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (BPF, /dev/kvm)")
    if not BASELINES.exists():
        sys.exit("bench: %s missing: run make bench" % BASELINES)
    q = args.quick
    only = set((args.only or "1,2,3,4,5,6").split(","))
    stats_path = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats_path.read_text().strip()
    stats_path.write_text("1")
    try:
        print("kvmexit benchmark on %s, %d possible CPUs, kernel %s" % (
            os.uname().nodename, maps.possible_cpus(), os.uname().release))
        if "1" in only:
            bench_in_kernel(3 if q else 11, 2000 if q else 20000, 500 if q else 3000)
        if "2" in only:
            bench_guest(3 if q else 9, 50000 if q else 300000)
        if "3" in only:
            bench_readout(3 if q else 7)
        if "4" in only:
            bench_startup(3 if q else 9)
        if "5" in only:
            bench_scale(2000 if q else 20000)
        if "6" in only:
            bench_latency(3 if q else 9, 2000 if q else 10000)
    finally:
        stats_path.write_text(old)
    out = REPO / "build" / "bench.json"
    out.write_text(json.dumps({k: v for k, v in RESULTS.items()}, default=str, indent=1))


if __name__ == "__main__":
    main()
