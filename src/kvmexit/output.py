# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Text output in bcc kvmexit's exact format (pure: rows -> str)."""

REASON_HEADER = "KVM_EXIT_REASON"

# view -> (header prefix, row format)
TABLES = {
    "all": ("PID      TID      ", lambda r: "%-8u %-8u %-35s %-8u" % (r.tgid, r.tid, r.name, r.count)),
    "pid": ("", lambda r: "%-35s %-8u" % (r.name, r.count)),
    "tids": (None, lambda r: "%-8u %-35s %-8u" % (r.tid, r.name, r.count)),
}


def banner(context, duration):
    """The first line, printed once tracing has started."""
    tail = " after sleeping %d secs." % duration if duration is not None else "... Hit Ctrl-C to end."
    return "Display kvm exit reasons and statistics for %s%s" % (context, tail)


def table(view, rows, tids_prefix="TID      "):
    """Header and rows.  tids_prefix: "TID      " for -p -a, "TIDS     " for -T."""
    prefix, fmt = TABLES[view]
    if prefix is None:
        prefix = tids_prefix
    lines = ["%s%-35s %s" % (prefix, REASON_HEADER, "COUNT")]
    lines.extend(fmt(r) for r in rows)
    return "\n".join(lines)


def drops_footer(drops, max_entries):
    return ("Dropped %d exits: the counts map (%d entries) was full; raise --max-entries"
            % (drops, max_entries))
