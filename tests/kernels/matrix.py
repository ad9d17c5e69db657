# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The machines of the matrix, and running them: kernels fetched first, one
at a time; then the boots, two at a time (QEMU with one TCG thread, Bochs is
single-threaded: two machines keep this host's two cores busy), longest
first."""
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import boot, fetch, image, userland
from .inside import MODES
from .manifest import ALL_SERIES

INSIDE = Path(__file__).resolve().parent / "inside.py"


@dataclass(frozen=True)
class Machine:
    name: str
    series: str            # a manifest.ALL_SERIES key
    emulator: str          # "qemu": AMD SVM under TCG; "bochs": Intel VMX with EPT; "qemu-arm64": EL2 under TCG
    cpu: str = None        # Bochs CPU model
    timeout: int = 900     # boot to power-off, seconds
    modes: tuple = MODES   # the selftest's modes
    interval: float = 1.0  # inside.py's interval and duration views, in the machine's seconds
    duration: int = 10
    nvhe: bool = False     # arm64: KVM in nVHE mode (kvm-arm.mode=nvhe) instead of VHE
    bench: str = None      # make bench-real there: "rounds,hit exits,miss syncs" (inside.py's bench)

    @property
    def vendor(self):
        return {"qemu": "svm", "bochs": "vmx", "qemu-arm64": "arm64"}[self.emulator]


# Bochs runs about 40 times slower than real time here: its selftest runs
# in the forced modes only, and its views are timed more tightly
BOCHS = dict(timeout=2400, modes=MODES[1:], interval=0.5, duration=6)
MACHINES = {m.name: m for m in (
    # Bochs first: they take longest
    Machine("vmx-6.1", "6.1", "bochs", "corei7_skylake_x", **BOCHS),
    # 7.x panics at boot under corei7_skylake_x (fpstate_reset, from fpu__init_system_xstate)
    Machine("vmx-newest", "newest", "bochs", "corei7_haswell_4770", bench="5,1000,100", **BOCHS),
    Machine("svm-5.10", "5.10", "qemu"),
    Machine("svm-6.1", "6.1", "qemu"),
    Machine("svm-6.12", "6.12", "qemu"),
    Machine("svm-6.16", "6.16", "qemu"),
    Machine("svm-newest", "newest", "qemu", bench="7,3000,300"),
    Machine("arm64-5.10", "arm64-5.10", "qemu-arm64"),
    Machine("arm64-6.1", "arm64-6.1", "qemu-arm64"),
    Machine("arm64-6.1-nvhe", "arm64-6.1", "qemu-arm64", nvhe=True),
    Machine("arm64-6.12", "arm64-6.12", "qemu-arm64"),
    # no miss round on arm64: there one of its two vCPUs makes no exit after its first sync (not understood)
    Machine("arm64-newest", "arm64-newest", "qemu-arm64", bench="15,2000,0"),
)}

# Bochs has no 9p: what the machine runs travels in an ext2 image
BOCHS_PATHS = ("/usr/lib/python3.11", str(boot.REPO / ".venv"), str(boot.REPO / "src"), str(INSIDE.parent),
               "/usr/lib/x86_64-linux-gnu/libbpf.so.1", str(boot.REPO / "bench" / "real.py"),
               str(boot.REPO / "build" / "realexit.bpf.o"))
BOCHS_PROGRAMS = ("/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/perf")


ZIPAPP = boot.REPO / "build" / "matrix" / "kvmexit.pyz"
_ZIPAPP_LOCK = threading.Lock()       # the machines boot two at a time


def build_zipapp():
    """The one-file kvmexit as `make zipapp` lays it out (the package with its
    BPF objects, and click), in the checkout's build/ where the machines see
    it; its path."""
    import shutil
    import tempfile
    import zipapp
    import click
    import kvmexit
    ZIPAPP.parent.mkdir(parents=True, exist_ok=True)
    with _ZIPAPP_LOCK, tempfile.TemporaryDirectory(dir=ZIPAPP.parent) as d:
        for pkg in (kvmexit, click):
            src = Path(pkg.__file__).parent
            shutil.copytree(src, Path(d) / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        tmp = ZIPAPP.with_suffix(".tmp")
        zipapp.create_archive(d, tmp, interpreter="/usr/bin/env python3", main="kvmexit.cli:main", compressed=True)
        tmp.replace(ZIPAPP)
    return ZIPAPP


@dataclass
class Run:
    machine: Machine
    kernel: fetch.Kernel
    boot: boot.Boot
    results: dict
    userspace: tuple = ()  # arm64: [(deb file, sha256)] of its userland

    def summary(self):
        """Lines for the test report: what ran, on exactly which packages, for how long."""
        lines = ["%s: %s under %s%s, %.0f s boot to power-off" % (
            self.machine.name, self.kernel.release, self.machine.emulator, " (nVHE)" if self.machine.nvhe else "",
            self.boot.seconds)]
        lines += ["  %s (%s)" % (p.line(), self.kernel.series.suite) for p in self.kernel.packages]
        if self.userspace:
            lines.append("  userland (%s, arm64): %s" % (userland.SUITE, ", ".join(
                "%s sha256 %s" % (deb, sha[:16]) for deb, sha in self.userspace
                if deb.split("_")[0] in ("python3.11-minimal", "libbpf1", "linux-perf"))))
        secs = self.results.get("seconds", {})
        if secs:
            lines.append("  inside: " + ", ".join("%s %.0f s" % kv for kv in secs.items()))
        bench = self.results.get("bench") or {}
        if bench.get("stdout"):
            lines += ["  " + l for l in bench["stdout"].splitlines()]
        return lines


def run(machine, kernel, workdir, scenarios=("all",), log=print):
    """Boot one machine, run inside.py's scenarios there, return what it wrote."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = ("PYTHONPATH=%s KVMEXIT_INSIDE_ZIPAPP=%s " % (userland.pythonpath(boot.REPO), build_zipapp())
           if machine.vendor == "arm64" else "")
    if machine.bench:
        env += "KVMEXIT_INSIDE_BENCH=%s " % machine.bench
    script = ("cd /tmp && %sKVMEXIT_INSIDE_MODES='%s' KVMEXIT_INSIDE_INTERVAL=%s KVMEXIT_INSIDE_DURATION=%s "
              "exec python3 %s %s\n" % (env, " ".join(machine.modes), machine.interval, machine.duration,
                                        INSIDE, " ".join(scenarios)))
    log("%s: booting %s under %s" % (machine.name, kernel.release, machine.emulator))
    userspace = ()
    if machine.emulator == "qemu":
        b = boot.qemu(kernel, script, workdir, machine.timeout)
    elif machine.emulator == "qemu-arm64":
        root, userspace = userland.arm64_root(log)
        b = boot.qemu_arm64(kernel, script, workdir, root, machine.timeout, nvhe=machine.nvhe)
    else:
        root = image.root_image(BOCHS_PATHS, BOCHS_PROGRAMS, workdir / "root.img",
                                files={"/kvmexit/run.sh": script}, repo=boot.REPO)
        b = boot.bochs(kernel, root, workdir, machine.timeout, cpu=machine.cpu, run="/kvmexit/run.sh")
        root.unlink()
    results = b.out / "results.json"
    if not results.exists():
        raise boot.BootError("%s: the command wrote no results (rc %d); serial log ends:\n%s"
                             % (machine.name, b.rc, "\n".join(b.serial.splitlines()[-40:])))
    log("%s: done in %.0f s" % (machine.name, b.seconds))
    return Run(machine, kernel, b, json.loads(results.read_text()), userspace)


class Matrix:
    """All machines, run in the background once; result(name) waits for one."""

    def __init__(self, names, workdir, jobs=2, log=print):
        names = [n for n in MACHINES if n in names]          # longest first
        self.log, self.workdir = log, workdir
        self.kernels, self.errors = {}, {}
        for series in dict.fromkeys(MACHINES[n].series for n in names):
            try:
                self.kernels[series] = fetch.fetch(ALL_SERIES[series], log)
            except Exception as e:                 # each machine of the series reports it
                self.errors[series] = e
        self.started = time.monotonic()
        self.pool = ThreadPoolExecutor(jobs)
        self.futures = {n: self.pool.submit(self._run, MACHINES[n]) for n in names}

    def _run(self, machine):
        if machine.series in self.errors:
            raise self.errors[machine.series]
        return run(machine, self.kernels[machine.series], self.workdir / machine.name, log=self.log)

    def result(self, name):
        return self.futures[name].result()

    def close(self):
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True)


def jobs():
    """Machines at once: $KVMEXIT_MATRIX_JOBS, else one per CPU of this host (at most 2)."""
    return int(os.environ.get("KVMEXIT_MATRIX_JOBS") or min(2, len(os.sched_getaffinity(0))))
