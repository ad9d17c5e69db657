# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit exporter`: KVM exit counts for Prometheus.

Serves /metrics (prometheus-client), and/or rewrites a node_exporter
textfile atomically.  Every scrape reads the kernel's counters live (reads
are monotonic: maps.py), so counters only grow.

    kvmexit_exits_total{pid,vm,[tid,]vcpu,isa,reason}  exits (labels by --by)
    kvmexit_dropped_exits_total{cause}                  exits not counted: map_full, skipped
    kvmexit_counters, kvmexit_counters_max              counters in use / capacity
    kvmexit_info{mode,source,version}                   1
"""
import os
import signal
import threading
import time

import click

from . import __version__, procinfo, report
from .abi import KVMEXIT_VCPU_UNKNOWN
from .errors import KvmexitError
from .skeleton import Filter
from .tracer import DEFAULT_MAX_ENTRIES, MODES, TraceOptions, Tracer

# --by -> labels of kvmexit_exits_total, and how each is taken from a full row
LABELS = {
    "vm": ("pid", "vm", "isa", "reason"),
    "vcpu": ("pid", "vm", "vcpu", "isa", "reason"),
    "thread": ("pid", "vm", "tid", "vcpu", "isa", "reason"),
}


def _value(row, label, names):
    if label == "pid":
        return str(row.tgid)
    if label == "vm":
        return names.vm(row.tgid)
    if label == "tid":
        return str(row.tid)
    if label == "vcpu":
        return "" if row.vcpu == KVMEXIT_VCPU_UNKNOWN else str(row.vcpu)
    if label == "isa":
        return row.isa_name
    return row.name


def exit_samples(totals, by, names):
    """{label values: count} for kvmexit_exits_total at the --by granularity (pure but for names)."""
    labels = LABELS[by]
    out = {}
    for r in report.rows(totals, "full"):
        k = tuple(_value(r, lab, names) for lab in labels)
        out[k] = out.get(k, 0) + r.count
    return out


class ExitCollector:
    """A prometheus-client collector reading the tracer on every scrape."""

    def __init__(self, tracer, by):
        self.tracer, self.by = tracer, by
        self.names = procinfo.Names()
        self.lock = threading.Lock()    # scrapes come on threads of their own

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        with self.lock:
            snap = self.tracer.read()
        exits = CounterMetricFamily("kvmexit_exits", "KVM exits by exit reason, counted by kvmexit",
                                    labels=LABELS[self.by])
        for labels, value in sorted(exit_samples(snap.totals, self.by, self.names).items()):
            exits.add_metric(labels, value)
        yield exits
        drops = CounterMetricFamily("kvmexit_dropped_exits", "Exits not counted, by cause: the counts map was "
                                    "full (map_full), the kernel skipped the program (skipped)", labels=["cause"])
        drops.add_metric(["map_full"], snap.drops)
        drops.add_metric(["skipped"], snap.skipped)
        yield drops
        yield GaugeMetricFamily("kvmexit_counters", "(thread, reason) counters in use", value=len(snap.totals))
        yield GaugeMetricFamily("kvmexit_counters_max", "Capacity of the counts map (--max-entries)",
                                value=self.tracer.options.max_entries)
        info = GaugeMetricFamily("kvmexit_info", "How kvmexit counts", labels=["mode", "source", "version"])
        info.add_metric([self.tracer.attached.kind, self.tracer.options.source, __version__], 1)
        yield info


def _listen_addr(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("%r is not ADDR:PORT, e.g. 127.0.0.1:9476" % value, param_hint="'--listen'")
    return host.strip("[]") or "0.0.0.0", int(port)


def _write_textfile(path, registry):
    """Rewrite the textfile: a temporary file beside it, renamed over it (atomic)."""
    from prometheus_client import write_to_textfile
    try:
        write_to_textfile(path, registry)
    except OSError as e:
        raise KvmexitError("cannot write the textfile %s: %s; give --textfile a path in a writable directory"
                           % (path, e.strerror)) from None


def _check_textfile_dir(path):
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise KvmexitError("cannot write the textfile %s: %s is not a directory; give --textfile a path in a "
                           "writable directory" % (path, d))


def _stop(signum, frame):
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", default=None, metavar="ADDR:PORT", help="serve /metrics here, e.g. 127.0.0.1:9476")
@click.option("--textfile", default=None, metavar="PATH",
              help="also rewrite this node_exporter textfile (atomically) every --interval seconds")
@click.option("--interval", type=click.FloatRange(min=0.05), default=15.0, show_default=True,
              help="seconds between textfile rewrites")
@click.option("--by", type=click.Choice(sorted(LABELS)), default="vcpu", show_default=True,
              help="label granularity: vm (pid, vm), vcpu (+ vcpu) or thread (+ tid)")
@click.option("-p", "--pid", type=click.IntRange(min=1), default=None, help="count this process (VM) only")
@click.option("--mode", type=click.Choice(MODES), default="auto", show_default=True, help="attach mode")
@click.option("--max-entries", type=click.IntRange(min=1, max=1 << 24), default=DEFAULT_MAX_ENTRIES,
              show_default=True, help="capacity of the counts map, in (thread, reason) pairs")
@click.option("--calibrate", is_flag=True, hidden=True, help="export kvm:kvm_pio by port instead")
def exporter(listen, textfile, interval, by, pid, mode, max_entries, calibrate):
    """Export KVM exit counts to Prometheus (/metrics and/or a textfile)."""
    if not listen and not textfile:
        raise click.UsageError("give --listen ADDR:PORT, --textfile PATH, or both")
    addr = _listen_addr(listen) if listen else None
    if textfile:
        _check_textfile_dir(textfile)
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise KvmexitError("the exporter needs prometheus-client: pip install prometheus-client "
                           "(Debian: apt-get install python3-prometheus-client)") from None
    tracer = Tracer(TraceOptions(Filter(tgid=pid or 0), mode, "kvm_pio" if calibrate else "kvm_exit", max_entries))
    signal.signal(signal.SIGTERM, _stop)
    try:
        tracer.start()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ExitCollector(tracer, by))
        if textfile:
            _write_textfile(textfile, registry)     # a directory that cannot be written: said at once
        if addr:
            try:
                start_http_server(addr[1], addr=addr[0], registry=registry)
            except OSError as e:
                raise KvmexitError("cannot listen on %s: %s" % (listen, e.strerror)) from None
        click.echo("kvmexit exporter: %s mode%s%s" % (
            tracer.attached.kind, ", http://%s/metrics" % listen if addr else "",
            ", textfile %s every %gs" % (textfile, interval) if textfile else ""), err=True)
        while True:
            time.sleep(interval if textfile else 3600)
            if textfile:
                _write_textfile(textfile, registry)
    except KeyboardInterrupt:
        pass
    finally:
        tracer.close()
