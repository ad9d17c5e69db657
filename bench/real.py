# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""make bench-real: what kvmexit costs per real kvm:kvm_exit, side by side.

Runs where the kernel emits kvm_exit: the kernel matrix's machines (make
bench-real boots the newest SVM, VMX and arm64 ones and runs this there;
the matrix's bench cell does the same in make test), or a KVM host.  Every
program is attached to kvm_exit at once, so all of them see the same exits
of the built-in guest: per attach type an empty program (the floor), one
that only asks bpf_get_current_pid_tgid(), kvmexit plain, with --latency
and with --detail, and (x86) bcc kvmexit's design as bcc runs it (a
classic tracepoint program).  The kernel times each program on every run
(kernel.bpf_stats_enabled: bpf_prog_info's run_time_ns and run_cnt).

Two cases, each a round repeated: hit, one vCPU thread on CPU 0 exiting
in the kernel (x86 cpuid, arm64 mrs), so each CPU's cache stays its; miss,
two vCPU threads on CPU 0 taking strict turns (sync: an exit to userspace
each), so every exit finds the other thread's cache.  Per program and case:
ns per exit, median (min-max) over rounds, and the ratios of medians.

Then what the guest pays, each program alone: a program's run_time_ns
leaves out what the kernel does around it (a classic tracepoint builds
its record, VMREADs included, before its program runs), so the guest's
own time per exit is taken with nothing attached, then with each of
ALONE attached by itself: the time of 2n hit exits minus that of n, over
n (the VM's set-up cancels).  Under Bochs the clock follows the
instructions the machine runs.

    python3 bench/real.py [--rounds N] [--hit N] [--miss N] [--json FILE]
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from kvmexit import arch as arches
from kvmexit.bpfobject import BpfObject
from kvmexit.skeleton import KvmExitObject
from kvmexit.guest import Guest, Step, strict_turns
from kvmexit.tracer import TraceOptions, Tracer

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "build" / "realexit.bpf.o"
SUFFIX = {"tp_btf": "btf", "raw_tp": "raw", "tracepoint": "tp"}
MODES = tuple(SUFFIX)
VARIANTS = ("plain", "latency", "detail")
# what the guest's time per exit is taken with, each alone ("none": nothing attached)
ALONE = ("none", "tp_btf/empty", "tracepoint/empty", "tp_btf/kvmexit", "tracepoint/bcc")


def vendor():
    """svm, vmx or arm64: which exits this machine's KVM makes."""
    if os.uname().machine == "aarch64":
        return "arm64"
    flags = Path("/proc/cpuinfo").read_text()
    return "vmx" if " vmx" in flags else "svm"


class Program:
    """One program on kvm_exit (and the others it brings: --latency's entry
    program, --detail's), loaded once, attached for each round.  kvm: the
    KvmExitObject of kvmexit's, else None (a baseline of obj)."""

    def __init__(self, name, mode, obj, prog, extra=(), kvm=None):
        self.name, self.mode, self.obj, self.prog, self.extra, self.kvm = name, mode, obj, prog, extra, kvm

    def attach(self):
        if self.kvm:
            self.kvm.attach(self.mode)
        else:
            self.obj.attach(self.prog, self.mode, "kvm_exit")

    def detach(self):
        (self.kvm or self.obj).detach()

    def stats(self):
        """(exit program's run_time_ns, run_cnt, the extra programs' run_time_ns,
        the exits the kernel skipped the exit program for)."""
        t, n = self.obj.prog_stats(self.prog)
        return t, n, sum(self.obj.prog_stats(p)[0] for p in self.extra), self.obj.prog_misses(self.prog)

    def close(self):
        (self.kvm or self.obj).close()


def baseline(prog):
    obj = BpfObject(BASELINES.read_bytes(), "realexit")
    try:
        obj.load_only({prog})
        obj.load()
    except BaseException:
        obj.close()
        raise
    return obj


def kvmexit(name, mode, kvm):
    extra = [kvm.entry_prog] if kvm.entry_prog else list(kvm.detail_programs.values())
    return Program(name, mode, kvm.obj, kvm.exit_prog, extra, kvm)


def load_all(ven):
    """Every program of the run, loaded (kvmexit's as its Tracer picks them),
    none attached."""
    arch, progs = arches.current(), []
    try:
        for mode in MODES:
            for design in ("empty", "pidtgid"):
                prog = "%s_exit_%s" % (design, SUFFIX[mode])
                progs.append(Program(design, mode, baseline(prog), prog))
            for variant in VARIANTS:
                t = Tracer(TraceOptions(mode=mode, latency=variant == "latency", detail=variant == "detail")).start()
                t.object.detach()
                progs.append(kvmexit("kvmexit" if variant == "plain" else variant, mode, t.object))
            # where kvmexit took a direct program, the one it would fall back to, beside it
            plain = progs[-3]
            proto = {v: k for k, v in arch.direct_programs.items()}.get(plain.prog)
            if proto:
                progs.append(kvmexit("fallback", mode, KvmExitObject(arch.core_object, arch.exit_programs[proto],
                                                                     arch=arch)))
            # x86 tp_btf: the owner from vcpu->pid (no helper at all) instead of asked for
            if plain.prog == "handle_kvm_exit_btf_direct":
                progs.append(kvmexit("vcpu_pid", mode, KvmExitObject(arch.direct_object,
                                                                     "handle_kvm_exit_btf_direct_vpid", arch=arch)))
        if ven != "arm64":
            prog = "bcc_%s_exit_tp" % ven
            progs.append(Program("bcc", "tracepoint", baseline(prog), prog))
    except BaseException:
        for p in progs:
            p.close()
        raise
    return progs


def run_guest(programs, **kw):
    """The guest's wall time, from its start to its last vCPU's end."""
    g = Guest(programs, **kw)
    try:
        t0 = time.perf_counter()
        g.start()
        g.join(900)
        return time.perf_counter() - t0
    finally:
        g.close()


def on_cpu0(vcpu, exits):
    return {0} if exits == 0 else None


def hit(ven, n):
    """One vCPU thread on CPU 0, exits handled in the kernel."""
    step = Step("mrs", n) if ven == "arm64" else Step("cpuid", n)
    return run_guest([[step]], affinity=on_cpu0)


def miss(ven, n):
    """Two vCPU threads on CPU 0 in strict turns: each exit after the other thread's."""
    run_guest([[Step("sync", n)], [Step("sync", n)]], sync=strict_turns(n, 30), affinity=on_cpu0)


def measure(rounds, n_hit, n_miss, log=print):
    ven = vendor()
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = stats.read_text().strip()
    stats.write_text("1")
    progs = []
    try:
        progs = load_all(ven)
        log("bench-real: %d programs on kvm_exit (%s)" % (len(progs), ven))
        res = {}
        for r in range(rounds):
            # the kernel runs a tracepoint's programs in attach order, the
            # first on the coldest caches: each round starts at another one
            order = progs[r % len(progs):] + progs[:r % len(progs)]
            try:
                for p in order:
                    p.attach()
                for case, work, n in (("hit", hit, n_hit), ("miss", miss, n_miss))[:2 if n_miss else 1]:
                    before = [p.stats() for p in progs]
                    work(ven, n)
                    for p, b in zip(progs, before):
                        t, c, x, skipped = (a - b0 for a, b0 in zip(p.stats(), b))
                        res.setdefault("%s/%s/%s" % (p.mode, case, p.name), []).append(
                            {"ns": t / max(1, c), "extra_ns": x / max(1, c), "exits": c, "skipped": skipped})
            finally:
                for p in order:
                    p.detach()
            if not res["tp_btf/hit/empty"][-1]["exits"]:
                raise SystemExit("bench-real: no kvm_exit event in a round: this kernel's KVM emits none "
                                 "(run make bench-real, which boots machines that do)")
            log("bench-real: round %d of %d" % (r + 1, rounds))
        return {"vendor": ven, "release": os.uname().release, "rounds": rounds, "hit": n_hit, "miss": n_miss,
                "programs": {"%s/%s" % (p.mode, p.name): p.prog for p in progs}, "results": res,
                "alone": alone(progs, ven, rounds, n_hit, log)}
    finally:
        for p in progs:
            p.close()
        stats.write_text(old)


def alone(progs, ven, rounds, n, log):
    """{name: per round {"ns": the guest's time per hit exit, "exits": the
    program's runs}} with each of ALONE attached by itself, in turns."""
    by = {"%s/%s" % (p.mode, p.name): p for p in progs}
    names = [a for a in ALONE if a == "none" or a in by]
    res = {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            p = by.get(name)
            if p:
                p.attach()
            try:
                before = p.stats()[1] if p else 0
                once, twice = hit(ven, n), hit(ven, 2 * n)
                runs = p.stats()[1] - before if p else None
            finally:
                if p:
                    p.detach()
            res.setdefault(name, []).append({"ns": (twice - once) / n * 1e9, "exits": runs})
        log("bench-real: alone, round %d of %d" % (r + 1, rounds))
    return res


def med(xs):
    return statistics.median(xs)


def cell(xs):
    return "%.0f (%.0f-%.0f)" % (med(xs), min(xs), max(xs))


def medians(data):
    """{(mode, case): {name: median ns per exit}} of a run (pure)."""
    meds = {}
    for key, runs in data["results"].items():
        mode, case, name = key.split("/")
        meds.setdefault((mode, case), {})[name] = med([r["ns"] for r in runs])
    return meds


def report(data, out=print):
    res, meds, progs = data["results"], medians(data), data["programs"]
    rows = []
    cases = [c for c in ("hit", "miss") if data[c]]
    for mode in MODES:
        for case in cases:
            m, bcc = meds[(mode, case)], meds.get(("tracepoint", case), {}).get("bcc")
            ns = lambda name: [r["ns"] for r in res["%s/%s/%s" % (mode, case, name)]]
            extra = lambda name: med([r["extra_ns"] for r in res["%s/%s/%s" % (mode, case, name)]])
            ratio = lambda a, b: "%.2fx" % (m[a] / b) if a in m and b else "-"
            rows.append([mode, case, cell(ns("empty")), cell(ns("pidtgid")), cell(ns("kvmexit")),
                         cell(ns("fallback")) if "fallback" in m else "-",
                         cell(ns("vcpu_pid")) if "vcpu_pid" in m else "-",
                         "%s; %.0f" % (cell(ns("latency")), extra("latency")),
                         "%s; %.0f" % (cell(ns("detail")), extra("detail")),
                         cell([r["ns"] for r in res["tracepoint/%s/bcc" % case]]) if bcc else "-",
                         ratio("kvmexit", m["empty"]), ratio("kvmexit", bcc), ratio("fallback", m["empty"]),
                         ratio("fallback", bcc), ratio("vcpu_pid", bcc)])
    exits = {case: med([x["exits"] for x in res["tp_btf/%s/empty" % case]]) for case in cases}
    out("Real kvm_exit events, %s, kernel %s: ns per exit (bpf_stats run_time_ns / run_cnt), median (min-max) of "
        "%d rounds, all programs attached together; hit: one thread, %d exits a round; %s; +latency, +detail: "
        "kvmexit's exit program with them; after ';' their other programs (entry, details), ns per exit" % (
            data["vendor"], data["release"], data["rounds"], exits["hit"],
            "miss: two threads taking turns on CPU 0, %d exits a round" % exits["miss"] if data["miss"]
            else "miss: not measured here"))
    out("kvmexit's programs: " + ", ".join("%s %s" % (mode, progs["%s/kvmexit" % mode]) for mode in MODES) +
        "; fallback: " + (", ".join("%s %s" % (k.split("/")[0], v) for k, v in progs.items()
                                   if k.endswith("/fallback")) or "none") +
        " (what kvmexit loads where the direct program is refused); vcpu->pid: x86 tp_btf's direct program with "
        "the thread read from the vCPU instead of asked for (handle_kvm_exit_btf_direct_vpid)")
    header = ["attach", "case", "empty", "pid_tgid", "kvmexit", "fallback", "vcpu->pid", "+latency", "+detail",
              "bcc design", "kvmexit/empty", "kvmexit/bcc", "fallback/empty", "fallback/bcc", "vcpu->pid/bcc"]
    _table(header, rows, out)
    if data.get("alone"):
        report_alone(data, out)


def report_alone(data, out=print):
    al = data["alone"]
    ns = {k: med([r["ns"] for r in v]) for k, v in al.items()}
    added = {k: v - ns["none"] for k, v in ns.items() if k != "none"}
    out("What the guest pays per hit exit, each alone (its time for %d exits minus that for %d, over %d; "
        "median (min-max) of %d rounds; added: over nothing attached)" % (
            2 * data["hit"], data["hit"], data["hit"], data["rounds"]))
    names = [a for a in ALONE if a in al]
    rows = [[k, cell([r["ns"] for r in al[k]]), "%.0f" % added[k] if k in added else "-",
             "%.2fx" % (added[k] / added["tracepoint/bcc"]) if k in added and "tracepoint/bcc" in added else "-"]
            for k in names]
    _table(["attached", "ns per exit", "added", "added / bcc's"], rows, out)


def _table(header, rows, out):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths]] + rows:
        out("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--hit", type=int, default=3000, help="exits of a hit round")
    ap.add_argument("--miss", type=int, default=300, help="syncs per thread of a miss round (0: no miss round)")
    ap.add_argument("--json", help="also write the raw figures here")
    ap.add_argument("--report", help="print the table of an earlier --json file and exit")
    args = ap.parse_args()
    if args.report:
        report(json.loads(Path(args.report).read_text()))
        return 0
    if os.geteuid() != 0:
        sys.exit("bench-real: needs root (BPF, /dev/kvm)")
    if not BASELINES.exists():
        sys.exit("bench-real: %s missing: run make build/realexit.bpf.o" % BASELINES)
    data = measure(args.rounds, args.hit, args.miss, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    report(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
