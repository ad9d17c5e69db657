# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Faults: kvmexit killed at each step of its start-up, tracefs unmounted
before it starts, the traced VM killed mid-run, an exporter fed bad and
slow HTTP requests while it is scraped."""
import json
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from helpers import (KVMEXIT, GuestProc, assert_nothing_left, calibrated, free_port, kvmexit_maps, kvmexit_progs, port,
                     scrape, spawn, started)
from kvmexit.guest import DONE_PORT, SYNC_PORT

pytestmark = [pytest.mark.bpf]
def _bpf_calls(args):
    """How many bpf() calls `kvmexit ARGS` makes, start to end."""
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=bpf", "-o", "/dev/stdout"] + KVMEXIT + args,
                       capture_output=True, text=True, timeout=120)
    assert "attached" in r.stderr, r.stderr
    return sum(1 for line in r.stdout.splitlines() if "bpf(BPF_" in line)


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not found: apt-get install strace")
@pytest.mark.parametrize("mode", ["auto", "tracepoint"])
def test_sigkill_at_each_step_of_start_up_leaves_nothing(mode):
    """SIGKILL on entry to each bpf() call of a start-up (feature probes, BTF,
    maps, rodata, programs, links, the first read): the kernel frees what the
    process held, nothing is pinned, nothing stays loaded or attached."""
    args = ["--verbose", "--latency", "--mode", mode, "0"]
    calls = _bpf_calls(args)
    assert calls > 20
    progs, maps = kvmexit_progs(), kvmexit_maps()
    for n in range(1, calls + 1):
        r = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=bpf",
                            "-e", "inject=bpf:signal=SIGKILL:when=%d" % n] + KVMEXIT + args,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == -signal.SIGKILL, (n, r.returncode, r.stderr[-500:])
        assert_nothing_left(progs)
        assert_nothing_left(maps, listing=kvmexit_maps)


@pytest.mark.kvm
@pytest.mark.parametrize("mode", ["auto", "tracepoint"])
def test_tracefs_unmounted_before_start(mode):
    """In a mount namespace without tracefs, kvmexit mounts it and counts exactly."""
    before = kvmexit_progs()
    g = GuestProc(["sync,out:0x80:%d" % (300 + i) for i in range(2)])
    cmd = " ".join(KVMEXIT + ["--calibrate", "--verbose", "--mode", mode, "-p", str(g.pid)])
    p = started(spawn(["unshare", "-m", "sh", "-c", "umount /sys/kernel/tracing && exec " + cmd],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    g.finish()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.splitlines()[3:] == ["%-35s %-8u" % (port(0x80), 601), "%-35s %-8u" % (port(DONE_PORT), 2)]
    assert_nothing_left(before)


@pytest.mark.kvm
def test_vm_killed_mid_run():
    """The traced VM dies mid-burst: the intervals go on, its counts stay
    what it did, under the name it had."""
    n = 200000
    g = GuestProc(["sync,out:0x80:%d" % n for _ in range(2)], extra=["-name", "guest=doomed"])
    js = calibrated("-p", g.pid, "-a", "--wide", "-o", "json", "-i", "0.2", "--cumulative")
    g.release()
    records = [json.loads(js.stdout.readline())]
    while not records[-1]["exits"]:                     # counting has begun
        records.append(json.loads(js.stdout.readline()))
    assert {e["vm"] for e in records[-1]["exits"]} == {"doomed"}
    g.p.kill()
    g.p.wait()
    g.p.stdin.close()
    g.p.stdout.close()
    after = [json.loads(js.stdout.readline()) for _ in range(3)]
    js.send_signal(signal.SIGINT)
    rest, err = js.communicate(timeout=30)
    assert js.returncode == 0 and "Traceback" not in err, err
    assert rest == ""              # --cumulative: no partial interval, nothing moved since
    counts = [{e["tid"]: e["count"] for e in r["exits"]} for r in after]
    # the VM counts no more: the last records are the same, each thread short of its burst
    assert counts[-1] == counts[-2] and set(counts[-1]) == set(g.tids)
    assert all(0 < c < n for c in counts[-1].values())
    assert {e["vm"] for e in after[-1]["exits"]} == {"doomed"}


def _raw(addr, data, close_write=False):
    """One request as raw bytes; the answer's first bytes (b"" if the server hung up)."""
    with socket.create_connection(addr, timeout=30) as s:
        try:
            s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
            return s.recv(65536)
        except ConnectionResetError:
            return b""


def _scrape_exits(addr):
    return {labels: v for (name, labels), v in scrape(addr).items() if name == "kvmexit_exits_total"}


@pytest.mark.kvm
def test_exporter_under_bad_slow_and_concurrent_requests():
    """500 malformed, slow and half-closed requests (20 slow ones held open
    all along), with 4 scrapers at once among them: every scrape parses and
    holds the right counts."""
    pytest.importorskip("prometheus_client")
    g = GuestProc(["sync,out:0x80:%d,out:0x71:%d,sync" % (500 + i, 40 + i) for i in range(2)])
    addr = ("127.0.0.1", free_port())
    exp = spawn(KVMEXIT + ["exporter", "--calibrate", "--listen", "%s:%d" % addr, "--by", "thread", "-p", g.pid],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert exp.stderr.readline().startswith("kvmexit exporter: ")
        g.release()
        assert json.loads(g.p.stdout.readline()) == {"sync": 1}
        want = _scrape_exits("%s:%d" % addr)
        assert {(dict(k)["tid"], dict(k)["reason"]): v for k, v in want.items()} == {
            (str(tid), port(p)): n for i, tid in enumerate(g.tids) for p, n in ((0x80, 500 + i), (0x71, 40 + i),
                                                                                (SYNC_PORT, 1))}
        # whole but malformed requests, answered; partial ones, half-closed (the server reads to EOF)
        whole = [b"GARBAGE\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                 b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", b"GET /metrics HTTP/9.9\r\n\r\n"]
        partial = [b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b"\x00\xff" * 300, b"GET"]
        slow = []                                        # connections left open, half a request sent
        for _ in range(20):
            c = socket.create_connection(addr, timeout=10)
            c.sendall(b"GET /metrics HTTP/1.1\r\n")
            slow.append(c)
        scrapes, errors = [], []

        def scraper():
            for _ in range(10):
                try:
                    scrapes.append(_scrape_exits("%s:%d" % addr))
                except Exception as e:              # reported below
                    errors.append(e)
        threads = [threading.Thread(target=scraper) for _ in range(4)]
        for t in threads:
            t.start()
        answers = {}
        for i in range(480):
            if i % 2:
                _raw(addr, partial[i % len(partial)], close_write=True)
            else:
                answers.setdefault(i // 2 % len(whole), set()).add(_raw(addr, whole[i // 2 % len(whole)])[:400])
        for t in threads:
            t.join()
        for c in slow:
            c.close()
        # each malformed request answered with its error (a request with no version: no status line)
        for i, code in ((0, 400), (1, 414), (2, 405), (3, 505)):
            assert all(a.startswith(b"HTTP/1.0 %d " % code) or b"<p>Error code: %d</p>" % code in a
                       for a in answers[i]), (i, answers[i])
        assert errors == [] and len(scrapes) == 40
        assert all(s == want for s in scrapes)
        assert _scrape_exits("%s:%d" % addr) == want and exp.poll() is None
    finally:
        exp.send_signal(signal.SIGTERM)
        exp.communicate(timeout=30)
        g.finish()
    assert exp.returncode == 0
