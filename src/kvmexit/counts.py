# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a read of the counters yields (pure data, no I/O)."""
from collections import namedtuple
from dataclasses import dataclass

# one counter: a thread's exits of one reason (struct kvmexit_key's fields)
CounterKey = namedtuple("CounterKey", "tgid tid reason vcpu isa flags")


@dataclass(frozen=True)
class LatencyStat:
    """Exit-to-entry times of one counter, in ns; hist[i] counts [2^i, 2^(i+1))."""
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


@dataclass
class Snapshot:
    """Counts, and every event that was not counted, by cause."""
    totals: dict           # CounterKey -> count
    drops: int = 0         # exits not counted: the counts map was full
    latency: dict = None   # CounterKey -> LatencyStat, with --latency
    skipped: int = 0       # exits the kernel did not run the program for (BpfObject.prog_misses)
    entries_skipped: int = 0   # the same for kvm_entry (--latency): exits left without a time
    untimed: int = 0       # --latency: exits left without a time, a latency map was full

    def __sub__(self, old):
        """What happened between snapshot old and this one."""
        totals = {k: v - old.totals.get(k, 0) for k, v in self.totals.items()}
        lat = None
        if self.latency is not None:
            lat = {k: v - old.latency[k] if k in old.latency else v for k, v in self.latency.items()}
            lat = {k: v for k, v in lat.items() if v.count}
        return Snapshot({k: v for k, v in totals.items() if v}, self.drops - old.drops, lat,
                        self.skipped - old.skipped, self.entries_skipped - old.entries_skipped,
                        self.untimed - old.untimed)
