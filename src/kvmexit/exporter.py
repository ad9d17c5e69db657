# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit exporter`: KVM exit counts for Prometheus.

Serves /metrics (prometheus-client), and/or rewrites a node_exporter
textfile atomically.  Every scrape reads the kernel's counters live (reads
are monotonic: maps.py), so counters only grow.

    kvmexit_exits_total{pid,vm,[tid,]vcpu,isa,reason}  exits (labels by --by)
    kvmexit_exit_latency_seconds{...}                   --latency: exit-to-entry time, a histogram
                                                        (13 buckets: 2^10 .. 2^32 ns by powers of 4, +Inf)
    kvmexit_exit_details_total{...,kind,dir,value,name} --detail: KVM's events under the exits
    kvmexit_dropped_exits_total{cause}                  exits not counted: map_full, skipped; with
                                                        --latency untimed, entries_skipped; with
                                                        --detail undetailed, details_skipped
    kvmexit_counters, kvmexit_counters_max              counters in use / capacity
    kvmexit_info{mode,source,version}                   1
"""
import os
import signal
import threading
import time

import click

from . import __version__, counts, details, procinfo, report, webconfig
from .abi import KVMEXIT_LAT_SLOTS, KVMEXIT_VCPU_UNKNOWN
from .counts import slot_bounds
from .errors import KvmexitError
from .skeleton import Filter
from .frontend import trace_options, tracing_options
from .tracer import Tracer

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


# the histogram's bounds in ns: powers of two, so each is a bucket edge of
# the kernel's log-linear histogram and every count below it is exact
LATENCY_BOUNDS_NS = tuple(1 << k for k in range(10, 33, 2))
SLOT_ENDS = tuple(slot_bounds(i)[1] for i in range(KVMEXIT_LAT_SLOTS))


def latency_samples(latency, by, names):
    """{label values: ([(le, cumulative count)], sum in seconds)} for
    kvmexit_exit_latency_seconds (pure but for names); le "+Inf" last."""
    labels = LABELS[by]
    stats = {}
    for r in report.rows({k: v.count for k, v in latency.items()}, "full", latency):
        k = tuple(_value(r, lab, names) for lab in labels)
        stats[k] = stats[k] + r.lat if k in stats else r.lat
    out = {}
    for k, s in stats.items():
        buckets = [("%g" % (b / 1e9), sum(n for n, end in zip(s.hist, SLOT_ENDS) if end <= b))
                   for b in LATENCY_BOUNDS_NS]
        out[k] = (buckets + [("+Inf", s.count)], s.total_ns / 1e9)
    return out


def detail_samples(detail_counts, by, names):
    """{label values + (kind, dir, value, name): count} for kvmexit_exit_details_total (pure but for names)."""
    labels = LABELS[by]
    out = {}
    for r in report.rows({}, "full", detail_counts=detail_counts):
        for d in r.detail:
            k = tuple(_value(r, lab, names) for lab in labels) + (
                details.KINDS.get(d.kind, str(d.kind)), details.dir_name(d.kind, d.dir) or "", "%#x" % d.value,
                details.name(d.kind, d.value))
            out[k] = out.get(k, 0) + d.count
    return out


class ExitCollector:
    """A prometheus-client collector reading the tracer on every scrape."""

    def __init__(self, tracer, by):
        self.tracer, self.by = tracer, by
        self.names = procinfo.Names()
        self.lock = threading.Lock()    # scrapes come on threads of their own

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        with self.lock:
            snap = self.tracer.read()
        exits = CounterMetricFamily("kvmexit_exits", "KVM exits by exit reason, counted by kvmexit",
                                    labels=LABELS[self.by])
        for labels, value in sorted(exit_samples(snap.totals, self.by, self.names).items()):
            exits.add_metric(labels, value)
        yield exits
        if snap.latency is not None:
            lat = HistogramMetricFamily("kvmexit_exit_latency_seconds", "Time from a KVM exit to the vCPU "
                                        "thread's next entry, by exit reason", labels=LABELS[self.by])
            for labels, (buckets, total) in sorted(latency_samples(snap.latency, self.by, self.names).items()):
                lat.add_metric(labels, buckets, total)
            yield lat
        if snap.details is not None:
            det = CounterMetricFamily("kvmexit_exit_details", "KVM's events under the exits: I/O port, MSR, MMIO "
                                      "page, hypercall, exit to userspace", labels=LABELS[self.by] + DETAIL_LABELS)
            for labels, value in sorted(detail_samples(snap.details, self.by, self.names).items()):
                det.add_metric(labels, value)
            yield det
        drops = CounterMetricFamily("kvmexit_dropped_exits", "Events not counted, by cause: the counts map was "
                                    "full (map_full), the kernel skipped the program (skipped); --latency: exits "
                                    "without a time (untimed, entries_skipped); --detail: KVM events not counted "
                                    "(undetailed, details_skipped)", labels=["cause"])
        for loss in counts.losses_of(snap.latency is not None, snap.details is not None):
            drops.add_metric([loss.cause], getattr(snap, loss.field))
        yield drops
        yield GaugeMetricFamily("kvmexit_counters", "(thread, reason) counters in use", value=len(snap.totals))
        yield GaugeMetricFamily("kvmexit_counters_max", "Capacity of the counts map (--max-entries)",
                                value=self.tracer.options.max_entries)
        info = GaugeMetricFamily("kvmexit_info", "How kvmexit counts", labels=["mode", "source", "version"])
        info.add_metric([self.tracer.attached.kind, self.tracer.options.source, __version__], 1)
        yield info


DETAIL_LABELS = ("kind", "dir", "value", "name")


def _listen_addr(value):
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter("%r is not ADDR:PORT, e.g. 127.0.0.1:9476" % value, param_hint="'--listen'")
    return host.strip("[]") or "0.0.0.0", int(port)


def _umask():
    """The process's umask, read without changing it (/proc/self/status, Linux 4.7+)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(l for l in f if l.startswith("Umask:")).split()[1], 8)
    except (OSError, StopIteration, ValueError):
        return 0o022


def _write_textfile(path, registry):
    """Rewrite the textfile atomically and safely in a directory others may
    write: the new content goes to a temporary file created exclusively
    (O_CREAT | O_EXCL | O_NOFOLLOW, a random name: mkstemp) beside it, made
    0644 less the umask (node_exporter reads it as another user), then renamed
    over the textfile, which replaces a link there rather than following it."""
    import tempfile
    from prometheus_client import generate_latest
    d, name = os.path.split(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=d)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644 & ~_umask())
            f.write(generate_latest(registry))
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise KvmexitError("cannot write the textfile %s: %s; give --textfile a path in a writable directory"
                           % (path, e.strerror)) from None
    finally:
        if tmp is not None:             # not renamed: gone (a signal may have come after the rename)
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _check_textfile_dir(path):
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise KvmexitError("cannot write the textfile %s: %s is not a directory; give --textfile a path in a "
                           "writable directory" % (path, d))


def _stop(signum, frame):
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--listen", default=None, metavar="ADDR:PORT", help="serve /metrics here, e.g. 127.0.0.1:9476")
@click.option("--web-config", default=None, metavar="FILE",
              help="TLS, client certificates and basic auth for --listen, in node_exporter's web configuration "
                   "format (exporter-toolkit's)")
@click.option("--textfile", default=None, metavar="PATH",
              help="also rewrite this node_exporter textfile (atomically) every --interval seconds")
@click.option("--interval", type=click.FloatRange(min=0.05), default=15.0, show_default=True,
              help="seconds between textfile rewrites")
@click.option("--by", type=click.Choice(sorted(LABELS)), default="vcpu", show_default=True,
              help="label granularity: vm (pid, vm), vcpu (+ vcpu) or thread (+ tid)")
@click.option("-p", "--pid", type=click.IntRange(min=1), default=None, help="count this process (VM) only")
@click.option("--latency", is_flag=True, help="also export exit-to-entry times (a histogram per series)")
@click.option("--detail", is_flag=True, help="also export KVM's events under the exits (port, MSR, ...)")
@tracing_options
def exporter(listen, web_config, textfile, interval, by, pid, mode, max_entries, latency, detail, calibrate):
    """Export KVM exit counts to Prometheus (/metrics and/or a textfile)."""
    if not listen and not textfile:
        raise click.UsageError("give --listen ADDR:PORT, --textfile PATH, or both")
    if web_config and not listen:
        raise click.UsageError("--web-config secures --listen: give --listen ADDR:PORT too")
    options = trace_options(mode, max_entries, calibrate, Filter(tgid=pid or 0), latency, detail)
    addr = _listen_addr(listen) if listen else None
    if textfile:
        _check_textfile_dir(textfile)
    web = webconfig.load(web_config) if web_config else None
    try:
        from prometheus_client.core import CollectorRegistry
    except ImportError:
        raise KvmexitError("the exporter needs prometheus-client: pip install prometheus-client "
                           "(Debian: apt-get install python3-prometheus-client)") from None
    tracer = Tracer(options)
    signal.signal(signal.SIGTERM, _stop)
    try:
        tracer.start()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ExitCollector(tracer, by))
        if textfile:
            _write_textfile(textfile, registry)     # a directory that cannot be written: said at once
        if addr:
            try:
                webconfig.serve(addr[0], addr[1], registry, web)
            except OSError as e:
                raise KvmexitError("cannot listen on %s: %s" % (listen, e.strerror)) from None
        scheme = "https" if web is not None and web.tls is not None else "http"
        click.echo("kvmexit exporter: %s mode%s%s" % (
            tracer.attached.kind, ", %s://%s/metrics" % (scheme, listen) if addr else "",
            ", textfile %s every %gs" % (textfile, interval) if textfile else ""), err=True)
        while True:
            time.sleep(interval if textfile else 3600)
            if textfile:
                _write_textfile(textfile, registry)
    except KeyboardInterrupt:
        pass
    finally:
        tracer.close()
