# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What several test files share: the real CLI and the built-in guest as
processes, waited for by what they say (a banner, an "attached" line, a
sync line), an independent ftrace count, and the check that nothing stays
loaded in the kernel."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kvmexit import kernel

REPO = Path(__file__).resolve().parents[1]
KVMEXIT = [sys.executable, "-m", "kvmexit"]


# every process a test starts through spawn(): conftest ends those still
# running when the test is over, passed or failed
SPAWNED = []


def spawn(argv, **kw):
    """subprocess.Popen, text pipes as asked, ended after the test whatever happens."""
    p = subprocess.Popen([str(a) for a in argv], text=True, **kw)
    SPAWNED.append(p)
    return p


def reap():
    """End what the test left running (SIGKILL: nothing of kvmexit survives it) and close its pipes."""
    while SPAWNED:
        p = SPAWNED.pop()
        if p.poll() is None:
            p.kill()
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None and not f.closed:
                f.close()
        p.wait()


def run_kvmexit(*args, timeout=60, **kw):
    """Run the real CLI in a subprocess; return CompletedProcess (text)."""
    return subprocess.run(KVMEXIT + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def kvmexit_progs():
    """ids of kvmexit's programs loaded in the kernel (a link holds its
    program, so none left means nothing left attached).  bpftool's own
    pid-iterator program comes and goes, hence the name filter."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out or "[]") if p.get("name", "").startswith(("handle_kvm", "detail_kvm"))}


MAPS = {"cache", "gens", "counts", "pending", "lat_stats", "details", "kvm_exit.rodata"}


def kvmexit_maps():
    """ids of the maps of kvmexit's objects loaded in the kernel."""
    out = subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True, check=True).stdout
    return {m["id"] for m in json.loads(out or "[]") if m.get("name") in MAPS}


def assert_nothing_left(before, timeout=3.0, listing=kvmexit_progs):
    """No kvmexit program (or map, with listing=kvmexit_maps) beyond those
    loaded before: the kernel frees a closed one after an RCU grace period
    (a map in a work item after that), so allow it a moment: polled."""
    deadline = time.monotonic() + timeout
    while listing() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listing() - before == set()


class GuestProc:
    """`kvmexit guest --wait`, parked at its first sync step."""

    def __init__(self, progs, migrate=7, extra=()):
        args = KVMEXIT + ["guest", "--wait"] + (["--migrate", str(migrate)] if migrate else [])
        for p in progs:
            args += ["--program", p]
        self.p = spawn(list(args) + list(extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        info = json.loads(self.p.stdout.readline())
        self.pid, self.tids = info["pid"], info["tids"]
        assert json.loads(self.p.stdout.readline()) == {"sync": 0}

    def release(self):
        self.p.stdin.write("\n")
        self.p.stdin.flush()

    def finish(self):
        self.release()
        self.done()

    def done(self):
        """Wait for the end of a guest released past its last sync."""
        done = {}
        while "done" not in done:                 # {"sync": n} lines come first
            done = json.loads(self.p.stdout.readline())
        self.p.stdin.close()
        assert self.p.wait(30) == 0
        assert done["done"]
        self.p.stdout.close()


class CliTracer:
    """The real CLI in the background; started means attached (banner printed)."""

    def __init__(self, *args):
        self.p = spawn(KVMEXIT + ["--calibrate"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.banner = self.p.stdout.readline().rstrip("\n")
        assert self.banner.startswith("Display kvm exit reasons"), self.p.stderr.read()

    def stop(self, signum=signal.SIGINT):
        if signum:
            self.p.send_signal(signum)
        out, err = self.p.communicate(timeout=60)
        assert self.p.returncode == 0, err
        assert "Traceback" not in err
        return out


class Ftrace:
    """An independent count: kvm_pio records in a private tracefs instance."""

    def __init__(self):
        self.dir = Path(kernel.tracefs()) / "instances" / ("kvmexit-test-%d" % os.getpid())
        self.dir.mkdir()
        (self.dir / "buffer_size_kb").write_text("16384")
        (self.dir / "events/kvm/kvm_pio/enable").write_text("1")

    def counts(self, pid_tids):
        (self.dir / "tracing_on").write_text("0")
        got = {}
        for line in (self.dir / "trace").read_text().splitlines():
            m = re.match(r".*-(\d+)\s+\[\d+\].*kvm_pio: pio_\w+ at 0x([0-9a-f]+) size \d+ count \d+ val 0x([0-9a-f]+)",
                         line)
            if m and int(m.group(1)) in pid_tids:
                k = (int(m.group(1)), int(m.group(3), 16), int(m.group(2), 16))
                got[k] = got.get(k, 0) + 1
        return got

    def close(self):
        (self.dir / "events/kvm/kvm_pio/enable").write_text("0")
        self.dir.rmdir()


def started(p):
    """Wait for --verbose's "attached" line: the tracer counts from now."""
    for line in p.stderr:
        if line.startswith("kvmexit: attached "):
            p.attached = line.rstrip("\n")
            return p
    raise AssertionError("tracer did not attach")


def stop_all(tracers):
    """SIGINT to each tracer of {name: process}; {name: its stdout}, each exited 0."""
    outs = {}
    for name, p in tracers.items():
        p.send_signal(signal.SIGINT)
        outs[name] = p.communicate(timeout=30)[0]
        assert p.returncode == 0, name
    return outs


def calibrated(*args):
    return started(spawn(KVMEXIT + ["--calibrate", "--verbose"] + list(args), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE))


def scrape(addr):
    """One scrape of an exporter at "HOST:PORT": {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=30) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DASHBOARD = REPO / "contrib" / "grafana-kvmexit.json"


def dashboard_metrics():
    """Every metric name the Grafana dashboard's queries and variables use."""
    d = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in d["templating"]["list"] if "definition" in v]
    return set(re.findall(r"\bkvmexit_[a-z_]+", " ".join(exprs)))


def port(p):
    return "PORT_0x%04x" % p
