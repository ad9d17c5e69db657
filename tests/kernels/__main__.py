# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The kernel matrix by hand (run from tests/, as root):

    python -m kernels list                      the machines
    python -m kernels run MACHINE [SCENARIO...] boot one, run inside.py's scenarios, print its results file
    python -m kernels demo [MACHINE]            make run's table of real exits (default svm-6.1)
    python -m kernels bench                     make bench-real: bench/real.py in the machines that run it
"""
import os
import sys
import tempfile
from pathlib import Path

from . import fetch, inside, matrix
from .manifest import ALL_SERIES


def _boot(name, scenarios, workdir):
    m = matrix.MACHINES[name]
    return matrix.run(m, fetch.fetch(ALL_SERIES[m.series]), workdir, scenarios)


def demo(name):
    """Where this host's KVM emits kvm_exit, the demo runs here; where it
    never does (kvm_pvm), in a machine of the matrix, said so first."""
    if not os.path.exists("/sys/module/kvm_pvm"):
        out = inside.demo()
        where = "this host"
    else:
        m = matrix.MACHINES[name]
        print("This host's KVM (kvm_pvm) never emits kvm:kvm_exit: booting %s (Debian %s kernel, %s) "
              "to show real exits" % (name, m.series, "AMD SVM in QEMU TCG" if m.vendor == "svm"
                                      else "Intel VMX in Bochs"), flush=True)
        with tempfile.TemporaryDirectory(prefix="kvmexit-demo-") as d:
            r = _boot(name, ["demo"], Path(d))
            out = r.results["demo"]
            where = "%s, kernel %s, %s" % (name, r.kernel.release, " + ".join(p.name + " " + p.version
                                                                         for p in r.kernel.packages))
    print("== kvmexit -p PID -a, the built-in guest's two vCPUs, real kvm:kvm_exit events (%s):" % where)
    print(out["stdout"], end="")
    return out["rc"]


def main(argv):
    if argv[:1] == ["list"]:
        for m in matrix.MACHINES.values():
            print("%-12s Debian %-7s %s under %s" % (m.name, m.series, m.vendor.upper(), m.emulator))
        return 0
    if argv[:1] == ["run"] and len(argv) >= 2:
        workdir = Path(tempfile.mkdtemp(prefix="kvmexit-%s-" % argv[1]))
        r = _boot(argv[1], argv[2:] or ["all"], workdir)
        print("\n".join(r.summary()))
        print(r.boot.out / "results.json")
        return 0
    if argv[:1] == ["bench"]:
        names = [n for n, m in matrix.MACHINES.items() if m.bench]
        with tempfile.TemporaryDirectory(prefix="kvmexit-bench-") as d:
            m = matrix.Matrix(names, Path(d), matrix.jobs())
            try:
                for n in names:
                    r = m.result(n)
                    print("\n".join(r.summary()), flush=True)
                    b = r.results.get("bench") or {}
                    if b.get("rc") != 0:          # failed, or the scenario raised (its "error")
                        print(b.get("stderr") or b.get("error") or "bench: no result", file=sys.stderr)
                        return 1
            finally:
                m.close()
        return 0
    if argv[:1] == ["demo"]:
        return demo(argv[1] if len(argv) > 1 else "svm-6.1")
    print(__doc__.strip(), file=sys.stderr)
    return 2


sys.exit(main(sys.argv[1:]))
