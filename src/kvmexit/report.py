# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Aggregation and ordering of counts (pure: no I/O, no ctypes)."""
from dataclasses import dataclass

from .reasons import decode

# what each view keeps of a counter's identity, besides the reason
VIEW_KEYS = {
    "all": ("tgid", "tid"),      # default: every thread
    "pid": (),                   # -p, -p -v, -t: one table of reasons
    "tids": ("tid",),            # -p -a, -T: per thread
}


@dataclass(frozen=True)
class ExitCount:
    """One row: exits of one reason, summed over what the view collapses."""
    count: int
    isa: int
    reason: int
    flags: int = 0
    tgid: int = 0
    tid: int = 0
    vcpu: int = 0

    @property
    def name(self):
        return decode(self.isa, self.reason, self.flags)


def rows(totals, view):
    """Collapse totals to a view's rows, sorted by count descending.

    Ties go to the higher reason code first (bcc kvmexit's order), then to
    the lower PID and TID.

    Args:
        totals: {(tgid, tid, reason, vcpu, isa, flags): count} (maps.combine).
        view: a VIEW_KEYS key.
    """
    keep = VIEW_KEYS[view]
    agg = {}
    for (tgid, tid, reason, vcpu, isa, flags), count in totals.items():
        ident = {"tgid": tgid, "tid": tid}
        k = tuple(ident[f] for f in keep) + (isa, reason, flags)
        agg[k] = agg.get(k, 0) + count
    out = []
    for k, count in agg.items():
        fields = dict(zip(keep, k))
        isa, reason, flags = k[len(keep):]
        out.append(ExitCount(count, isa, reason, flags, fields.get("tgid", 0), fields.get("tid", 0)))
    out.sort(key=lambda r: (-r.count, -r.reason, -r.isa, r.tgid, r.tid))
    return out
