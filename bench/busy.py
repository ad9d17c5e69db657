# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Run a command again and again while every CPU is kept busy by another
process: a suite that passes only on an idle machine fails here.

    python3 bench/busy.py --runs 10 -- make test-quick

One spinning process per CPU (the CPUs this process may run on) for the
whole run; prints each run's exit status and time, then the count of
failures; exits 1 if any run failed.
"""
import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def spin():
    while True:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command")
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("give the command after --")
    ncpu = len(os.sched_getaffinity(0))
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(ncpu)]
    for p in spinners:
        p.start()
    failed = 0
    try:
        for run in range(1, a.runs + 1):
            t0 = time.monotonic()
            rc = subprocess.run(cmd).returncode
            failed += rc != 0
            print("busy: run %d/%d: exit %d in %.0f s (%d CPUs kept busy)" % (run, a.runs, rc, time.monotonic() - t0,
                                                                            ncpu), flush=True)
    finally:
        for p in spinners:
            p.terminate()
    print("busy: %d of %d runs failed" % (failed, a.runs))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
