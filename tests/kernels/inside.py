# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Runs inside a matrix machine, through the installed CLI only, on real
kvm_exit events: the selftest in each mode, every view of one guest's life,
intervals, JSON, --latency, an exporter scrape, and perf kvm stat over
another guest's whole life.  Raw outputs go to $KVMEXIT_OUT/results.json;
nothing is judged here (tests/test_kernel_matrix.py does that on the host).

    python3 inside.py [all|selftest|views|perf|demo]...

Every wait is for what a process says (its "attached" line, the guest's
sync lines, an interval record), each with a timeout, never a fixed sleep.
"""
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

OUT = Path(os.environ.get("KVMEXIT_OUT", "/mnt"))
ARCH = "arm64" if os.uname().machine == "aarch64" else "x86"
MODES = ("auto", "tp_btf", "raw_tp", "tracepoint")
TIMEOUT = float(os.environ.get("KVMEXIT_INSIDE_TIMEOUT", "900"))
EXPORTER = "127.0.0.1:9476"

# The views guest: two vCPUs, three phases, each ended by a sync (the last
# by the program's end).  The exits of a phase are the test's to know.
# Programs per architecture of the machine.
VIEWS_PROGRAMS = {
    "x86": ("sync,out:0x80:60,cpuid:7,rdmsr:3,wrmsr:4,hlt:2,sync,out:0x80:40,cpuid:2,sync,out:0x80:20,hlt:1",
            "sync,out:0x81:50,cpuid:5,rdmsr:2,wrmsr:3,hlt:3,sync,out:0x81:30,sync,out:0x81:10,cpuid:1"),
    "arm64": ("sync,mmio:0x10001000:60,mrs:7,hvc:3,wfi:2,sync,mmio:0x10001000:40,mrs:2,sync,mmio:0x10001000:20,wfi:1",
              "sync,mmio:0x10002000:50,mrs:5,hvc:2,wfi:3,sync,mmio:0x10002000:30,sync,mmio:0x10002000:10,hvc:1"),
}
# seconds between interval records (each phase takes a small part of one),
# and of the duration view (started just before the interval tracer, it
# outlasts the guest); the host sets them for the emulator's speed
INTERVAL = float(os.environ.get("KVMEXIT_INSIDE_INTERVAL", "1"))
DURATION = int(os.environ.get("KVMEXIT_INSIDE_DURATION", "10"))
# the perf guest: its whole life under perf kvm stat record
PERF_PROGRAMS = {"x86": ("out:0x80:100,cpuid:5,hlt:3,wrmsr:2,rdmsr:1", "out:0x81:50,cpuid:2,hlt:1"),
                 "arm64": ("mmio:0x10001000:100,mrs:5,wfi:3,hvc:2", "mmio:0x10002000:50,mrs:2,wfi:1")}


def log(msg):
    print("inside: %s" % msg, flush=True)


PROCS = []    # the current scenario's processes, for the record when it fails


class Proc:
    """A process whose stdout and stderr lines are read as they come."""

    def __init__(self, name, argv, stdin=False):
        PROCS.append(self)
        self.name, self.argv = name, [str(a) for a in argv]
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = {"out": queue.Queue(), "err": queue.Queue()}
        self.text = {"out": [], "err": []}
        for key, stream in (("out", self.p.stdout), ("err", self.p.stderr)):
            threading.Thread(target=self._pump, args=(key, stream), daemon=True).start()

    def _pump(self, key, stream):
        for line in stream:
            self.text[key].append(line)
            self.lines[key].put(line)
        self.lines[key].put(None)

    def expect(self, pred, key="out", timeout=TIMEOUT):
        """The first line (from now) for which pred is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines[key].get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError("%s: no such line within %ds; stderr: %s" % (self.name, timeout, self.stderr[-500:]))
            if line is None:
                raise RuntimeError("%s ended (%s); stderr: %s" % (self.name, self.p.wait(), self.stderr[-500:]))
            if pred(line):
                return line

    def attached(self):
        """Wait for --verbose's "attached" line: it counts from now."""
        return self.expect(lambda l: l.startswith("kvmexit: attached ") or l.startswith("kvmexit exporter: "), "err")

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self, sig=signal.SIGINT, timeout=TIMEOUT):
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        rc = self.p.wait(timeout)
        for q in self.lines.values():          # both pumps drained
            while q.get(timeout=timeout) is not None:
                pass
        return {"argv": self.argv, "rc": rc, "stdout": self.stdout, "stderr": self.stderr}

    @property
    def stdout(self):
        return "".join(self.text["out"])

    @property
    def stderr(self):
        return "".join(self.text["err"])


def run(argv, timeout=TIMEOUT):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    return {"argv": [str(a) for a in argv], "rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}


def read(path):
    try:
        return Path(path).read_text()
    except OSError as e:
        return "(%s)" % e.strerror


def kmsg():
    """The kernel log's messages so far (/dev/kmsg, one record a read)."""
    out = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return out
            except OSError:          # a record overwritten while read (EPIPE): the next one
                continue
            out.append(rec.split(";", 1)[-1].rstrip("\n"))
    finally:
        os.close(fd)


def facts():
    cpuinfo = read("/proc/cpuinfo")
    key = "Features" if ARCH == "arm64" else "flags"
    flags = cpuinfo.split(key, 2)[1].split("\n")[0].split() if key in cpuinfo else []
    return {
        "machine": os.uname().machine,
        # the kernel's KVM lines (VHE or nVHE), from /dev/kmsg: no dmesg needed in the machine
        "dmesg_kvm": [l for l in kmsg() if "kvm" in l],
        "release": os.uname().release,
        "cpus": os.cpu_count(),
        "cpu_flags": sorted(set(flags) & {"vmx", "svm", "ept", "npt", "hypervisor"}),
        "btf": sorted(os.listdir("/sys/kernel/btf")) if os.path.isdir("/sys/kernel/btf") else [],
        "preempt": read("/sys/kernel/debug/sched/preempt").strip(),
        "kvm_exit_format": read("/sys/kernel/tracing/events/kvm/kvm_exit/format"),
        "kvm_entry_format": read("/sys/kernel/tracing/events/kvm/kvm_entry/format"),
        "version": run(["kvmexit", "--version"])["stdout"].strip(),
    }


def selftests():
    out = {}
    for mode in os.environ.get("KVMEXIT_INSIDE_MODES", " ".join(MODES)).split():
        log("selftest --mode %s" % mode)
        out[mode] = run(["kvmexit", "selftest", "--mode", mode])
    return out


ZIPAPP = os.environ.get("KVMEXIT_INSIDE_ZIPAPP")


def zipapp():
    """The one-file kvmexit (make zipapp's layout: the package and click) run
    by the machine's python3: its version and the selftest."""
    log("zipapp selftest")
    return {"version": run(["python3", ZIPAPP, "--version"]), "selftest": run(["python3", ZIPAPP, "selftest"])}


def guest(programs, wait=True, migrate=3, prefix=()):
    args = list(prefix) + ["kvmexit", "guest"] + (["--wait"] if wait else []) + ["--migrate", migrate]
    for p in programs:
        args += ["--program", p]
    return args


def fresh_record(tracer):
    """The next JSON record the tracer prints, passing over any that is
    older than a quarter of an interval (printed before we looked)."""
    while True:
        line = tracer.expect(lambda l: l.startswith("{"))
        stamp = datetime.datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
        if time.time() - stamp < INTERVAL / 4:
            return line


def views():
    """Every view of one guest's life, all attached before it runs."""
    g = Proc("guest", guest(VIEWS_PROGRAMS[ARCH]), stdin=True)
    info = json.loads(g.expect(lambda l: l.startswith('{"pid"')))
    g.expect(lambda l: l.startswith('{"sync": 0}'))
    pid, tids = info["pid"], info["tids"]
    argv = {
        "all": [],
        "pid": ["-p", pid],
        "alltids": ["-p", pid, "-a"],
        "vcpu": ["-p", pid, "-v", 1],
        "tid": ["-t", tids[0]],
        "tids": ["-T", "%d,%d" % (tids[1], tids[0])],
        "json": ["-p", pid, "-o", "json"],
        "latency": ["-p", pid, "--latency", "-o", "json"],
        "detail": ["-p", pid, "-a", "--detail"],
        "detail_json": ["-p", pid, "--detail", "-o", "json"],
    }
    log("views: starting %d tracers and the exporter" % (len(argv) + 2))
    tracers = {name: Proc(name, ["kvmexit", "--verbose"] + a) for name, a in argv.items()}
    exporter = Proc("exporter", ["kvmexit", "exporter", "--listen", EXPORTER, "-p", pid, "--by", "thread",
                                 "--latency", "--detail"])
    for t in list(tracers.values()) + [exporter]:
        t.attached()
    # the timed ones last: the interval tracer, then the duration one (its
    # clock starts at its attach, and it must outlast the guest)
    tracers["intervals"] = Proc("intervals", ["kvmexit", "--verbose", "-p", pid, "-a", "-o", "json", "-i", INTERVAL])
    tracers["intervals"].attached()
    tracers["duration"] = Proc("duration", ["kvmexit", "--verbose", "-p", pid, DURATION])
    tracers["duration"].attached()
    started = time.monotonic()
    iv = tracers["intervals"]
    # one phase is released right after a record is printed, so that it
    # runs inside the next interval; records of the parked guest before are
    # passed over
    fresh_record(iv)
    phase_records = []
    for phase in range(3):
        g.send("")
        phase_records.append(fresh_record(iv))
    done = json.loads(g.expect(lambda l: l.startswith('{"done"')))
    guest_done = time.monotonic() - started       # since the duration tracer attached
    log("views: guest done; scraping the exporter")
    with urllib.request.urlopen("http://%s/metrics" % EXPORTER, timeout=60) as r:
        scrape = r.read().decode()
    outs = {name: t.stop(None if name == "duration" else signal.SIGINT) for name, t in tracers.items()}
    outs["exporter"] = exporter.stop(signal.SIGTERM)
    outs["guest"] = g.stop(None)
    return {"pid": pid, "tids": tids, "programs": VIEWS_PROGRAMS[ARCH], "done": done, "outs": outs,
            "phase_records": phase_records, "scrape": scrape, "guest_done_s": guest_done,
            "duration": DURATION, "interval": INTERVAL}


def perf():
    """perf kvm stat over a guest's whole life, with two kvmexit tracers attached first."""
    tracers = {"auto": Proc("auto", ["kvmexit", "--verbose", "--latency", "-o", "json"]),
               "tracepoint": Proc("tracepoint", ["kvmexit", "--verbose", "--mode", "tracepoint", "-o", "json"]),
               "detail": Proc("detail", ["kvmexit", "--verbose", "--detail", "-o", "json"])}
    for t in tracers.values():
        t.attached()
    data = "/tmp/perf.data.guest"
    log("perf: recording a guest's life")
    rec = run(guest(PERF_PROGRAMS[ARCH], wait=False, prefix=["perf", "kvm", "stat", "record", "-a", "-o", data]))
    outs = {name: t.stop() for name, t in tracers.items()}
    reports = {"vmexit": run(["perf", "kvm", "-i", data, "stat", "report", "--event", "vmexit"])}
    if ARCH == "x86":          # perf kvm stat's ioport events are x86's
        reports["ioport"] = run(["perf", "kvm", "-i", data, "stat", "report", "--event", "ioport"])
    return {"programs": PERF_PROGRAMS[ARCH], "record": rec, "outs": outs, "reports": reports}


# the moves guest (kvmexit guest --rotate): after each sync each thread runs the next vCPU
MOVES_PROGRAMS = {"x86": ("sync,out:0x80:10,sync,out:0x80:20", "sync,out:0x81:30,sync,out:0x81:40"),
                  "arm64": ("sync,mmio:0x10001000:10,sync,mmio:0x10001000:20",
                            "sync,mmio:0x10002000:30,sync,mmio:0x10002000:40")}


def moves():
    """vCPUs moved between threads at each sync: every exit under the vCPU its
    thread ran then (-p -a and -p -v 1, JSON), both tracers attached before
    the first release."""
    g = Proc("guest", guest(MOVES_PROGRAMS[ARCH], prefix=()) + ["--rotate"], stdin=True)
    info = json.loads(g.expect(lambda l: l.startswith('{"pid"')))
    g.expect(lambda l: l.startswith('{"sync": 0}'))
    tracers = {"all": Proc("all", ["kvmexit", "--verbose", "-p", info["pid"], "-a", "-o", "json"]),
               "vcpu1": Proc("vcpu1", ["kvmexit", "--verbose", "-p", info["pid"], "-v", 1, "-o", "json"])}
    for t in tracers.values():
        t.attached()
    g.send("")
    g.expect(lambda l: l.startswith('{"sync": 1}'))
    g.send("")
    g.expect(lambda l: l.startswith('{"done"'))
    outs = {name: t.stop() for name, t in tracers.items()}
    outs["guest"] = g.stop(None)
    return {"pid": info["pid"], "tids": info["tids"], "programs": MOVES_PROGRAMS[ARCH], "outs": outs}


# --explain's guest: port 0x80 writes (arm64: MMIO stores) dominate, halts (WFI) come second
EXPLAIN_PROGRAMS = {"x86": ("sync,out:0x80:400,hlt:100,cpuid:10", "sync,out:0x80:300,hlt:80"),
                    "arm64": ("sync,mmio:0x10001000:400,wfi:100,mrs:10", "sync,mmio:0x10001000:300,wfi:80")}
KVM_PARAMS = ("halt_poll_ns", "halt_poll_ns_grow", "halt_poll_ns_shrink")


def explain():
    """kvmexit --detail --explain over a guest's life, table and JSON, and
    the kvm module parameters its hints should show as read."""
    g = Proc("guest", guest(EXPLAIN_PROGRAMS[ARCH]), stdin=True)
    info = json.loads(g.expect(lambda l: l.startswith('{"pid"')))
    g.expect(lambda l: l.startswith('{"sync": 0}'))
    tracers = {fmt: Proc(fmt, ["kvmexit", "--verbose", "-p", info["pid"], "--detail", "--explain", "-o", fmt])
               for fmt in ("table", "json")}
    for t in tracers.values():
        t.attached()
    g.send("")
    g.expect(lambda l: l.startswith('{"done"'))
    outs = {name: t.stop() for name, t in tracers.items()}
    outs["guest"] = g.stop(None)
    return {"pid": info["pid"], "tids": info["tids"], "outs": outs,
            "params": {p: read("/sys/module/kvm/parameters/" + p).strip() for p in KVM_PARAMS},
            "modules": sorted(m for m in ("kvm", "kvm_intel", "kvm_amd") if os.path.isdir("/sys/module/%s/parameters" % m))}


DEMO_PROGRAMS = {"x86": ("sync,out:0x80:300,cpuid:20,rdmsr:5,wrmsr:5,hlt:3",
                         "sync,out:0x70:200,out:0x71:200,cpuid:10,hlt:2"),
                 "arm64": ("sync,mmio:0x10001000:300,mrs:20,hvc:5,wfi:3",
                           "sync,mmio:0x10002000:200,mmio:0x10003000:200,mrs:10,wfi:2")}


def demo(extra=()):
    """What `make run` shows: kvmexit -p PID -a over one run of a known guest."""
    g = Proc("guest", guest(DEMO_PROGRAMS[ARCH], migrate=5), stdin=True)
    info = json.loads(g.expect(lambda l: l.startswith('{"pid"')))
    g.expect(lambda l: l.startswith('{"sync": 0}'))
    t = Proc("demo", ["kvmexit", "--verbose", "-p", info["pid"], "-a"] + list(extra))
    t.attached()
    g.send("")
    g.expect(lambda l: l.startswith('{"done"'))
    g.stop(None)
    return t.stop()


# make bench-real (bench/real.py) in this machine: "rounds,hit exits,miss syncs", set by the host for
# the machines that run it
BENCH = os.environ.get("KVMEXIT_INSIDE_BENCH")
REPO = Path(__file__).resolve().parents[2]


def bench():
    """bench/real.py: every program on kvm_exit at once, its table and figures."""
    rounds, hit, miss = BENCH.split(",")
    log("bench: %s rounds" % rounds)
    data = OUT / "bench.json"
    r = run([sys.executable, REPO / "bench" / "real.py", "--rounds", rounds, "--hit", hit, "--miss", miss,
             "--json", data])
    r["data"] = json.loads(data.read_text()) if data.exists() else None
    return r


SCENARIOS = {"facts": facts, "selftest": selftests, "views": views, "perf": perf, "explain": explain, "moves": moves,
             "zipapp": zipapp, "demo": demo, "bench": bench}


def main(argv):
    every = ("facts", "selftest", "views", "perf", "explain", "moves") + (("zipapp",) if ZIPAPP else ()) + \
        (("bench",) if BENCH else ())
    names = [n for n in (argv or ["all"]) for n in (every if n == "all" else (n,))]
    results = {}
    for name in names:
        start = time.monotonic()
        del PROCS[:]
        try:
            results[name] = SCENARIOS[name]()
        except Exception as e:                  # recorded, and the other scenarios still run
            for p in PROCS:
                if p.p.poll() is None:
                    p.p.kill()
            results[name] = {"error": "%s: %s" % (type(e).__name__, e),
                             "procs": {p.name: {"argv": p.argv, "rc": p.p.wait(), "stdout": p.stdout[-3000:],
                                                "stderr": p.stderr[-3000:]} for p in PROCS}}
        results.setdefault("seconds", {})[name] = round(time.monotonic() - start, 1)
        log("%s: %.1f s" % (name, results["seconds"][name]))
        (OUT / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
