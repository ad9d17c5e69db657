# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The kvmexit command line: bcc kvmexit's interface, thin over Tracer."""
import sys

import click

from . import __version__, kernel
from .errors import KvmexitError
from .output import View
from .runner import Emitter, run, stop_on_signals
from .skeleton import Filter
from .frontend import trace_options, tracing_options
from .tracer import Tracer

EXAMPLES = """\b
EXAMPLES:
    kvmexit                        # all threads, until Ctrl-C
    kvmexit 5                      # all threads, for 5 seconds
    kvmexit -p 3195281 20          # one VM (PID), collapsed over its threads
    kvmexit -p 3195281 -v 0        # one vCPU (KVM vcpu_id 0) of that VM
    kvmexit -p 3195281 -a          # that VM, per thread
    kvmexit -t 395490 20           # one thread (TID)
    kvmexit -T '395490,395491'     # several threads, per thread
    kvmexit -i 1 -c 10             # a table of each second's exits, 10 times
    kvmexit -p 3195281 -a --wide   # per thread, with VM and thread names
    kvmexit -o json -i 5           # JSON Lines every 5 seconds
    kvmexit --latency --hist 10    # exit handling time per reason: percentiles, histograms
    kvmexit -p 3195281 --detail    # under each reason: which port, MSR, MMIO page, hypercall
    kvmexit --detail --explain 10  # what the top exits mean on this host, and what removes them
    kvmexit top                    # live full-screen rates by VM, thread and reason
    kvmexit exporter --listen 127.0.0.1:9476   # Prometheus /metrics
    kvmexit selftest               # check this host end to end (root, /dev/kvm)


x86-64 (Intel VMX, AMD SVM) and arm64 hosts; on arm64 the reason is the
trap's ESR class (DABT_LOW, SYS64, HVC64, WFx ...) or the exit's code (IRQ).

\b
COMMANDS (kvmexit COMMAND -h for each):
    top         a live full-screen view of exit rates (keys: q p r g s e f)
    selftest    trace a built-in KVM guest and check exact counts
    exporter    serve the counts to Prometheus (/metrics, textfile)
    guest       run the built-in KVM guest, a known workload
"""


class Pid(click.ParamType):
    """A positive process or thread id that exists now."""
    name = "PID"

    def __init__(self, what="process", check=kernel.process_exists):
        self.what, self.check = what, check

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        if not value.isdigit() or int(value) <= 0:
            self.fail("%r is not a %s id; give a positive number" % (value, self.what), param, ctx)
        if not self.check(int(value)):
            self.fail("no %s with id %s; check it with ps" % (self.what, value), param, ctx)
        return int(value)


class TidList(click.ParamType):
    """-T 'TID1,TID2': comma separated, no spaces (bcc's syntax)."""
    name = "TIDS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        tid = Pid("thread", kernel.thread_exists)
        return tuple(tid.convert(i, param, ctx) for i in value.split(","))


def _caps_ok():
    return kernel.bpf_capable()


def _view(pid, tid, tids, vcpu, alltids):
    """The table the options ask for, with bcc's context phrase."""
    if tids:
        return View("tids", "TIDS %s" % [str(t) for t in tids], "TIDS")
    if tid:
        return View("pid", "TID %d" % tid)
    if pid and alltids:
        return View("tids", "PID %d and its all threads" % pid)
    if pid and vcpu is not None:
        return View("pid", "PID %d VCPU %d" % (pid, vcpu))
    if pid:
        return View("pid", "PID %d" % pid)
    return View("all", "all threads")


def check_options(pid, tid, tids, vcpu, alltids, interval, count, cumulative, hist, latency):
    """Refuse option combinations that mean nothing; click.UsageError names the fix."""
    if (vcpu is not None or alltids) and not pid:
        raise click.UsageError("-v and -a need -p PID: give the VM's process id too")
    if vcpu is not None and alltids:
        raise click.UsageError("-v and -a exclude each other: pick one")
    if tid and tids:
        raise click.UsageError("-t and -T exclude each other: use -T 'TID1,TID2' for several")
    if (tid or tids) and (vcpu is not None or alltids):
        raise click.UsageError("-t/-T exclude -v and -a: filter by thread or by vCPU, not both")
    if (count or cumulative) and interval is None:
        raise click.UsageError("-c and --cumulative need -i INTERVAL: give the seconds between tables")
    if hist and not latency:
        raise click.UsageError("--hist needs --latency")
    if vcpu is not None:
        have = kernel.vcpus_of(pid)
        if have is not None and vcpu not in have:
            raise click.BadParameter("PID %d has no vCPU %d (%s)" % (
                pid, vcpu, "its vCPUs: " + ", ".join(map(str, sorted(have))) if have else "it holds no KVM vCPU"),
                param_hint="'-v' / '--vcpu'")
    if not _caps_ok():
        raise KvmexitError(kernel.caps_error())


def _note(text):
    click.echo("kvmexit: note: " + text, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("-p", "--pid", type=Pid(), help="trace this PID only")
@click.option("-t", "--tid", type=Pid("thread", kernel.thread_exists), metavar="TID", help="trace this TID only")
@click.option("-T", "--tids", type=TidList(),
              help="trace a comma separated series of tids with no space in between")
@click.option("-v", "--vcpu", type=click.IntRange(min=0), metavar="VCPU", help="trace this vcpu (KVM vcpu_id) only; needs -p")
@click.option("-a", "--alltids", is_flag=True, help="trace all tids for this pid; needs -p")
@click.option("-i", "--interval", type=click.FloatRange(min=0.01), default=None,
              help="print a table every INTERVAL seconds, of that interval's exits")
@click.option("-c", "--count", type=click.IntRange(min=1), default=None, help="with -i: stop after COUNT tables")
@click.option("--cumulative", is_flag=True, help="with -i: running totals instead of each interval's exits")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="table (bcc's), json (one JSON object per line) or csv")
@click.option("--wide", is_flag=True, help="add VM name and thread name (COMM) columns")
@click.option("--top", type=click.IntRange(min=1), default=None, help="print only the first TOP rows")
@click.option("--latency", is_flag=True, help="also time each exit until the thread's next kvm_entry")
@click.option("--hist", is_flag=True, help="with --latency: a log2 histogram per row")
@click.option("--detail", is_flag=True,
              help="under each reason, what the exits were about: I/O port, MSR, MMIO page, hypercall, "
                   "exit to userspace (KVM's own tracepoints)")
@click.option("--explain", is_flag=True,
              help="for the top exits of each VM: their cause, what this host shows of it, the usual remedy "
                   "(with --detail, by port and MSR)")
@tracing_options
@click.option("--verbose", is_flag=True, help="show libbpf's log and the attach attempts")
@click.version_option(__version__, "--version", prog_name="kvmexit")
@click.argument("duration", type=click.IntRange(min=0), required=False)
def trace(pid, tid, tids, vcpu, alltids, interval, count, cumulative, fmt, wide, top, latency, hist, detail, explain,
          mode, max_entries, verbose, calibrate, duration):
    """Display kvm exit reasons and their counts, per VM process, vCPU thread and vCPU.

    Without DURATION, counts until Ctrl-C; with it, for DURATION seconds.
    Runs as root (or with CAP_BPF and CAP_PERFMON).
    """
    check_options(pid, tid, tids, vcpu, alltids, interval, count, cumulative, hist, latency)
    view = _view(pid, tid, tids, vcpu, alltids)
    options = trace_options(mode, max_entries, calibrate, Filter(tgid=pid or 0, tids=(tid,) if tid else tids or (),
                                                                 vcpu=vcpu), latency, detail)
    source = options.source
    log = (lambda level, text: click.echo(text.rstrip("\n"), err=True)) if verbose else None
    tracer = Tracer(options, log)
    stop_on_signals()
    try:
        tracer.start()
        emitter = Emitter(fmt, view, wide, top, latency, hist, max_entries, tracer.attached.kind, detail, explain)
        emitter.start()            # before "attached": what it reads of the VMs comes while they run
        if verbose:
            for a, e in tracer.failures:
                click.echo("kvmexit: %s (%s) failed: %s" % (a.kind, a.prog, e), err=True)
            click.echo("kvmexit: attached %s (%s)" % (tracer.attached.kind, tracer.attached.prog), err=True)
        for n in tracer.notes:
            _note(n)
        if source == "kvm_exit" and tracer.kbtf.flavour == "pvm":
            _note("this host's KVM (kvm_pvm) never emits kvm:kvm_exit, so no exit will be counted; "
                  "'kvmexit selftest' checks the counting path with kvm:kvm_pio instead")
        if fmt == "table":
            click.echo(view.banner(duration))
        final = run(tracer, emitter, duration, interval, count, cumulative)
    finally:
        tracer.close()
    if not final.totals and source == "kvm_exit" and tracer.kbtf.flavour != "pvm":
        vms = kernel.vm_processes()
        if vms:
            _note("kvm:kvm_exit never fired although %d process(es) hold KVM vCPUs (pid %s): "
                  "this host's KVM may not emit it; run 'kvmexit selftest'"
                  % (len(vms), ", ".join(map(str, sorted(vms)))))


def _subcommand(name):
    """Subcommands, imported only when used (start-up time)."""
    if name == "selftest":
        from .selftest import selftest
        return selftest
    if name == "guest":
        from .guestcmd import guest
        return guest
    if name == "exporter":
        from .exporter import exporter
        return exporter
    if name == "top":
        from .top import top
        return top
    return None


def main(argv=None):
    """Entry point: `kvmexit [options] [duration]`, `kvmexit selftest|guest|exporter|top`."""
    args = sys.argv[1:] if argv is None else list(argv)
    cmd, prog = trace, "kvmexit"
    sub = _subcommand(args[0]) if args else None
    if sub is not None:
        cmd, prog = sub, "kvmexit " + args[0]
        args = args[1:]
    try:
        cmd.main(args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.UsageError as e:
        msg = e.format_message()
        if isinstance(e, click.NoSuchOption) and e.option_name[1:].isdigit():
            msg = "negative duration %s: give the seconds to trace as a positive number" % e.option_name
        click.echo("%s: error: %s (see '%s -h')" % (prog, msg, prog), err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo("%s: %s" % (prog, e.format_message()), err=True)
        sys.exit(1)
    except KvmexitError as e:
        click.echo("%s: %s" % (prog, e), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
