# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Least privilege, measured: kvmexit run as a user that is not root (uid
65534, no groups) with exactly CAP_BPF and CAP_PERFMON as ambient
capabilities counts the built-in guest exactly, its --detail included;
with either removed it says in one line which is missing and what needs
it; tracefs, root-only, is what the tracepoint mode alone needs
(CAP_DAC_READ_SEARCH), and without it that mode is left out with a note.

That user cannot read a checkout under /root: it runs a world-readable
copy of the package and click, made here."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import click
import kvmexit
from helpers import REPO, GuestProc, assert_nothing_left, free_port, kvmexit_progs, scrape, spawn, started
from kernels.expect import short_of

pytestmark = [pytest.mark.bpf, pytest.mark.kvm]
NOBODY = "65534"
MINIMAL = ("bpf", "perfmon")
# the interpreter itself, not the checkout's virtualenv link to it: a checkout under /root is
# not that user's to enter
PYTHON = os.path.realpath(sys.executable)


@pytest.fixture(scope="module")
def readable_copy():
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root, to run kvmexit as another user with chosen capabilities")
    d = Path(tempfile.mkdtemp(prefix="kvmexit-unpriv-", dir="/tmp"))
    import prometheus_client
    for pkg in (kvmexit, click, prometheus_client):
        src = Path(pkg.__file__).parent
        shutil.copytree(src, d / src.name, ignore=shutil.ignore_patterns("__pycache__"))
    for p in [d] + list(d.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield d
    shutil.rmtree(d)


def as_user(copy, caps, *args):
    """argv: kvmexit as uid 65534 with exactly caps, ambient (what a unit's AmbientCapabilities= gives)."""
    setcaps = ",".join("+" + c for c in caps) or "-all"
    return ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--no-new-privs",
            "--inh-caps", setcaps, "--ambient-caps", setcaps, "--bounding-set", "-all" + ("," + setcaps if caps else ""),
            "--", "env", "PYTHONPATH=%s" % copy, "PYTHONDONTWRITEBYTECODE=1", PYTHON, "-m", "kvmexit"] + \
        [str(a) for a in args]


def tracefs_readable_by_nobody():
    """Whether uid 65534 can read kvm_pio's format now (root-only where the
    kernel mounted tracefs itself; a tracefs mounted by hand may be open)."""
    r = subprocess.run(["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--",
                        "test", "-r", "/sys/kernel/tracing/events/kvm/kvm_pio/format"])
    return r.returncode == 0


def test_exact_counts_with_cap_bpf_and_cap_perfmon_only(readable_copy):
    g = GuestProc(["sync,out:0x80:300,rdmsr:4,hlt:2,sync", "sync,out:0x81:200,sync"])
    t = started(spawn(as_user(readable_copy, MINIMAL, "--calibrate", "--verbose", "-p", g.pid, "--detail",
                              "-o", "json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    assert t.attached.startswith("kvmexit: attached tp_btf")
    g.release()
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    t.send_signal(2)
    assert t.wait(60) == 0
    # through the file objects: started() read stderr through them, and their buffers hold the rest
    out, err = t.stdout.read(), t.stderr.read()
    g.finish()
    rec = json.loads(out)
    counts = {}
    for e in rec["exits"]:
        counts[(e["tid"], e["reason_name"])] = counts.get((e["tid"], e["reason_name"]), 0) + e["count"]
    # released once: each vCPU's program from its first sync to its second, that sync's out included;
    # short only by what the kernel reported skipping (kvm_pio's programs run preemptibly)
    short_of(counts, {(g.tids[0], "PORT_0x0080"): 300, (g.tids[0], "PORT_0x00f5"): 1,
                      (g.tids[1], "PORT_0x0081"): 200, (g.tids[1], "PORT_0x00f5"): 1}, rec["skipped"])
    details = {}
    for e in rec["exits"]:
        for d in e["detail"]:
            k = (e["reason_name"], d["kind"], d["value"])
            details[k] = details.get(k, 0) + d["count"]
    short_of({k: details.get(k, 0) for k in (("PORT_0x0080", "msr", 0x1A0), ("PORT_0x0080", "userspace", 5))},
             {("PORT_0x0080", "msr", 0x1A0): 4, ("PORT_0x0080", "userspace", 5): 2},
             rec["details_skipped"] + rec["skipped"])
    assert (rec["drops"], rec["undetailed"]) == (0, 0)
    # the degraded feature is said where tracefs is root-only: the tracepoint mode left out
    note = ("kvmexit: note: tracefs (/sys/kernel/tracing) is readable by root only: the tracepoint mode needs "
            "CAP_DAC_READ_SEARCH (or root); tracepoint mode is left out")
    assert (note in err.splitlines()) == (not tracefs_readable_by_nobody()), err


@pytest.mark.parametrize("caps,missing", [(("perfmon",), "CAP_BPF is missing"), (("bpf",), "CAP_PERFMON is missing"),
                                          ((), "CAP_BPF and CAP_PERFMON are missing")])
def test_each_capability_removed_is_named(readable_copy, caps, missing):
    before = kvmexit_progs()
    r = subprocess.run(as_user(readable_copy, caps, "--calibrate", "1"), capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == [
        "kvmexit: kvmexit needs CAP_BPF (loading its BPF programs and maps) and CAP_PERFMON (attaching them to "
        "tracepoints), or root: %s; run it with sudo or grant %s" % (missing, "them" if not caps else "it")]
    assert_nothing_left(before)


def test_tracepoint_mode_names_what_it_needs(readable_copy):
    if tracefs_readable_by_nobody():
        pytest.skip("tracefs is mounted readable by all on this machine now: nothing to refuse")
    r = subprocess.run(as_user(readable_copy, MINIMAL, "--calibrate", "--mode", "tracepoint", "1"),
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == ["kvmexit: tracefs (/sys/kernel/tracing) is readable by root only: the "
                                     "tracepoint mode needs CAP_DAC_READ_SEARCH (or root)"]
    # with that capability too, it runs
    before = kvmexit_progs()
    r = subprocess.run(as_user(readable_copy, MINIMAL + ("dac_read_search",), "--calibrate", "--mode", "tracepoint",
                               "--verbose", "0"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "kvmexit: attached tracepoint (handle_kvm_pio_tp)" in r.stderr, r.stderr
    assert_nothing_left(before)


# -- the exporter's systemd unit --------------------------------------------------------
UNIT = REPO / "contrib" / "kvmexit-exporter.service"


def unit_service():
    """{key: [values]} of the unit's [Service] section."""
    out, section = {}, None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_exposure_is_low():
    """systemd's own analysis of the shipped file: 2.0 or below."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not found: apt-get install systemd (make test installs it)")
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for kvmexit-exporter.service: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_exporter_serves_under_the_units_restrictions(readable_copy):
    """The unit's user (here uid 65534), capabilities, NoNewPrivileges, UMask,
    ProtectSystem=strict, ProtectHome, PrivateTmp and MemoryDenyWriteExecute,
    applied by unshare, setpriv and prctl (tests/unitns.py) where systemd
    does not run: the exporter starts, and a scrape counts the guest exactly.
    (SystemCallFilter, RestrictAddressFamilies and the other seccomp-made
    restrictions are checked by systemd-analyze only.)"""
    svc = unit_service()
    caps = [c.lower().replace("cap_", "") for c in svc["AmbientCapabilities"][0].split()]
    assert caps == [c.lower().replace("cap_", "") for c in svc["CapabilityBoundingSet"][0].split()]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("MemoryDenyWriteExecute", "yes")):
        assert svc[key] == [value], key
    exec_start = svc["ExecStart"][0].split()
    assert exec_start[:3] == ["/usr/sbin/kvmexit", "exporter", "--listen"]
    port = free_port()
    argv = as_user("/mnt", tuple(caps), "exporter", "--listen", "127.0.0.1:%d" % port, *exec_start[4:])
    g = GuestProc(["sync,out:0x80:300,hlt:3,sync", "sync,out:0x81:200,sync"])
    cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, str(REPO / "tests/unitns.py"),
           str(readable_copy), svc["UMask"][0], "--"] + argv + ["--calibrate", "-p", str(g.pid)]
    exp = spawn(cmd, stderr=subprocess.PIPE)
    line = exp.stderr.readline()
    assert line.startswith("kvmexit exporter: tp_btf mode, http://127.0.0.1:%d/metrics" % port), \
        line + exp.stderr.read()
    g.release()
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    samples = scrape("127.0.0.1:%d" % port)
    exits = {(dict(k[1])["vcpu"], dict(k[1])["reason"]): v for k, v in samples.items()
             if k[0] == "kvmexit_exits_total"}          # --by vcpu, as ExecStart has it; the value written: the vCPU
    assert exits == {("0", "PORT_0x0080"): 300.0, ("1", "PORT_0x0081"): 200.0, ("0", "PORT_0x00f5"): 1.0,
                     ("1", "PORT_0x00f5"): 1.0}
    g.finish()
    exp.send_signal(signal.SIGTERM)
    assert exp.wait(30) == 0
