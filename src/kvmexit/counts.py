# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a read of the counters yields (pure data, no I/O)."""
import math
from collections import namedtuple
from dataclasses import dataclass

from .abi import KVMEXIT_LAT_SHIFT, KVMEXIT_LAT_SLOTS, KVMEXIT_LAT_SUB

# one counter: a thread's exits of one reason (struct kvmexit_key's fields)
CounterKey = namedtuple("CounterKey", "tgid tid reason vcpu isa flags")
# --detail: one counter of KVM events (struct kvmexit_detail_key); exit is
# the CounterKey of the exit they came under
DetailKey = namedtuple("DetailKey", "exit kind dir value")


def lat_slot(ns):
    """The histogram slot of ns (lat_slot() of kvm_exit.bpf.c)."""
    if ns < KVMEXIT_LAT_SUB:
        return ns
    k = ns.bit_length() - 1
    slot = (k - KVMEXIT_LAT_SHIFT + 1) * KVMEXIT_LAT_SUB + (ns >> (k - KVMEXIT_LAT_SHIFT) & (KVMEXIT_LAT_SUB - 1))
    return min(slot, KVMEXIT_LAT_SLOTS - 1)


def slot_bounds(slot):
    """[lo, hi) in ns of a histogram slot; the last one's hi is infinite."""
    if slot < KVMEXIT_LAT_SUB:
        return slot, slot + 1
    shift = slot // KVMEXIT_LAT_SUB - 1
    lo = (KVMEXIT_LAT_SUB + slot % KVMEXIT_LAT_SUB) << shift
    return lo, lo + (1 << shift) if slot < KVMEXIT_LAT_SLOTS - 1 else math.inf


# a percentile is its bucket's middle: off by at most half the bucket's
# width, 1/(2 SUB) of its low end, so of the true value (12.5%)
PERCENTILE_ERROR = 1 / (2 * KVMEXIT_LAT_SUB)
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LatencyStat:
    """Exit-to-entry times of one counter, in ns; hist[s] counts slot s
    (slot_bounds(s): log-linear, KVMEXIT_LAT_SUB buckets per power of two)."""
    count: int
    total_ns: int
    min_ns: int
    max_ns: int
    hist: tuple

    def __add__(self, o):
        return LatencyStat(self.count + o.count, self.total_ns + o.total_ns, min(self.min_ns, o.min_ns),
                           max(self.max_ns, o.max_ns), tuple(a + b for a, b in zip(self.hist, o.hist)))

    def __sub__(self, o):
        """The interval since snapshot o (min and max stay this snapshot's)."""
        return LatencyStat(self.count - o.count, self.total_ns - o.total_ns, self.min_ns, self.max_ns,
                           tuple(a - b for a, b in zip(self.hist, o.hist)))

    @property
    def avg_ns(self):
        return self.total_ns / self.count if self.count else 0.0

    def percentile(self, p):
        """The p-th percentile in ns (the nearest-rank sample's bucket
        middle, within PERCENTILE_ERROR of it), kept within [min, max]; 0
        without samples."""
        if not self.count:
            return 0
        rank, seen = max(1, math.ceil(self.count * p / 100)), 0
        for slot, n in enumerate(self.hist):
            seen += n
            if seen >= rank:
                break
        lo, hi = slot_bounds(slot)
        mid = lo if hi - lo <= 1 or hi == math.inf else (lo + hi) / 2
        return min(max(mid, self.min_ns), self.max_ns)

    def log2_hist(self):
        """The histogram in bcc's log2 slots: [2^i, 2^(i+1)) (0 in slot 0)."""
        out = [0] * 64
        for slot, n in enumerate(self.hist):
            if n:
                lo = slot_bounds(slot)[0]
                out[max(lo.bit_length() - 1, 0)] += n
        while out and not out[-1]:
            out.pop()
        return out


@dataclass(frozen=True)
class Loss:
    """One cause of events not counted or not timed, as every format names it."""
    field: str        # the Snapshot field
    option: str       # the option that brings it ("latency", "detail"), None: always there
    cause: str        # kvmexit_dropped_exits_total's cause label
    csv: str          # the CSV row's name


# every loss a Snapshot carries, in the order every format lists them
LOSSES = (Loss("drops", None, "map_full", "DROPPED"), Loss("skipped", None, "skipped", "SKIPPED"),
          Loss("entries_skipped", "latency", "entries_skipped", "ENTRIES_SKIPPED"),
          Loss("untimed", "latency", "untimed", "UNTIMED"),
          Loss("undetailed", "detail", "undetailed", "UNDETAILED"),
          Loss("details_skipped", "detail", "details_skipped", "DETAILS_SKIPPED"))


def losses_of(latency, detail):
    """The losses the options in use bring."""
    return [l for l in LOSSES if l.option is None or (l.option == "latency" and latency)
            or (l.option == "detail" and detail)]


@dataclass
class Snapshot:
    """Counts, and every event that was not counted, by cause (LOSSES)."""
    totals: dict           # CounterKey -> count
    drops: int = 0         # exits not counted: the counts map was full
    latency: dict = None   # CounterKey -> LatencyStat, with --latency
    skipped: int = 0       # exits the kernel did not run the program for (BpfObject.prog_misses)
    entries_skipped: int = 0   # the same for kvm_entry (--latency): exits left without a time
    untimed: int = 0       # --latency: exits left without a time, a latency map was full
    details: dict = None   # DetailKey -> count, with --detail
    undetailed: int = 0    # --detail: events not counted, the details map was full
    details_skipped: int = 0   # --detail: KVM events the kernel did not run the detail programs for

    def __sub__(self, old):
        """What happened between snapshot old and this one."""
        totals = {k: v - old.totals.get(k, 0) for k, v in self.totals.items()}
        lat = None
        if self.latency is not None:
            lat = {k: v - old.latency[k] if k in old.latency else v for k, v in self.latency.items()}
            lat = {k: v for k, v in lat.items() if v.count}
        details = None
        if self.details is not None:
            details = {k: v - (old.details or {}).get(k, 0) for k, v in self.details.items()}
            details = {k: v for k, v in details.items() if v}
        return Snapshot({k: v for k, v in totals.items() if v}, self.drops - old.drops, lat,
                        self.skipped - old.skipped, self.entries_skipped - old.entries_skipped,
                        self.untimed - old.untimed, details, self.undetailed - old.undetailed,
                        self.details_skipped - old.details_skipped)
