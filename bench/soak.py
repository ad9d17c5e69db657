# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit under load for a long time: make stress, make soak.

Both run the built-in guest (its vCPU threads exiting to userspace as fast
as they can, through kvm:kvm_pio: --calibrate, the counting code of
kvm_exit), an exporter scraped in a loop and a JSON interval tracer, all
the guest's life; then check against the guest's own count of its rounds.

  stress  vCPU threads moved to another CPU on every exit; the exporter
          scraped at least --scrapes times (4 scrapers at once) while a
          -i 0.05 --cumulative tracer prints.  Every series of every scrape
          and of every record is non-decreasing; the final scrape and
          record equal the guest's exits exactly.
  soak    --minutes at a high exit rate, a -i 1 tracer, the exporter
          scraped every second; RSS and open fds of both kvmexit processes
          sampled every 10 s must stay flat after a warm-up (within 1 MiB
          and 0 fds); counts exact at the end.

Prints what it measured, exits 1 on any failure.  Needs root and /dev/kvm.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from kvmexit.guest import SYNC_PORT, expected_exits, parse_program

KVMEXIT = [sys.executable, "-m", "kvmexit"]
PROGRAM = "sync,out:0x80:400,out:0x81:%d,out:0x70:3"   # sync: once per round, released by end of input


def port_name(p):
    return "PORT_0x%04x" % p


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def expected(programs, tids, rounds):
    """{(tid, reason name): exits} of a guest whose vCPU i ran rounds[i]
    rounds, but for the first sync's exit (made before the tracers attached)."""
    want = {}
    for prog, tid, n in zip(programs, tids, rounds):
        for (kind, port), c in expected_exits(parse_program(prog)).items():
            if kind == "out":
                want[(tid, port_name(port))] = want.get((tid, port_name(port)), 0) + c * n
        want[(tid, port_name(SYNC_PORT))] -= 1
    return want


def scrape(addr):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=30) as r:
        text = r.read().decode()
    return {(int(s.labels["tid"]), s.labels["reason"]): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "kvmexit_exits_total"}


def proc_usage(pid):
    """(RSS in KiB, open fds) of a process."""
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir("/proc/%d/fd" % pid))


def run(args):
    programs = [PROGRAM % (20 + i) for i in range(args.vcpus)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = "127.0.0.1:%d" % s.getsockname()[1]
    g = subprocess.Popen(KVMEXIT + ["guest", "--wait", "--seconds", str(args.seconds), "--migrate", str(args.migrate)]
                         + [a for p in programs for a in ("--program", p)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(g.stdout.readline())
    check(json.loads(g.stdout.readline()) == {"sync": 0}, "guest did not park at its first sync")
    exp = subprocess.Popen(KVMEXIT + ["exporter", "--calibrate", "--listen", addr, "--by", "thread",
                                      "-p", str(info["pid"])], stderr=subprocess.PIPE, text=True)
    check(exp.stderr.readline().startswith("kvmexit exporter: "), "exporter did not start")
    tr = subprocess.Popen(KVMEXIT + ["--calibrate", "--verbose", "-p", str(info["pid"]), "-a", "-o", "json",
                                     "-i", str(args.interval), "--cumulative"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in tr.stderr:
        if line.startswith("kvmexit: attached "):
            break
    threading.Thread(target=tr.stderr.read, daemon=True).start()
    done = threading.Event()
    counted = threading.Condition()            # a scrape done (or failed): told to the main thread
    problems, scrapes, records, usage = [], [0], [], {"exporter": [], "tracer": []}

    def scraper():
        last = {}
        while not done.is_set():
            try:
                got = scrape(addr)
            except Exception as e:         # counted as a failure below
                with counted:
                    problems.append("scrape failed: %r" % e)
                    counted.notify_all()
                return
            for k, v in got.items():
                if v < last.get(k, 0):
                    problems.append("series %s went back: %d -> %d" % (k, last[k], v))
            missing = set(last) - set(got)
            if missing:
                problems.append("series vanished: %s" % sorted(missing))
            last = got
            with counted:
                scrapes[0] += 1
                counted.notify_all()
            if args.scrape_every:
                done.wait(args.scrape_every)

    def reader():
        last = {}
        for line in tr.stdout:
            rec = json.loads(line)
            got = {(e["tid"], e["reason_name"]): e["count"] for e in rec["exits"]}
            for k, v in got.items():
                if v < last.get(k, 0):
                    problems.append("record series %s went back: %d -> %d" % (k, last[k], v))
            last = got
            records.append(rec)

    def sampler():
        while not done.wait(10):
            usage["exporter"].append(proc_usage(exp.pid))
            usage["tracer"].append(proc_usage(tr.pid))
    threads = [threading.Thread(target=scraper) for _ in range(args.scrapers)]
    threads += [threading.Thread(target=sampler)]
    rd = threading.Thread(target=reader)
    t0 = time.monotonic()
    for t in threads + [rd]:
        t.start()
    g.stdin.close()                            # end of input: every sync passes from now on
    out = json.loads(g.stdout.read().splitlines()[-1])
    g.wait()
    ran = time.monotonic() - t0
    with counted:                              # a stress run scrapes at least this often
        counted.wait_for(lambda: scrapes[0] >= args.scrapes or problems)
    done.set()
    for t in threads:
        t.join()
    final_scrape = scrape(addr)
    tr.send_signal(signal.SIGINT)
    rd.join()
    tr.wait()
    exp.send_signal(signal.SIGTERM)
    exp.wait()
    want = expected(programs, info["tids"], out["rounds"])
    exits = sum(want.values())
    print("guest: %d vCPUs, %d rounds, %d exits in %.1f s (%.0f/s), moved to another CPU every %d exits"
          % (args.vcpus, sum(out["rounds"]), exits, ran, exits / ran, args.migrate))
    print("exporter: %d scrapes by %d scrapers; tracer: %d records every %gs"
          % (scrapes[0], args.scrapers, len(records) - 1, args.interval))
    final_record = {(e["tid"], e["reason_name"]): e["count"] for e in records[-1]["exits"]}
    check(not problems, "; ".join(problems[:5]))
    check(final_scrape == want, "final scrape %s != guest %s" % (final_scrape, want))
    check(final_record == want, "final record %s != guest %s" % (final_record, want))
    check(all(r["drops"] == 0 and r["skipped"] == 0 for r in records), "drops or skipped events")
    check((exp.returncode, tr.returncode) == (0, 0), "exit status %s" % ([exp.returncode, tr.returncode],))
    print("every series of every scrape and record non-decreasing; final totals exact (%d series)" % len(want))
    for name, samples in usage.items():
        if not samples:
            continue
        warm = samples[min(len(samples) - 1, args.warmup):]
        rss = [r for r, _ in warm]
        fds = [f for _, f in warm]
        print("%s: RSS %d-%d KiB, fds %d-%d over %d samples after warm-up (first sample %d KiB, %d fds)"
              % (name, min(rss), max(rss), min(fds), max(fds), len(warm), samples[0][0], samples[0][1]))
        if args.flat:
            check(max(rss) - min(rss) <= 1024, "%s RSS grew by %d KiB" % (name, max(rss) - min(rss)))
            check(max(fds) == min(fds), "%s open fds moved: %d-%d" % (name, min(fds), max(fds)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["stress", "soak"])
    ap.add_argument("--minutes", type=float, default=10.0, help="soak: how long")
    ap.add_argument("--seconds", type=float, default=None, help="stress: how long the guest runs")
    ap.add_argument("--scrapes", type=int, default=1000, help="stress: at least this many scrapes")
    a = ap.parse_args()
    if a.what == "stress":
        args = argparse.Namespace(vcpus=4, seconds=a.seconds or 30, migrate=1, interval=0.05, scrapers=4,
                                  scrape_every=0, scrapes=a.scrapes, warmup=1, flat=False)
    else:
        args = argparse.Namespace(vcpus=2, seconds=a.seconds or a.minutes * 60, migrate=64, interval=1.0,
                                  scrapers=1, scrape_every=1.0, scrapes=0, warmup=6, flat=True)
    try:
        run(args)
    except Failed as e:
        print("FAIL: %s" % e)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
