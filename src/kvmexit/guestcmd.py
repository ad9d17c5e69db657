# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit guest`: run the built-in guest as a process of its own, a known
workload for kvmexit (make run, tests, demos).

Prints one JSON line {"pid", "tids", "vcpus"} once the vCPU threads exist,
{"sync": n} once every vCPU waits at its n-th sync step (with --wait; one
input line releases them), and {"done": true, "rounds": [...]} at the end.
"""
import json
import os
import sys
import threading
import time

import click

from . import arch
from .guest import Guest, parse_program
from .selftest import migrate_every, workload


class Program(click.ParamType):
    name = "STEPS"

    def convert(self, value, param, ctx):
        try:
            return parse_program(value, arch.current().name)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--vcpus", type=click.IntRange(1, 15), default=2, show_default=True,
              help="vCPUs when no --program is given (the selftest workload)")
@click.option("--program", "programs", type=Program(), multiple=True,
              help="one vCPU's steps, e.g. 'out:0x80:1000,cpuid:23,hlt:5,sync' (x86) or "
                   "'mmio:0x10001000:1000,mrs:23,hvc:5,wfi:3,sync' (arm64); repeat per vCPU")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="run the programs again and again for this long (default: once)")
@click.option("--wait", is_flag=True,
              help="at each 'sync' step, wait for a line on standard input")
@click.option("--migrate", type=click.IntRange(min=1), default=None,
              help="move each vCPU thread to the next CPU every N userspace exits")
@click.option("--rotate", is_flag=True,
              help="with --wait: after each sync, each vCPU thread runs the next vCPU (vCPUs move between threads)")
@click.option("-name", "--name", "--id", "vm_name", default=None,
              help="a VM name, read back from the command line as QEMU's -name guest=NAME or Firecracker's --id ID")
def guest(vcpus, programs, seconds, wait, migrate, rotate, vm_name):
    """Run the built-in KVM guest (needs /dev/kvm)."""
    programs = list(programs) or workload(vcpus, arch.current().name)
    if rotate and (not wait or len({sum(st.kind == "sync" for st in p) for p in programs}) != 1):
        raise click.UsageError("--rotate needs --wait and as many sync steps in every program")
    deadline = None if seconds is None else time.monotonic() + seconds
    repeat = None if deadline is None else (lambda vcpu, rounds: time.monotonic() < deadline)
    ncpu = len(os.sched_getaffinity(0))
    affinity = migrate_every(migrate, ncpu) if migrate else None
    cond = threading.Condition()
    arrived, released = {}, [0]
    announced = threading.Event()  # the {"pid"...} line comes first

    def sync(vcpu, n):
        # the n-th sync of every vCPU: announce when all are there, wait for input line n
        announced.wait()
        with cond:
            arrived[n] = arrived.get(n, 0) + 1
            if arrived[n] == len(programs):
                click.echo(json.dumps({"sync": n}))
                sys.stdout.flush()
            cond.wait_for(lambda: released[0] > n)

    def read_stdin():
        for _ in sys.stdin:
            with cond:
                released[0] += 1
                cond.notify_all()
        with cond:  # end of input releases everything
            released[0] = 1 << 30
            cond.notify_all()
    if wait:
        threading.Thread(target=read_stdin, daemon=True).start()
    g = Guest(programs, sync=sync if wait else None, repeat=repeat, affinity=affinity, rotate=rotate)
    try:
        g.start()
        click.echo(json.dumps({"pid": g.pid, "tids": g.tids, "vcpus": len(programs)}))
        sys.stdout.flush()
        announced.set()
        # with --wait the caller paces the guest, and says when it is done
        g.join(timeout=None if wait else max(60, (seconds or 0) + 60))
    finally:
        g.close()
    click.echo(json.dumps({"done": True, "rounds": g.rounds}))
