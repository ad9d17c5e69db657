# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit top: its model and screen (pure), then the real command in a
real terminal (tmux: send-keys types, capture-pane reads the screen) over
the built-in guest released at a known pace."""
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import KVMEXIT, GuestProc, assert_nothing_left, kvmexit_progs, spawn
from kvmexit import top
from kvmexit.counts import CounterKey as K


class FakeNames:
    def vm(self, pid):
        return {1: "web", 2: "db"}[pid]

    def comm(self, pid, tid):
        return "CPU %d/KVM" % (tid % 10)


RATES = {K(1, 10, 30, 0, 1, 0): 500.0, K(1, 11, 30, 1, 1, 0): 100.0, K(1, 11, 12, 1, 1, 0): 50.0,
         K(2, 20, 48, 0, 1, 0): 700.0}
TOTALS = {K(1, 10, 30, 0, 1, 0): 5000, K(1, 11, 30, 1, 1, 0): 1000, K(1, 11, 12, 1, 1, 0): 9000,
          K(2, 20, 48, 0, 1, 0): 7000}


def _lines(state):
    return [("  " * l.depth + l.label, l.rate, l.total) for l in top.model(RATES, TOTALS, state, FakeNames())]


def test_model_groups_sorts_expands_and_filters():
    s = top.State()
    assert _lines(s) == [("2 db", 700.0, 7000), ("  EPT_VIOLATION", 700.0, 7000),
                         ("1 web", 650.0, 15000), ("  IO_INSTRUCTION", 600.0, 6000), ("  HLT", 50.0, 9000)]
    assert _lines(top.press(s, "s")) == [("1 web", 650.0, 15000), ("  HLT", 50.0, 9000),
                                        ("  IO_INSTRUCTION", 600.0, 6000), ("2 db", 700.0, 7000),
                                        ("  EPT_VIOLATION", 700.0, 7000)]
    s = top.press(s, "g")
    assert s.group == "thread"
    assert _lines(s) == [("2 db", 700.0, 7000), ("  20 CPU 0/KVM vcpu 0", 700.0, 7000),
                         ("    EPT_VIOLATION", 700.0, 7000),
                         ("1 web", 650.0, 15000), ("  10 CPU 0/KVM vcpu 0", 500.0, 5000),
                         ("    IO_INSTRUCTION", 500.0, 5000), ("  11 CPU 1/KVM vcpu 1", 150.0, 10000),
                         ("    IO_INSTRUCTION", 100.0, 1000), ("    HLT", 50.0, 9000)]
    s = top.press(s, "g")
    assert _lines(s) == [("EPT_VIOLATION", 700.0, 7000), ("  2 db", 700.0, 7000),
                         ("IO_INSTRUCTION", 600.0, 6000), ("  1 web", 600.0, 6000),
                         ("HLT", 50.0, 9000), ("  1 web", 50.0, 9000)]
    assert _lines(top.press(top.press(s, "e"), "s")) == [("HLT", 50.0, 9000), ("EPT_VIOLATION", 700.0, 7000),
                                                        ("IO_INSTRUCTION", 600.0, 6000)]
    assert top.press(top.press(s, "g"), "p") == top.State(paused=True)
    # the filter: a PID or part of a VM name, never a reason's name
    assert [l[0] for l in _lines(top.State(filter="WE"))] == ["1 web", "  IO_INSTRUCTION", "  HLT"]
    assert [l[0] for l in _lines(top.State(filter="2"))] == ["2 db", "  EPT_VIOLATION"]
    assert _lines(top.State(filter="HLT")) == []
    # x: a hint under the VM's reason it is about, in every grouping
    why = {("1 web", "HLT"): "the vCPU had nothing to run"}
    lines = top.model(RATES, TOTALS, top.State(explain=True), FakeNames(), why)
    assert [("  " * l.depth + l.label, l.rate) for l in lines][2:] == [
        ("1 web", 650.0), ("  IO_INSTRUCTION", 600.0), ("  HLT", 50.0), ("    why: the vCPU had nothing to run", None)]
    lines = top.model(RATES, TOTALS, top.State(group="reason", explain=True), FakeNames(), why)
    assert ("    why: the vCPU had nothing to run", None) in [("  " * l.depth + l.label, l.rate) for l in lines]
    assert top.model(RATES, TOTALS, top.State(), FakeNames(), why) == top.model(RATES, TOTALS, top.State(), FakeNames())


def test_screen_fits_80x24():
    rates = {K(1, 10, r, 0, 1, 0): float(r) for r in range(40)}
    lines = top.model(rates, {k: 10 for k in rates}, top.State(), FakeNames())
    text = top.screen(lines, top.State(), 80, 24, "kvmexit top  12:00:00  tp_btf  every 1s  780.0 exits/s",
                      "not counted: 3 (map full), 0 (skipped)")
    assert len(text) == 24 and max(map(len, text)) <= 80
    assert text[:4] == [
        "kvmexit top  12:00:00  tp_btf  every 1s  780.0 exits/s",
        "q:quit p:pause r:reset g:group(vm) s:sort(rate) e:expand f:filter x:explain",
        "VM / THREAD / REASON                                        EXITS/s        TOTAL",
        "1 web                                                         780.0          400"]
    assert text[4] == "  " + "%-52s %12.1f %12d" % ("MONITOR_INSTRUCTION", 39.0, 10)    # VMX reason 39
    assert text[-2:] == ["... 22 more rows (e collapses, f filters)", "not counted: 3 (map full), 0 (skipped)"]


# -- the real command in tmux ------------------------------------------------
PHASE = {0x80: 400, 0x70: 200}      # outs per phase of vCPU 0 and vCPU 1
PHASES = 60
PACE = 0.1                           # seconds between released phases
INTERVAL = 1.0


class Pane:
    """kvmexit top in a detached 80x24 tmux session.  What the pane draws
    comes through a FIFO (tmux pipe-pane) and wakes each wait; the exit
    status comes through another: no polling."""

    def __init__(self, args, tmp):
        self.name = "kvmexit-top-%d" % os.getpid()
        self.screen_fifo, self.status_fifo, self.err = tmp / "screen", tmp / "status", tmp / "err"
        fds = []
        for fifo in (self.screen_fifo, self.status_fifo):
            os.mkfifo(fifo)
            # read-write: a writer always exists, so select() waits for data, never sees EOF
            fds.append(os.open(fifo, os.O_RDWR | os.O_NONBLOCK))
        self.screen_fd, self.status_fd = fds
        cmd = " ".join(KVMEXIT + ["top", "--calibrate", "-i", str(INTERVAL)] + [str(a) for a in args])
        subprocess.run(["tmux", "new-session", "-d", "-x", "80", "-y", "24", "-s", self.name,
                        "%s 2>%s; echo $? > %s" % (cmd, self.err, self.status_fifo)], check=True)
        subprocess.run(["tmux", "pipe-pane", "-t", self.name, "cat > %s" % self.screen_fifo], check=True)

    def text(self):
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def keys(self, *keys):
        subprocess.run(["tmux", "send-keys", "-t", self.name] + list(keys), check=True)

    def wait(self, pred, timeout=30, what="screen"):
        """The first screen for which pred holds, looked at again whenever the pane draws."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.text()
            if pred(t):
                return t
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.screen_fd], [], [], left)[0]:
                raise AssertionError("no %s within %ds; the screen:\n%s" % (what, timeout, self.text()))
            while True:                              # drain what it drew
                try:
                    if not os.read(self.screen_fd, 65536):
                        break
                except BlockingIOError:
                    break

    def exit_status(self, timeout=30):
        """(exit status, standard error) of top, once the shell has written the status."""
        if not select.select([self.status_fd], [], [], timeout)[0]:
            raise AssertionError("top did not exit; the screen:\n%s" % self.text())
        return int(os.read(self.status_fd, 64)), self.err.read_text()

    def top_pid(self):
        """top's process: the pane's shell's child."""
        shell = subprocess.run(["tmux", "display-message", "-p", "-t", self.name, "#{pane_pid}"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return int(Path("/proc/%s/task/%s/children" % (shell, shell)).read_text().split()[0])

    def close(self):
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
        os.close(self.screen_fd)
        os.close(self.status_fd)


def _rows(text):
    """{label: (rate, total)} of the screen's rows, labels without indent."""
    out = {}
    for line in text.splitlines()[3:]:
        m = re.match(r"\s*(\S.*?)\s+([\d.]+)\s+(\d+)$", line)
        if m:
            out[m.group(1)] = (float(m.group(2)), int(m.group(3)))
    return out


def _clock(text):
    return text.split("  ")[1] if text.startswith("kvmexit top") else None


@pytest.fixture
def guest():
    progs = ["sync," + ",".join(["out:0x%x:%d" % (port, n)] * PHASES).replace(",", ",sync,")
             for port, n in PHASE.items()]
    g = GuestProc(progs, migrate=None)
    yield g
    if g.p.poll() is None:
        g.p.kill()


@pytest.fixture
def pane(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux not found: apt-get install tmux (make test installs it)")
    made = []

    def start(*args):
        made.append(Pane(args, tmp_path))
        return made[-1]
    yield start
    for p in made:
        p.close()


@pytest.mark.bpf
@pytest.mark.kvm
def test_live_view_rates_totals_and_keys(guest, pane):
    before = kvmexit_progs()
    p = pane("-p", guest.pid)
    first = p.wait(lambda t: t.startswith("kvmexit top") and "VM / THREAD / REASON" in t, what="attached top")
    vm = "%d -" % guest.pid
    released = 0

    def release(n):
        """n phases, one per PACE seconds (the workload's pace), each waited for."""
        nonlocal released
        t0 = time.monotonic()
        for i in range(n):
            # the workload's pace (what the rates are measured against), not a wait for anything
            time.sleep(max(0.0, t0 + i * PACE - time.monotonic()))
            guest.release()
        for i in range(n):      # the guest says so when every vCPU is at the phase's sync
            assert json.loads(guest.p.stdout.readline()) == {"sync": released + i + 1}
        released += n
    # a steady pace for 5 s: a refresh 2 s into it shows each port's rate within one phase per interval
    pacer = threading.Thread(target=release, args=(int(5 / PACE),))
    pacer.start()
    try:
        t = p.wait(lambda t: _clock(t) != _clock(first), what="a refresh")
        steady = p.wait(lambda s: _clock(s) != _clock(t), what="a second refresh")
    finally:
        pacer.join()
    for port, n in PHASE.items():
        rate, _ = _rows(steady)["PORT_0x%04x" % port]
        assert n / PACE - n / INTERVAL <= rate <= n / PACE + n / INTERVAL, (port, rate, steady)
    # totals: exact once the released phases are in
    done = p.wait(lambda t: _rows(t).get("PORT_0x0080", (0, 0))[1] == PHASE[0x80] * released, what="totals")
    rows = _rows(done)
    assert rows["PORT_0x0070"][1] == PHASE[0x70] * released
    assert rows["PORT_0x00f5"][1] == 2 * released       # each phase's sync, both vCPUs
    assert rows[vm][1] == sum(PHASE.values()) * released + 2 * released
    # g: VM > vCPU thread > reason
    p.keys("g")
    t = p.wait(lambda t: "g:group(thread)" in t)
    assert "%d CPU 0/KVM vcpu 0" % guest.tids[0] in _rows(t) and "%d CPU 1/KVM vcpu 1" % guest.tids[1] in _rows(t)
    # g: reason > VM; s: by name; e: collapsed
    p.keys("g")
    p.wait(lambda t: "g:group(reason)" in t)
    p.keys("s", "s", "e")
    t = p.wait(lambda t: "s:sort(name)" in t and vm not in t)
    assert [l.split()[0] for l in t.splitlines()[3:] if l.strip()] == ["PORT_0x0070", "PORT_0x0080", "PORT_0x00f5"]
    p.keys("e", "g", "s")
    p.wait(lambda t: "g:group(vm)" in t and "s:sort(rate)" in t and vm in t)
    # p: frozen while the guest runs on; p again: moving
    p.keys("p")
    paused = p.wait(lambda t: "[PAUSED]" in t)
    release(3)
    later = p.wait(lambda t: _clock(t) != _clock(paused) and "[PAUSED]" in t, what="a paused refresh")
    assert _rows(later)["PORT_0x0080"][1] == _rows(paused)["PORT_0x0080"][1]
    p.keys("p")
    p.wait(lambda t: "[PAUSED]" not in t and _rows(t).get("PORT_0x0080", (0, 0))[1] == PHASE[0x80] * released)
    # r: totals from zero
    p.keys("r")
    p.wait(lambda t: vm not in _rows(t))
    release(2)
    t = p.wait(lambda t: _rows(t).get("PORT_0x0080", (0, 0))[1] == PHASE[0x80] * 2, what="totals after reset")
    # x: --explain's hint under the port it is about (here the calibration hook's rows are port writes)
    p.keys("x")
    t = p.wait(lambda t: "why: the guest writes port 0x0080 (POST/delay)" in t)
    lines = t.splitlines()
    assert lines[lines.index(next(l for l in lines if "why: the guest writes port 0x0080" in l)) - 1].strip().startswith(
        "PORT_0x0080")
    p.keys("x")
    p.wait(lambda t: "why:" not in t)
    # f: a filter matching no VM, then the VM's PID
    p.keys("f", "nosuchvm", "Enter")
    p.wait(lambda t: "filter 'nosuchvm'" in t and vm not in t)
    p.keys("f", str(guest.pid), "Enter")
    p.wait(lambda t: "filter '%d'" % guest.pid in t and vm in t)
    # q: ends it, status 0, nothing left loaded
    p.keys("q")
    assert p.exit_status() == (0, "")
    assert_nothing_left(before)
    while released < PHASES - 1:
        release(1)
    guest.finish()


@pytest.mark.bpf
@pytest.mark.parametrize("how", ["ctrl-c", "terminal closed"])
def test_live_view_ends_cleanly(pane, how):
    before = kvmexit_progs()
    p = pane()
    p.wait(lambda t: t.startswith("kvmexit top") and "VM / THREAD / REASON" in t, what="attached top")
    assert kvmexit_progs() - before
    if how == "ctrl-c":
        p.keys("C-c")
        assert p.exit_status() == (0, "")
    else:
        pidfd = os.pidfd_open(p.top_pid())          # readable once the process has ended
        try:
            subprocess.run(["tmux", "kill-session", "-t", p.name], check=True)
            assert select.select([pidfd], [], [], 30)[0], "top outlived its terminal"
        finally:
            os.close(pidfd)
    assert_nothing_left(before)


def test_top_needs_a_terminal():
    r = spawn(KVMEXIT + ["top", "--calibrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = r.communicate(timeout=30)
    assert (r.returncode, out, err) == (2, "", "kvmexit top: error: top needs a terminal; for a log use "
                                                "kvmexit -i SECONDS (see 'kvmexit top -h')\n")
