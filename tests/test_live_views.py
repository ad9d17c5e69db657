# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""End to end with real vCPU threads: the built-in guest (its own process)
drives kvm:kvm_pio from its vCPU threads, the real CLI counts them through
the calibration hook (--calibrate: the same counting code as kvm_exit), and
every table must be exact, equal to an independent ftrace count."""
import json
import os
import select
import signal
import struct
from pathlib import Path

import pytest

from helpers import CliTracer, Ftrace, GuestProc, assert_nothing_left, kvmexit_progs, port
from kvmexit import kernel
from kvmexit.guest import DONE_PORT, SYNC_PORT

pytestmark = [pytest.mark.bpf, pytest.mark.kvm]


def programs(nvcpus):
    """vCPU i: distinct counts on shared and own ports, then a final burst;
    starts with a sync so tracers attach while the guest is parked."""
    return ["sync,out:0x80:%d,cpuid:5,out:0x%x:%d,hlt:3,wrmsr:2,out:0x70:%d"
            % (2000 + 311 * i, 0x90 + i, 200 + 17 * i, 50 + i) for i in range(nvcpus)]


def expected(progs, tids):
    """{(tid, vcpu, port): count} after the first sync (pure, from the programs)."""
    exp = {}
    for vcpu, (tid, prog) in enumerate(zip(tids, progs)):
        for item in prog.split(",")[1:]:
            if item.startswith("out:"):
                _, port, n = item.split(":")
                k = (tid, vcpu, int(port, 0))
                exp[k] = exp.get(k, 0) + int(n)
        exp[(tid, vcpu, DONE_PORT)] = 1
    return exp


def _sorted_rows(items):
    """bcc order: count descending, ties to the higher reason code (port)."""
    return sorted(items, key=lambda kv: (-kv[1], -kv[0][-1]) + tuple(kv[0][:-1]))


def run_views(nvcpus):
    progs = programs(nvcpus)
    g = GuestProc(progs)
    exp = expected(progs, g.tids)
    pid, tids = g.pid, g.tids
    ft = Ftrace()
    try:
        tracers = {
            "all": CliTracer(),
            "pid": CliTracer("-p", pid),
            "alltids": CliTracer("-p", pid, "-a"),
            "vcpu": CliTracer("-p", pid, "-v", nvcpus - 1),
            "tid": CliTracer("-t", tids[0]),
            "tids": CliTracer("-T", "%d,%d" % (tids[-1], tids[0])),
            "duration": CliTracer("-p", pid, 3),
        }
        g.finish()
        outs = {name: t.stop(None if name == "duration" else signal.SIGINT) for name, t in tracers.items()}
        independent = ft.counts(set(tids))
    finally:
        ft.close()
    return progs, pid, tids, exp, tracers, outs, independent


HEADER = "KVM_EXIT_REASON                     COUNT"


def _table(header, rows):
    return "\n".join([header] + rows) + "\n"


def table_all(exp, pid):
    return _table("PID      TID      " + HEADER, [
        "%-8u %-8u %-35s %-8u" % (pid, k[0], port(k[1]), n)
        for k, n in _sorted_rows({(t, p): n for (t, v, p), n in exp.items()}.items())])


def table_reasons(exp, keep=lambda tid, vcpu: True):
    per_port = {}
    for (tid, vcpu, p), n in exp.items():
        if keep(tid, vcpu):
            per_port[(p,)] = per_port.get((p,), 0) + n
    return _table(HEADER, ["%-35s %-8u" % (port(k[0]), n) for k, n in _sorted_rows(per_port.items())])


def table_threads(exp, prefix, tids=None):
    return _table(prefix + HEADER, [
        "%-8u %-35s %-8u" % (k[0], port(k[1]), n) for k, n in _sorted_rows(
            {(t, p): n for (t, v, p), n in exp.items() if tids is None or t in tids}.items())])


@pytest.mark.parametrize("nvcpus", [2, 4])
def test_every_view_exact(nvcpus):
    before = kvmexit_progs()
    progs, pid, tids, exp, tracers, outs, independent = run_views(nvcpus)
    assert independent == exp            # ftrace agrees with the programs
    assert len(exp) == 4 * nvcpus and sum(exp.values()) > 2000 * nvcpus
    ctrl_c = "... Hit Ctrl-C to end."
    v = nvcpus - 1
    want = {
        "all": ("all threads" + ctrl_c, "\n" + table_all(exp, pid)),
        "pid": ("PID %d%s" % (pid, ctrl_c), "\n" + table_reasons(exp)),
        "alltids": ("PID %d and its all threads%s" % (pid, ctrl_c), "\n" + table_threads(exp, "TID      ")),
        "vcpu": ("PID %d VCPU %d%s" % (pid, v, ctrl_c), "\n" + table_reasons(exp, lambda t, vc: vc == v)),
        "tid": ("TID %d%s" % (tids[0], ctrl_c), "\n" + table_reasons(exp, lambda t, vc: t == tids[0])),
        "tids": ("TIDS ['%d', '%d']%s" % (tids[-1], tids[0], ctrl_c),
                 "\n" + table_threads(exp, "TIDS     ", {tids[0], tids[-1]})),
        "duration": ("PID %d after sleeping 3 secs." % pid, table_reasons(exp)),
    }
    for name, (context, table) in want.items():
        assert tracers[name].banner == "Display kvm exit reasons and statistics for " + context, name
        assert outs[name] == table, name
    assert_nothing_left(before)     # every tracer detached on exit


def test_bcc_man_page_examples():
    """Each EXAMPLES line of bcc's kvmexit(8), as written (ids substituted,
    --calibrate added), prints the page's description and the exact counts.
    Each filtered example traces a guest of its own, which has run to its
    end before the example's duration can have passed; the all-threads
    examples share one guest, with no other guest running."""
    import shlex
    filtered = [  # (command line, the page's description, table of (exp, pid, t0, t1))
        ("-p {pid} 5", "for PID {pid} after sleeping 5 secs", lambda e, p, t0, t1: table_reasons(e)),
        ("-p {pid} 5 -a", "for PID {pid} and its all threads after sleeping 5 secs",
         lambda e, p, t0, t1: table_threads(e, "TID      ")),
        ("-p {pid} -v 0", "for PID {pid} VCPU 0... Hit Ctrl-C to end",
         lambda e, p, t0, t1: "\n" + table_reasons(e, lambda t, v: v == 0)),
        ("-p {pid} -v 0 4", "for PID {pid} VCPU 0 after sleeping 4 secs",
         lambda e, p, t0, t1: table_reasons(e, lambda t, v: v == 0)),
        ("-t {t0} 10", "for TID {t0} after sleeping 10 secs", lambda e, p, t0, t1: table_reasons(
            e, lambda t, v: t == t0)),
        ("-T '{t1},{t0}'", "for TIDS ['{t1}', '{t0}']... Hit Ctrl-C to end",
         lambda e, p, t0, t1: "\n" + table_threads(e, "TIDS     ", {t0, t1})),
    ]
    everything = [
        ("", "for all threads... Hit Ctrl-C to end", lambda e, p, t0, t1: "\n" + table_all(e, p)),
        ("6", "for all threads after sleeping 6 secs", lambda e, p, t0, t1: table_all(e, p)),
    ]
    started = []    # (example, tracer, the table it must print)

    def run(examples):
        progs = programs(2)
        g = GuestProc(progs)
        try:
            ids = {"pid": g.pid, "t0": g.tids[0], "t1": g.tids[1]}
            for cmd, desc, table in examples:
                t = CliTracer(*shlex.split(cmd.format(**ids)))
                started.append(((cmd, desc.format(**ids)), t, table(expected(progs, g.tids), *ids.values())))
        finally:
            g.finish()
        for (cmd, desc), t, _ in started[-len(examples):]:
            assert "secs" not in desc or t.p.poll() is None, "%s ended before its guest did" % cmd
    try:
        for example in filtered:
            run([example])
        run(everything)
        for (cmd, desc), t, table in started:
            assert t.banner == "Display kvm exit reasons and statistics " + desc + ".", cmd
            assert t.stop(None if "secs" in desc else signal.SIGINT) == table, cmd
    finally:
        for _, t, _ in started:
            if t.p.poll() is None:
                t.p.kill()
                t.p.communicate()


def test_tracer_started_while_guest_runs():
    """The tracer attaches while the vCPU threads exit and move between
    CPUs: part of that burst is counted, everything after it exactly."""
    n = 150000
    progs = ["sync,out:0x82:%d,sync,out:0x81:%d,out:0x80:%d" % (n, 300 + i, 40 + i) for i in range(2)]
    g = GuestProc(progs)
    g.release()
    t = CliTracer("-p", g.pid, "-a")
    mid_burst = not select.select([g.p.stdout], [], [], 0)[0]    # the burst's end, the next sync, not said yet
    assert json.loads(g.p.stdout.readline()) == {"sync": 1}
    g.finish()
    rows = {(int(tid), name): int(n) for tid, name, n in
            (line.split() for line in t.stop().splitlines()[2:])}
    assert mid_burst
    for tid in g.tids:
        assert 0 < rows.pop((tid, port(0x82))) < n, rows
    want = {(g.tids[i], port(p)): c for i in range(2) for p, c in ((SYNC_PORT, 1), (0x81, 300 + i), (0x80, 40 + i), (DONE_PORT, 1))}
    assert rows == want


def test_sigterm_prints_counts_and_detaches():
    before = kvmexit_progs()
    g = GuestProc(["sync,out:0x80:23"], migrate=None)
    t = CliTracer("-t", g.tids[0])
    g.finish()
    assert t.stop(signal.SIGTERM) == "\n" + "\n".join([
        "KVM_EXIT_REASON                     COUNT", "%-35s %-8u" % (port(0x80), 23),
        "%-35s %-8u" % (port(DONE_PORT), 1)]) + "\n"
    assert_nothing_left(before)


def test_says_when_kvm_exit_stays_silent(monkeypatch, capsys):
    """A KVM that is not known never to emit kvm_exit, VMs present, no exit seen: say so."""
    from kvmexit import cli
    real = kernel.probe_btf

    def not_pvm():
        k = real()
        k.flavour = None
        return k
    monkeypatch.setattr(kernel, "probe_btf", not_pvm)
    g = GuestProc(["sync,out:0x80:5"], migrate=None)
    try:
        cli.main(["-p", str(g.pid), "1"])
    finally:
        g.finish()
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == HEADER
    assert ("kvmexit: note: kvm:kvm_exit never fired although 1 process(es) hold KVM vCPUs (pid %d): "
            "this host's KVM may not emit it; run 'kvmexit selftest'" % g.pid) in captured.err.splitlines()


def _perf_counters(event_id, ncpu):
    """Counting perf events on a tracepoint, one per CPU (what perf stat -e kvm:... opens)."""
    import ctypes as ct
    libc = ct.CDLL(None, use_errno=True)
    attr = bytearray(128)                                 # struct perf_event_attr
    struct.pack_into("<IIQ", attr, 0, 2, len(attr), event_id)   # PERF_TYPE_TRACEPOINT, size, config
    fds = []
    for cpu in range(ncpu):
        buf = (ct.c_char * len(attr)).from_buffer(attr)
        fd = libc.syscall(298, buf, -1, cpu, -1, 0)       # perf_event_open (x86-64)
        assert fd >= 0, os.strerror(ct.get_errno())
        fds.append(fd)
    return fds


def test_other_perf_users_still_see_the_events():
    """The classic tracepoint program returns 1: a perf counter on the same
    tracepoint counts every event while kvmexit runs (bcc's returned 0)."""
    event_id = int((Path(kernel.tracefs()) / "events/kvm/kvm_pio/id").read_text())
    fds = _perf_counters(event_id, os.cpu_count())
    try:
        g = GuestProc(["sync,out:0x80:377"], migrate=None)
        t = CliTracer("--mode", "tracepoint", "-p", g.pid)
        g.finish()
        out = t.stop()
        seen = sum(struct.unpack("<Q", os.read(fd, 8))[0] for fd in fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert "%-35s %-8u" % (port(0x80), 377) in out.splitlines()
    # the first sync out (before kvmexit attached), the outs and the final done-port out;
    # a program returning 0 would leave the counter at 1
    assert seen == 1 + 377 + 1


def test_full_map_drops_footer():
    """More (thread, reason) pairs than --max-entries: exact counts for those that fit, the rest in the footer."""
    g = GuestProc(["sync,out:0x80:10,out:0x81:20,out:0x82:30"], migrate=None)
    t = CliTracer("--max-entries", 2, "-t", g.tids[0])
    g.finish()
    assert t.stop() == "\n" + "\n".join([
        "KVM_EXIT_REASON                     COUNT",
        "%-35s %-8u" % (port(0x81), 20),
        "%-35s %-8u" % (port(0x80), 10),
        "Dropped 31 exits: the counts map (2 entries) was full; raise --max-entries"]) + "\n"
