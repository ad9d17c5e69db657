# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Output: bcc kvmexit's exact text tables, plus wide columns, latency,
histograms, JSON Lines and CSV (pure: rows -> str, no I/O)."""
from dataclasses import dataclass

from . import counts, details
from .abi import KVMEXIT_VCPU_UNKNOWN
from .counts import PERCENTILES

REASON_HEADER = "KVM_EXIT_REASON"
LATENCY_COLUMNS = ("TOTAL_us", "MIN_us", "AVG_us") + tuple("P%d_us" % p for p in PERCENTILES) + ("MAX_us",)


def latency_values(s):
    """A LatencyStat's numbers in LATENCY_COLUMNS' order, in ns."""
    return (s.total_ns, s.min_ns, s.avg_ns) + tuple(s.percentile(p) for p in PERCENTILES) + (s.max_ns,)


@dataclass(frozen=True)
class View:
    """What a table shows: the report.VIEW_KEYS key, bcc's context phrase
    ("PID 3195281 and its all threads"), the per-thread column's header."""
    key: str
    context: str
    tid_header: str = "TID"

    def banner(self, duration):
        """The first line, printed once tracing has started."""
        tail = " after sleeping %d secs." % duration if duration is not None else "... Hit Ctrl-C to end."
        return "Display kvm exit reasons and statistics for %s%s" % (self.context, tail)


def _columns(view, wide):
    """(header, width, value(row, names)) of the columns before the reason."""
    cols = []
    if view.key == "all":
        cols += [("PID", 8, lambda r, n: r.tgid), ("TID", 8, lambda r, n: r.tid)]
    elif view.key == "tids":
        cols += [(view.tid_header, 8, lambda r, n: r.tid)]
    if wide and view.key == "all":
        cols += [("VM", 16, lambda r, n: n.vm(r.tgid)[:16])]
    if wide and view.key in ("all", "tids"):
        cols += [("COMM", 16, lambda r, n: n.comm(r.tgid, r.tid))]
    return cols


def table(view, rows, wide=False, names=None, latency=False):
    """Header and rows, in bcc kvmexit's format.

    Args:
        view: View ("all", "pid" or "tids"); a per-thread column is headed
            "TID" (-p -a) or "TIDS" (-T).
        wide: add VM and COMM columns (needs names, a procinfo.Names).
        latency: add exit-to-entry time columns (rows carry .lat).

    A row's --detail (rows carry .detail) follows it, one line each,
    indented under the reason.
    """
    cols = _columns(view, wide)
    head = "".join("%-*s " % (w, h) for h, w, _ in cols) + "%-35s " % REASON_HEADER
    head += ("%-8s " % "COUNT" + " ".join("%10s" % c for c in LATENCY_COLUMNS)) if latency else "COUNT"
    lines = [head]
    for r in rows:
        line = "".join("%-*s " % (w, f(r, names)) for _, w, f in cols) + "%-35s %-8u" % (r.name, r.count)
        if latency:
            line += " " + " ".join("%10.2f" % (v / 1000.0)
                                   for v in (latency_values(r.lat) if r.lat else (0,) * len(LATENCY_COLUMNS)))
        lines.append(line)
        indent = "".join("%-*s " % (w, "") for _, w, _ in cols)
        lines += [indent + "  %-33s %-8u" % (d.label, d.count) for d in r.detail]
    return "\n".join(lines)


def histogram(stat, indent=""):
    """bcc's log2 histogram of one LatencyStat's exit-to-entry times, in ns."""
    hist = stat.log2_hist()
    last = max((i for i, c in enumerate(hist) if c), default=-1)
    if last < 0:
        return ""
    top = max(hist)
    lines = ["%s%24s : count    distribution" % (indent, "nsecs")]
    for i in range(last + 1):
        lo, hi = (0 if i == 0 else 1 << i), (1 << (i + 1)) - 1
        bar = "*" * (hist[i] * 40 // top) if top else ""
        lines.append("%s%10d -> %-10d : %-8d |%-40s|" % (indent, lo, hi, hist[i], bar))
    return "\n".join(lines)


# the table's footer line of each loss (counts.LOSSES), with {n} and {max}
FOOTERS = {
    "drops": "Dropped {n} exits: the counts map ({max} entries) was full; raise --max-entries",
    "skipped": "Missed {n} exits: the kernel skipped kvmexit's program, that CPU being inside another BPF run "
               "(see SKIPPED EVENTS in kvmexit(8))",
    "entries_skipped": "Missed {n} kvm_entry events: the exits before them have no exit-handling time",
    "untimed": "Untimed {n} exits: the latency maps ({max} entries) were full; raise --max-entries",
    "undetailed": "Undetailed {n} KVM events: the details map ({max} entries) was full; raise --max-entries",
    "details_skipped": "Missed {n} KVM events for --detail: the kernel skipped a detail program while another "
                       "run of it was preempted on the same CPU",
}
LOSSES = tuple((loss.field, FOOTERS[loss.field]) for loss in counts.LOSSES)


def losses_footer(snap, max_entries):
    """One line per cause of events a snapshot did not count or time ("" if none)."""
    return "\n".join(text.format(n=getattr(snap, field), max=max_entries) for field, text in LOSSES
                     if getattr(snap, field))


def _hint_head(h):
    r = h.row
    rate = ", %.1f/s" % r.rate if r.rate is not None else ""
    return "PID %d %s: %d exits (%.0f%% of the VM's%s)" % (r.pid, r.reason_name, r.count, 100 * r.share, rate)


def hints_block(hints, notes=()):
    """--explain: two lines per hint, under a title; the host facts that
    could not be read, once ("" without hints or notes)."""
    if not hints and not notes:
        return ""
    lines = ["", "Hints (--explain):"] + ["  not read: %s" % n for n in notes]
    for h in hints:
        seen = "; seen: " + ", ".join("%s = %s" % kv for kv in h.seen) if h.seen else ""
        lines.append("  %s: %s%s" % (_hint_head(h), h.why, seen))
        lines.append("      fix: %s [%s]" % (h.fix, h.rule.source))
    return "\n".join(lines)


def hint_dict(h):
    r = h.row
    return {"pid": r.pid, "vm": r.vm, "isa": r.isa, "reason": r.reason, "reason_name": r.reason_name,
            "count": r.count, "share": round(r.share, 4), "rate": None if r.rate is None else round(r.rate, 1),
            "rule": h.rule.name, "why": h.why, "seen": dict(h.seen), "fix": h.fix, "source": h.rule.source}


def _detail_dict(d):
    return {"kind": details.KINDS.get(d.kind, str(d.kind)), "dir": details.dir_name(d.kind, d.dir),
            "value": d.value, "name": details.name(d.kind, d.value) or None, "count": d.count}


def _row_dict(r, names, latency, detail=False):
    d = {"pid": r.tgid, "tid": r.tid, "vcpu": None if r.vcpu == KVMEXIT_VCPU_UNKNOWN else r.vcpu,
         "vm": names.vm(r.tgid), "comm": names.comm(r.tgid, r.tid), "isa": r.isa_name,
         "reason": r.reason, "reason_name": r.name, "count": r.count}
    if latency:
        s = r.lat
        d["latency"] = None if s is None else dict(
            {"count": s.count, "total_ns": s.total_ns, "min_ns": s.min_ns, "avg_ns": round(s.avg_ns, 1)},
            **{"p%d_ns" % p: round(s.percentile(p), 1) for p in PERCENTILES}, max_ns=s.max_ns,
            hist_log2_ns=s.log2_hist())
    if detail:
        d["detail"] = [_detail_dict(x) for x in r.detail]
    return d


def json_record(timestamp, interval, rows, snap, mode, names, latency=False, detail=False, hints=None,
                notes=()):
    """One JSON Lines record: an interval's (or the whole run's) exits.

    Keys: timestamp (ISO 8601), interval (seconds, null for one run), mode,
    drops (map full), skipped (exits the kernel skipped the program for),
    [entries_skipped, untimed (--latency), undetailed, details_skipped
    (--detail): losses_footer says what they are,] exits: [{pid, tid,
    vcpu, vm, comm, isa, reason, reason_name, count[, latency][, detail:
    [{kind, dir, value, name, count}]]}], rows of report.rows(...,
    "full"); snap: the Snapshot the rows are of, for its losses.  With
    --explain (hints not None): hints: [{pid, vm, isa, reason, reason_name,
    count, share, rate, rule, why, seen: {fact: value}, fix, source}] and
    facts_not_read: [note].
    """
    import json  # machine output only: kept off the start-up path
    rec = {"timestamp": timestamp, "interval": interval, "mode": mode}
    rec.update((loss.field, getattr(snap, loss.field)) for loss in counts.losses_of(latency, detail))
    rec["exits"] = [_row_dict(r, names, latency, detail) for r in rows]
    if hints is not None:
        rec["hints"] = [hint_dict(h) for h in hints]
        rec["facts_not_read"] = list(notes)
    return json.dumps(rec, sort_keys=False)


CSV_HEADER = ["timestamp", "interval", "pid", "tid", "vcpu", "vm", "comm", "isa", "reason", "reason_name", "count"]
CSV_LATENCY = ["total_ns", "min_ns", "avg_ns"] + ["p%d_ns" % p for p in PERCENTILES] + ["max_ns"]
CSV_DETAIL = ["detail_kind", "detail_dir", "detail_value", "detail_name", "detail_count"]
CSV_HINT = ["hint_rule", "hint_why", "hint_seen", "hint_fix", "hint_source"]


def csv_rows(timestamp, interval, rows, snap, names, latency=False, header=False, detail=False, hints=None):
    """CSV lines (a header row first when header); events not counted as
    rows named DROPPED (map full), SKIPPED (exits the kernel skipped the
    program for), ENTRIES_SKIPPED and UNTIMED (--latency), UNDETAILED and
    DETAILS_SKIPPED (--detail).  With --detail, each exit row is followed
    by one row per detail: the exit's columns again, then the detail's.
    With --explain (hints not None), a row per hint after the exits: its
    VM's pid, vm, isa, reason, reason_name and count, then the hint_* columns."""
    import csv
    import io
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    extra = (CSV_LATENCY if latency else []) + (CSV_DETAIL if detail else []) + (CSV_HINT if hints is not None else [])
    if header:
        w.writerow(CSV_HEADER + extra)
    iv = "" if interval is None else interval
    for r in rows:
        d = _row_dict(r, names, latency, detail)
        line = [timestamp, iv, d["pid"], d["tid"], "" if d["vcpu"] is None else d["vcpu"], d["vm"], d["comm"],
                d["isa"], d["reason"], d["reason_name"], d["count"]]
        if latency:
            s = r.lat
            line += [round(v, 1) if isinstance(v, float) else v for v in latency_values(s)] if s \
                else [""] * len(CSV_LATENCY)
        pad = [""] * len(CSV_HINT) if hints is not None else []
        w.writerow(line + ([""] * len(CSV_DETAIL) if detail else []) + pad)
        for x in d.get("detail", ()):
            w.writerow(line + [x["kind"], x["dir"] or "", x["value"], x["name"] or "", x["count"]] + pad)
    for h in hints or ():
        r = h.row
        w.writerow([timestamp, iv, r.pid, "", "", r.vm, "", r.isa, r.reason, r.reason_name, r.count]
                   + [""] * (len(extra) - len(CSV_HINT)) + [h.rule.name, h.why, "; ".join("%s = %s" % kv for kv in h.seen),
                                                             h.fix, h.rule.source])
    for loss in counts.LOSSES:
        n = getattr(snap, loss.field)
        if n:
            w.writerow([timestamp, iv, "", "", "", "", "", "", "", loss.csv, n] + [""] * len(extra))
    return out.getvalue()
