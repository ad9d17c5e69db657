# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit guest`: run the built-in guest as a process of its own, a known
workload for kvmexit (make run, tests, demos).

Prints one JSON line {"pid", "tids", "vcpus"} once the vCPU threads exist,
and {"done": true, "rounds": [...]} when they have finished.
"""
import json
import sys
import threading
import time

import click

from .errors import KvmexitError
from .guest import Guest, parse_program
from .selftest import workload


class Program(click.ParamType):
    name = "STEPS"

    def convert(self, value, param, ctx):
        try:
            return parse_program(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--vcpus", type=click.IntRange(1, 15), default=2, show_default=True,
              help="vCPUs when no --program is given (the selftest workload)")
@click.option("--program", "programs", type=Program(), multiple=True,
              help="one vCPU's steps, e.g. 'out:0x80:1000,cpuid:23,hlt:5,sync'; repeat per vCPU")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="run the programs again and again for this long (default: once)")
@click.option("--wait", is_flag=True,
              help="at each 'sync' step, wait for a line on standard input")
@click.option("-name", "--name", "vm_name", default=None, help="a VM name (as QEMU's -name guest=NAME)")
def guest(vcpus, programs, seconds, wait, vm_name):
    """Run the built-in KVM guest (needs /dev/kvm)."""
    programs = list(programs) or workload(vcpus)
    deadline = None if seconds is None else time.monotonic() + seconds
    repeat = None if deadline is None else (lambda vcpu, rounds: time.monotonic() < deadline)
    lock = threading.Lock()
    released = {}

    def sync(vcpu, n):
        # every vCPU's n-th sync waits for the n-th input line
        with lock:
            if n not in released:
                released[n] = sys.stdin.readline() != ""
    g = Guest(programs, sync=sync if wait else None, repeat=repeat)
    try:
        g.start()
        click.echo(json.dumps({"pid": g.pid, "tids": g.tids, "vcpus": len(programs)}))
        sys.stdout.flush()
        g.join(timeout=max(60, (seconds or 0) + 60))
    finally:
        g.close()
    click.echo(json.dumps({"done": True, "rounds": g.rounds}))
