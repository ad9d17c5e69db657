# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The counting loop of the main command: wait, read, print (one table at
the end, or one per interval), detach.  The formatting itself is output.py's."""
import signal
import threading
import time

import click

from . import kernel, output, procinfo, report
from .counts import Snapshot


class Emitter:
    """Prints snapshots in the chosen format (table, json, csv).

    Args:
        fmt: "table", "json" or "csv".
        view: output.View (tables).
        wide, top, latency, hist, detail, explain: the options of those names.
        max_entries: the counts map's capacity (named in the drops footer).
        mode: the attach mode (JSON).
    """

    def __init__(self, fmt, view, wide, top, latency, hist, max_entries, mode, detail=False, explain=False):
        self.fmt, self.view = fmt, view
        self.wide, self.top, self.latency, self.hist, self.detail = wide, top, latency, hist, detail
        self.explain, self.facts = explain, None
        if explain:                     # its rules and facts, imported only when asked for (start-up time)
            from . import hostfacts
            self.facts = hostfacts.Facts()
        self.max_entries, self.mode = max_entries, mode
        self.names = procinfo.Names()
        self.names_wanted = fmt != "table" or wide or explain
        self.csv_header = True

    def start(self):
        """With --explain, read the host's facts and those of the VMs there now."""
        if self.explain:
            self.facts.update({pid: () for pid in kernel.vm_processes()})

    def prime(self, snap):
        """Remember VM and thread names (and with --explain the VMs' facts)
        while the processes still exist."""
        if self.names_wanted:
            for k in snap.totals:
                self.names.vm(k.tgid)
                self.names.comm(k.tgid, k.tid)
        if self.explain:
            self.facts.seen(snap.totals)

    def _hints(self, snap, seconds):
        if not self.explain:
            return None
        from . import hints
        return hints.explain(snap, self.facts.seen(snap.totals), self.names, seconds)

    def emit(self, snap, interval=None, stamp=False, seconds=None):
        """Print one snapshot; seconds: the time it covers (--explain's rates)."""
        now = time.time()
        found = self._hints(snap, seconds)
        if self.fmt == "table":
            rows = report.rows(snap.totals, self.view.key, snap.latency, self.top, snap.details)
            if stamp:
                click.echo(time.strftime("%H:%M:%S", time.localtime(now)))
            click.echo(output.table(self.view, rows, self.wide, self.names, self.latency))
            if self.hist:
                for r in rows:
                    if r.lat:
                        who = {"all": "PID %d TID %d " % (r.tgid, r.tid), "tids": "TID %d " % r.tid}.get(
                            self.view.key, "")
                        click.echo("\n%s%s = %s" % (who, output.REASON_HEADER, r.name))
                        click.echo(output.histogram(r.lat))
            if found is not None:
                block = output.hints_block(found, self.facts.host.notes)
                if block:
                    click.echo(block)
            footer = output.losses_footer(snap, self.max_entries)
            if footer:
                click.echo(footer)
            return rows
        rows = report.rows(snap.totals, "full", snap.latency, self.top, snap.details)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03d+00:00" % (now % 1 * 1000)
        if self.fmt == "json":
            click.echo(output.json_record(ts, interval, rows, snap, self.mode, self.names, self.latency,
                                          self.detail, found, self.facts.host.notes if found is not None else ()))
        else:
            click.echo(output.csv_rows(ts, interval, rows, snap, self.names, self.latency,
                                       header=self.csv_header, detail=self.detail, hints=found), nl=False)
            self.csv_header = False
        return rows


# Ctrl-C and SIGTERM set this instead of raising KeyboardInterrupt wherever
# the program happens to be: a signal that comes while attaching, or while
# a table is printed, still ends in one orderly final table.
STOP = threading.Event()


def stop_on_signals():
    """Route SIGINT and SIGTERM to STOP (call before attaching)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: STOP.set())


def _sleep_until(t, on_tick=None):
    """Sleep until monotonic time t or STOP, waking for on_tick() after 0.1,
    0.3, 0.7, 1.5 s and then every second (short-lived threads get named too).

    Returns:
        True if stopped by a signal.
    """
    step = 0.1
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return STOP.is_set()
        if STOP.wait(min(left, step if on_tick else 1.0)):
            return True
        step = min(step * 2, 1.0)
        if on_tick is not None:
            on_tick()


def run(tracer, emitter, duration, interval, count, cumulative):
    """Count, print, detach.  Returns the last snapshot (running totals).

    Without interval: one table at the end (bcc's behaviour).  With it: a
    table every interval seconds, of that interval's exits (or running
    totals with cumulative), until count tables, the duration, or Ctrl-C.
    """
    start = time.monotonic()
    end = start + duration if duration is not None else float("inf")
    prev, n = Snapshot({}, latency={} if tracer.options.latency else None,
                       details={} if tracer.options.detail else None), 0
    tick = (lambda: emitter.prime(tracer.read())) if emitter.names_wanted else None
    stopped = False
    while interval is not None and not stopped:
        stopped = _sleep_until(min(start + (n + 1) * interval, end), tick)
        if stopped:
            break
        snap = tracer.read()
        emitter.prime(snap)
        emitter.emit(snap if cumulative else snap - prev, interval, stamp=True,
                     seconds=time.monotonic() - start if cumulative else interval)
        if emitter.fmt == "table":
            click.echo()
        prev, n = snap, n + 1
        if (count and n >= count) or time.monotonic() >= end:
            return snap
    if interval is None:
        stopped = _sleep_until(end, tick)
        if stopped and emitter.fmt == "table":
            click.echo()                           # bcc's empty line after ^C
    tracer.detach()                                # a final snapshot that no longer moves
    snap = tracer.read()
    emitter.prime(snap)
    if interval is None:
        emitter.emit(snap, seconds=time.monotonic() - start)
    elif snap != prev or not n:                    # the partial last interval
        elapsed = time.monotonic() - start
        emitter.emit(snap if cumulative else snap - prev, interval, stamp=True,
                     seconds=elapsed if cumulative else elapsed - n * interval)
    return snap
