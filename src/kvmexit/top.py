# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""`kvmexit top`: a live full-screen view of exit rates (curses).

Every INTERVAL seconds the counters are read; each row shows its exits per
second over that interval and its total since the start (or the last
reset).  The model (rows from two snapshots) and the screen (lines from
rows) are pure; only the loop at the bottom touches curses.

    q quit  p pause  r reset  g grouping  s sort  e expand  f filter  x explain
"""
import signal
import time
from dataclasses import dataclass, replace

import click

from . import hints, hostfacts, procinfo
from .abi import KVMEXIT_VCPU_UNKNOWN
from .errors import KvmexitError
from .reasons import decode
from .skeleton import Filter
from .frontend import trace_options, tracing_options
from .tracer import Tracer

GROUPS = ("vm", "thread", "reason")   # VM > reasons; VM > vCPU thread > reasons; reason > VMs
SORTS = ("rate", "total", "name")
HELP = "q:quit p:pause r:reset g:group(%s) s:sort(%s) e:expand f:filter x:explain"


@dataclass(frozen=True)
class State:
    """What the keys change."""
    group: str = "vm"
    sort: str = "rate"
    expand: bool = True
    paused: bool = False
    filter: str = ""
    explain: bool = False


@dataclass(frozen=True)
class Line:
    """One row of the screen: depth 0 is a group, 1 and 2 lie under it; a
    hint (x) has no rate and no total."""
    depth: int
    label: str
    rate: float = None
    total: int = None


def press(state, key):
    """The state after a key (pure); f and the filter's text are the loop's."""
    if key == "p":
        return replace(state, paused=not state.paused)
    if key == "g":
        return replace(state, group=GROUPS[(GROUPS.index(state.group) + 1) % len(GROUPS)])
    if key == "s":
        return replace(state, sort=SORTS[(SORTS.index(state.sort) + 1) % len(SORTS)])
    if key == "e":
        return replace(state, expand=not state.expand)
    if key == "x":
        return replace(state, explain=not state.explain)
    return state


def _order(state, items):
    """items: [(label, rate, total, children)], sorted as state.sort says."""
    if state.sort == "name":
        return sorted(items, key=lambda i: i[0])
    if state.sort == "total":
        return sorted(items, key=lambda i: (-i[2], -i[1], i[0]))
    return sorted(items, key=lambda i: (-i[1], -i[2], i[0]))


def _tree(rows, levels):
    """Nest rows [(path, rate, total)] by their path's first `levels` parts:
    [(label, rate, total, children)]."""
    groups = {}
    for path, rate, total in rows:
        g = groups.setdefault(path[0], [0.0, 0, []])
        g[0] += rate
        g[1] += total
        if levels > 1:
            g[2].append((path[1:], rate, total))
    return [(label, rate, total, _tree(children, levels - 1) if levels > 1 else [])
            for label, (rate, total, children) in groups.items()]


def model(rates, totals, state, names, why=None):
    """The screen's rows (pure but for names).

    Args:
        rates: {counts.CounterKey: exits per second} of the last interval.
        totals: {counts.CounterKey: exits} since the start or the last reset.
        state: State.
        names: procinfo.Names.
        why: {(VM label, reason name): hint text}, shown under the VM's
            reason with state.explain.
    Returns:
        [Line], groups first, each followed by what lies under it when expanded.
    """
    def vm(k):
        return "%d %s" % (k.tgid, names.vm(k.tgid))

    def thread(k):
        return "%d %s%s" % (k.tid, names.comm(k.tgid, k.tid),
                            "" if k.vcpu == KVMEXIT_VCPU_UNKNOWN else " vcpu %d" % k.vcpu)
    paths = {"vm": lambda k: (vm(k), decode(k.isa, k.reason, k.flags)),
             "thread": lambda k: (vm(k), thread(k), decode(k.isa, k.reason, k.flags)),
             "reason": lambda k: (decode(k.isa, k.reason, k.flags), vm(k))}[state.group]
    rows = [(paths(k), rates.get(k, 0.0), totals.get(k, 0)) for k in set(rates) | set(totals)]
    if state.filter:
        f = state.filter.lower()
        rows = [r for r in rows if any(f in p.lower() for p in r[0] if p[:1].isdigit())]
    levels = len(rows[0][0]) if rows else 1
    out = []

    def walk(items, depth, path):
        for label, rate, total, children in _order(state, items):
            out.append(Line(depth, label, rate, total))
            here = path + (label,)
            if state.expand:
                walk(children, depth + 1, here)
            if state.explain and why and not children:
                vm_reason = (here[1], here[0]) if state.group == "reason" else (here[0], here[-1])
                if vm_reason in why:
                    out.append(Line(depth + 1, "why: " + why[vm_reason]))
    walk(_tree(rows, levels), 0, ())
    return out


def screen(lines, state, width, height, title, losses=""):
    """The text of the whole screen, lines cut to width and to height (pure)."""
    head = "%s%s%s" % (title, "  filter '%s'" % state.filter if state.filter else "",
                       "  [PAUSED]" if state.paused else "")
    keys = HELP % (state.group, state.sort)
    label_w = max(10, width - 26)
    cols = "%-*s %12s %12s" % (label_w, {"reason": "REASON / VM"}.get(state.group, "VM / THREAD / REASON"),
                               "EXITS/s", "TOTAL")
    body = ["%-*s %12.1f %12d" % (label_w, ("  " * l.depth + l.label)[:label_w], l.rate, l.total)
            if l.rate is not None else ("  " * l.depth + l.label)[:width] for l in lines]
    room = height - 3 - (1 if losses else 0)
    if len(body) > room:
        body = body[:max(room - 1, 0)] + ["... %d more rows (e collapses, f filters)" % (len(body) - room + 1)]
    return [s[:width] for s in [head, keys, cols] + body + ([losses] if losses else [])][:height]


def _rates(cur, prev, elapsed):
    return {k: (n - prev.totals.get(k, 0)) / elapsed for k, n in cur.totals.items()
            if n != prev.totals.get(k, 0)} if elapsed > 0 else {}


def _draw(stdscr, text):
    import curses
    height, width = stdscr.getmaxyx()
    stdscr.erase()
    for y, line in enumerate(text[:height]):
        try:
            stdscr.addstr(y, 0, line[:width - 1] if y == height - 1 else line)
        except curses.error:          # the bottom right cell
            pass
    stdscr.refresh()


def _why(shown, facts, names, seconds):
    """{(VM label, reason name): hint text} of a snapshot."""
    found = hints.explain(shown, facts.seen(shown.totals), names, seconds)
    return {("%d %s" % (h.row.pid, h.row.vm), h.row.reason_name): h.why for h in found}


def _loop(stdscr, tracer, interval, stop):
    """Read every interval, redraw then and after each key, until q or a signal."""
    import curses
    curses.curs_set(0)
    stdscr.timeout(100)
    names = procinfo.Names()
    state, typing = State(), None          # typing: the filter being typed, or None
    facts = hostfacts.Facts()
    base = cur = tracer.read()
    shown, rates = cur - base, {}
    last = since = time.monotonic()
    next_t = last + interval
    while not stop[0]:
        ch = stdscr.getch()
        if typing is not None and ch != -1:            # Enter applies the filter, Esc drops it
            if ch in (10, 13):
                state, typing = replace(state, filter=typing), None
            elif ch == 27:
                typing = None
            elif ch in (curses.KEY_BACKSPACE, 127, 8):
                typing = typing[:-1]
            elif 32 <= ch < 127:
                typing += chr(ch)
        elif ch == ord("q"):
            return
        elif ch == ord("f"):
            typing = ""
        elif ch == ord("r"):
            base = cur = tracer.read()
            shown, rates, since = cur - base, {}, time.monotonic()
        elif 0 <= ch < 256:
            state = press(state, chr(ch))
        now = time.monotonic()
        if now >= next_t:
            new = tracer.read()
            if not state.paused:
                rates, shown = _rates(new, cur, now - last), new - base
            cur, last = new, now
            next_t += interval * (1 + int((now - next_t) // interval))
        elif ch == -1:
            continue                                    # nothing new to show
        height, width = stdscr.getmaxyx()
        title = "kvmexit top  %s  %s  every %gs  %.1f exits/s" % (
            time.strftime("%H:%M:%S"), tracer.attached.kind, interval, sum(rates.values()))
        losses = "not counted: %d (map full), %d (skipped)" % (shown.drops, shown.skipped) \
            if shown.drops or shown.skipped else ""
        why = _why(shown, facts, names, now - since) if state.explain else None
        text = screen(model(rates, shown.totals, state, names, why), state, width, height - (typing is not None),
                      title, losses)
        if typing is not None:
            text.append("filter (pid or VM name; Enter applies, Esc cancels): " + typing)
        _draw(stdscr, text)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--pid", type=click.IntRange(min=1), default=None, help="show this process (VM) only")
@click.option("-i", "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="seconds between refreshes (the rates' interval)")
@click.option("--detail", is_flag=True, help="count KVM's events under the exits too, for x's port and MSR hints")
@tracing_options
def top(pid, interval, mode, max_entries, detail, calibrate):
    """A live full-screen view of exit rates, by VM, vCPU thread and reason.

    Keys: q quit, p pause, r reset the totals, g grouping (VM, VM > thread,
    reason), s sort (rate, total, name), e expand/collapse, f filter by
    PID or VM name, x explain (kvmexit --explain's hints under the reasons).
    """
    import curses
    import sys
    if not sys.stdout.isatty():
        raise click.UsageError("top needs a terminal; for a log use kvmexit -i SECONDS")
    tracer = Tracer(trace_options(mode, max_entries, calibrate, Filter(tgid=pid or 0), detail=detail))
    stop = [False]

    def on_signal(signum, frame):
        stop[0] = True
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        tracer.start()
        try:
            curses.wrapper(_loop, tracer, interval, stop)
        except curses.error as e:
            if not stop[0]:                   # a terminal closed under it ends it too
                raise KvmexitError("the terminal went away (%s)" % e) from None
    finally:
        tracer.close()
