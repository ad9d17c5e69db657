# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Aggregation and ordering of counts (pure: no I/O, no ctypes)."""
from dataclasses import dataclass

from .abi import KVMEXIT_VCPU_UNKNOWN
from .reasons import ISA_NAMES, decode

# what each view keeps of a counter's identity, besides the reason
VIEW_KEYS = {
    "all": ("tgid", "tid"),          # default: every thread
    "pid": (),                       # -p, -p -v, -t: one table of reasons
    "tids": ("tid",),                # -p -a, -T: per thread
    "full": ("tgid", "tid", "vcpu"),  # JSON, CSV, Prometheus: everything
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
    vcpu: int = KVMEXIT_VCPU_UNKNOWN
    lat: object = None   # counts.LatencyStat with --latency

    @property
    def name(self):
        return decode(self.isa, self.reason, self.flags)

    @property
    def isa_name(self):
        return ISA_NAMES.get(self.isa, str(self.isa))


def _collapse(items, keep, add):
    agg = {}
    for key, v in items:
        k = tuple(getattr(key, f) for f in keep) + (key.isa, key.reason, key.flags)
        agg[k] = add(agg[k], v) if k in agg else v
    return agg


def rows(totals, view, latency=None, top=None):
    """Collapse totals to a view's rows, sorted by count descending.

    Ties go to the higher reason code first (bcc kvmexit's order), then to
    the lower PID and TID.

    Args:
        totals: {counts.CounterKey: count} (maps.combine).
        view: a VIEW_KEYS key.
        latency: {counts.CounterKey: counts.LatencyStat} to attach to the rows, or None.
        top: keep only the first top rows.
    """
    keep = VIEW_KEYS[view]
    agg = _collapse(totals.items(), keep, lambda a, b: a + b)
    lat = _collapse(latency.items(), keep, lambda a, b: a + b) if latency else {}
    out = []
    for k, count in agg.items():
        fields = dict(zip(keep, k))
        isa, reason, flags = k[len(keep):]
        out.append(ExitCount(count, isa, reason, flags, fields.get("tgid", 0), fields.get("tid", 0),
                             fields.get("vcpu", KVMEXIT_VCPU_UNKNOWN), lat.get(k)))
    out.sort(key=lambda r: (-r.count, -r.reason, -r.isa, r.tgid, r.tid))
    return out[:top] if top else out
