# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Aggregation and ordering of counts (pure: no I/O, no ctypes)."""
from dataclasses import dataclass

from . import details
from .abi import KVMEXIT_VCPU_UNKNOWN
from .reasons import ISA_NAMES, decode

# what each view keeps of a counter's identity, besides the reason
VIEW_KEYS = {
    "all": ("tgid", "tid"),          # default: every thread
    "pid": (),                       # -p, -p -v, -t: one table of reasons
    "tids": ("tid",),                # -p -a, -T: per thread
    "vm": ("tgid",),                 # --explain: per VM
    "full": ("tgid", "tid", "vcpu"),  # JSON, CSV, Prometheus: everything
}


@dataclass(frozen=True)
class DetailCount:
    """KVM events of one kind, direction and value under a row's exits (--detail)."""
    kind: int
    dir: int
    value: int
    count: int

    @property
    def label(self):
        return details.label(self.kind, self.dir, self.value)


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
    detail: tuple = ()   # DetailCount, most first, with --detail

    @property
    def name(self):
        return decode(self.isa, self.reason, self.flags)

    @property
    def isa_name(self):
        return ISA_NAMES.get(self.isa, str(self.isa))


def _row_key(key, keep):
    """What of a CounterKey a view keeps: its row."""
    return tuple(getattr(key, f) for f in keep) + (key.isa, key.reason, key.flags)


def _collapse(items, keep, add):
    agg = {}
    for key, v in items:
        k = _row_key(key, keep)
        agg[k] = add(agg[k], v) if k in agg else v
    return agg


def _details(detail_counts, keep):
    """{row key: (DetailCount, ...)} of --detail's counts collapsed like their exits."""
    by_row = {}
    for d, n in detail_counts.items():
        row, kdv = by_row.setdefault(_row_key(d.exit, keep), {}), (d.kind, d.dir, d.value)
        row[kdv] = row.get(kdv, 0) + n
    return {k: tuple(sorted((DetailCount(*kdv, n) for kdv, n in d.items()),
                            key=lambda c: (-c.count, c.kind, c.dir, c.value))) for k, d in by_row.items()}


def rows(totals, view, latency=None, top=None, detail_counts=None):
    """Collapse totals to a view's rows, sorted by count descending.

    Ties go to the higher reason code first (bcc kvmexit's order), then to
    the lower PID and TID.

    Args:
        totals: {counts.CounterKey: count} (maps.combine).
        view: a VIEW_KEYS key.
        latency: {counts.CounterKey: counts.LatencyStat} to attach to the rows, or None.
        top: keep only the first top rows.
        detail_counts: {counts.DetailKey: count} to attach to the rows (a
            row of 0 exits holds details whose exit was not counted).
    """
    keep = VIEW_KEYS[view]
    agg = _collapse(totals.items(), keep, lambda a, b: a + b)
    lat = _collapse(latency.items(), keep, lambda a, b: a + b) if latency else {}
    det = _details(detail_counts, keep) if detail_counts else {}
    out = []
    for k in list(agg) + [k for k in det if k not in agg]:
        fields = dict(zip(keep, k))
        isa, reason, flags = k[len(keep):]
        out.append(ExitCount(agg.get(k, 0), isa, reason, flags, fields.get("tgid", 0), fields.get("tid", 0),
                             fields.get("vcpu", KVMEXIT_VCPU_UNKNOWN), lat.get(k), det.get(k, ())))
    out.sort(key=lambda r: (-r.count, -r.reason, -r.isa, r.tgid, r.tid))
    return out[:top] if top else out
