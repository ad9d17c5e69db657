# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What `kvmexit`, `kvmexit top` and `kvmexit exporter` share: the options
that choose how to trace (declared once, as one decorator) and the
TraceOptions built from them (one function, one set of checks)."""
import click

from .skeleton import Filter
from .tracer import DEFAULT_MAX_ENTRIES, MODES, TraceOptions


def tracing_options(f):
    """--mode, --max-entries and the hidden --calibrate, for a click command."""
    for option in reversed((
        click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True,
                     help="attach mode; auto picks the fastest that works"),
        click.option("--max-entries", type=click.IntRange(min=1, max=1 << 24), default=DEFAULT_MAX_ENTRIES,
                     show_default=True, help="capacity of the counts map, in (thread, reason) pairs"),
        click.option("--calibrate", is_flag=True, hidden=True,
                     help="count kvm:kvm_pio by port instead of kvm:kvm_exit (self-test of the counting path)"),
    )):
        f = option(f)
    return f


def trace_options(mode, max_entries, calibrate, filt=Filter(), latency=False, detail=False):
    """The TraceOptions of a command's options; a usage error where they conflict."""
    if latency and calibrate:
        raise click.UsageError("--latency times kvm_exit to kvm_entry; --calibrate has no entry event")
    return TraceOptions(filt, mode, "kvm_pio" if calibrate else "kvm_exit", max_entries, latency, detail)
