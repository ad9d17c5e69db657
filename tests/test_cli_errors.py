# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Every bad input: one line naming the problem and the fix, exit 2 for
usage and 1 for runtime errors, never a traceback, nothing left attached."""
import os
import shutil
import subprocess

import pytest

from helpers import KVMEXIT, assert_nothing_left, kvmexit_progs, run_kvmexit
from kvmexit import _libbpf, cli, kernel

MISSING = 4194304 + 17  # above pid_max's maximum: never a live process


def _one_line_error(r, code, *needles):
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""
    return lines[0]


@pytest.mark.parametrize("args,needles", [
    (["-v", "0"], ["-v and -a need -p PID"]),
    (["-a"], ["-v and -a need -p PID"]),
    (["-p", "1", "-v", "0", "-a"], ["exclude each other"]),
    (["-t", "1", "-T", "1,2"], ["-t and -T exclude each other"]),
    (["-p", "1", "-t", "1", "-a"], ["-t/-T exclude -v and -a"]),
    (["-T", "1, 2"], ["' 2' is not a thread id"]),
    (["-T", "a,b"], ["'a' is not a thread id"]),
    (["-T", ""], ["'' is not a thread id"]),
    (["-p", "abc"], ["'abc' is not a process id"]),
    (["-p", "0"], ["'0' is not a process id"]),
    (["-p", str(MISSING)], ["no process with id %d" % MISSING]),
    (["-t", str(MISSING)], ["no thread with id %d" % MISSING]),
    (["-v", "-1", "-p", "1"], ["Invalid value for '-v' / '--vcpu': -1 is not in the range x>=0."]),
    (["abc"], ["'abc' is not a valid integer"]),
    (["-1"], ["negative duration -1: give the seconds to trace as a positive number"]),
    (["5", "-3"], ["negative duration -3"]),
    (["--mode", "fast"], ["'fast' is not one of"]),
    (["--max-entries", "0"], ["Invalid value for '--max-entries': 0 is not in the range 1<=x<=16777216."]),
])
def test_usage_errors(args, needles):
    line = _one_line_error(run_kvmexit(*args), 2, *needles)
    assert line.startswith("kvmexit: error: ") and line.endswith("(see 'kvmexit -h')")


def test_vcpu_of_a_process_that_is_no_vm():
    with subprocess.Popen(["sleep", "30"]) as p:
        try:
            r = run_kvmexit("-p", p.pid, "-v", "0")
        finally:
            p.kill()
    _one_line_error(r, 2, "PID %d has no vCPU 0 (it holds no KVM vCPU)" % p.pid)


@pytest.mark.parametrize("bounding,missing", [("-all", "CAP_BPF and CAP_PERFMON are missing; run it with sudo or "
                                                        "grant them"),
                                              ("-all,+bpf", "CAP_PERFMON is missing; run it with sudo or grant it"),
                                              ("-all,+perfmon,+dac_override", "CAP_BPF is missing; run it with sudo "
                                                                              "or grant it")])
def test_without_the_capabilities(bounding, missing):
    """uid 0 whose bounding set lacks CAP_SYS_ADMIN and one of CAP_BPF and
    CAP_PERFMON (exec then grants no more): the same user, so the checkout
    reads as before wherever it is, and only the capabilities differ."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to drop capabilities")
    before = kvmexit_progs()
    r = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=" + bounding, "--"] + KVMEXIT + ["1"],
                       capture_output=True, text=True, timeout=30)
    _one_line_error(r, 1, "kvmexit needs CAP_BPF (loading its BPF programs and maps) and CAP_PERFMON (attaching "
                          "them to tracepoints), or root: " + missing)
    assert_nothing_left(before)


def _runtime_error(monkeypatch, capsys):
    """Run `kvmexit 1` in-process as root would; return its stderr (exit status 1 asserted)."""
    monkeypatch.setattr(cli, "_caps_ok", lambda: True)
    with pytest.raises(SystemExit) as e:
        cli.main(["1"])
    assert e.value.code == 1
    return capsys.readouterr().err


def test_libbpf_missing(monkeypatch, capsys):
    monkeypatch.setattr(_libbpf, "_lib", None)
    monkeypatch.setattr(_libbpf, "SONAMES", ("libbpf-absent.so.9",))
    err = _runtime_error(monkeypatch, capsys).splitlines()
    assert len(err) == 1 and err[0].startswith("kvmexit: libbpf not found (")
    assert err[0].endswith("install it: apt-get install libbpf1")


def test_kvm_not_loaded(monkeypatch, tmp_path, capsys):
    (tmp_path / "events" / "sched").mkdir(parents=True)
    monkeypatch.setattr(kernel, "TRACEFS_DIRS", (str(tmp_path),))
    assert _runtime_error(monkeypatch, capsys) == ("kvmexit: tracepoint kvm:kvm_exit not found: the kvm module "
                                                   "is not loaded (modprobe kvm_intel or kvm_amd)\n")


def test_help_and_version():
    r = run_kvmexit("-h")
    assert r.returncode == 0 and r.stdout.startswith("Usage: kvmexit [OPTIONS] [DURATION]")
    for opt in ("-p, --pid PID", "-t, --tid TID", "-T, --tids TIDS", "-v, --vcpu VCPU", "-a, --alltids",
                "--mode", "--max-entries", "--verbose", "--version", "EXAMPLES:"):
        assert opt in r.stdout
    r = run_kvmexit("--version")
    assert (r.returncode, r.stdout) == (0, "kvmexit, version %s\n" % __import__("kvmexit").__version__)


def test_libbpf_too_old(monkeypatch, capsys):
    class Old:  # a libbpf before 0.5: no btf__load_vmlinux_btf
        pass
    monkeypatch.setattr(_libbpf, "_lib", None)
    monkeypatch.setattr(_libbpf.ct, "CDLL", lambda *a, **k: Old())
    assert _runtime_error(monkeypatch, capsys) == ("kvmexit: libbpf older than 0.5 (libbpf.so.1); "
                                                   "install libbpf 0.5 or newer\n")


@pytest.mark.bpf
@pytest.mark.parametrize("path,why", [
    ("/nonexistent/kvmexit/x.prom", "/nonexistent/kvmexit is not a directory"),
    ("/sys/kvmexit.prom", "Permission denied"),     # found when the first textfile is written
])
def test_exporter_textfile_that_cannot_be_written(path, why):
    pytest.importorskip("prometheus_client")
    before = kvmexit_progs()
    line = _one_line_error(run_kvmexit("exporter", "--textfile", path), 1)
    assert line == ("kvmexit exporter: cannot write the textfile %s: %s; give --textfile a path in a writable "
                    "directory" % (path, why))
    assert_nothing_left(before)
