# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Reading the counters: the per-CPU combination of cache and hash (pure),
and the copies of the caches that a live read may take."""
import struct

import pytest

from kvmexit import maps, skeleton
from kvmexit.abi import kvmexit_cache, kvmexit_key
from kvmexit.counts import CounterKey
from kvmexit.errors import KvmexitError


def _key(tgid, tid, reason, vcpu=0, isa=1, flags=0):
    return bytes(kvmexit_key(tgid, tid, reason, vcpu, isa, flags))


def _cache(who=None, reasons=(), drops=0, untimed=0, undetailed=0):
    """One CPU's cache: who = (tgid, tid, vcpu, isa) owns it with reasons = [(reason, count)]."""
    c = kvmexit_cache()
    if who:
        c.owner = who[0] << 32 | who[1]
        c.key = kvmexit_key(who[0], who[1], 0, who[2], who[3], 0)
    for i, (reason, count) in enumerate(reasons):
        c.reasons[i], c.dense[reason] = reason, count
    c.nreasons, c.drops, c.untimed, c.undetailed = len(reasons), drops, untimed, undetailed
    return bytes(c)


def test_combine_takes_cached_count_over_stale_hash_value():
    ncpu = 3
    keys = _key(10, 11, 12) + _key(10, 11, 30) + _key(10, 12, 12, vcpu=1)
    values = struct.pack("<9Q", 5, 1, 0,   7, 0, 0,   0, 0, 4)
    # CPU 0's cache: tid 11 owns it, HLT (12) is now 8 there (the hash still says 5)
    caches = [_cache((10, 11, 0, 1), [(12, 8)], drops=2, undetailed=6), _cache(untimed=5),
              _cache((10, 12, 1, 1), [(12, 6)], drops=1, untimed=4, undetailed=1)]
    totals, losses = maps.combine(keys, values, ncpu, caches)
    assert totals == {(10, 11, 12, 0, 1, 0): 9, (10, 11, 30, 0, 1, 0): 7, (10, 12, 12, 1, 1, 0): 6}
    assert all(type(k) is CounterKey for k in totals) and losses == (3, 9, 7)
    assert next(iter(totals)).tid == 11


def test_combine_ignores_cache_of_other_owner_and_zero_rows():
    keys = _key(1, 2, 12) + _key(1, 3, 12)
    values = struct.pack("<4Q", 4, 0, 0, 0)
    caches = [_cache((1, 9, 0, 1), [(12, 100)]), _cache()]
    # tid 9's cached count has no hash element to correct: it is counted as cached
    assert maps.combine(keys, values, 2, caches) == ({(1, 2, 12, 0, 1, 0): 4, (1, 9, 12, 0, 1, 0): 100}, (0, 0, 0))
    assert maps.combine(keys, values, 2, [_cache(), _cache()]) == ({(1, 2, 12, 0, 1, 0): 4}, (0, 0, 0))


def test_combine_on_one_cpu_and_on_many():
    keys = b"".join(_key(7, 100 + i, 30) for i in range(50))
    one = maps.combine(keys, struct.pack("<50Q", *range(50)), 1, [_cache()])[0]
    assert one == {(7, 100 + i, 30, 0, 1, 0): i for i in range(1, 50)}
    many = maps.combine(keys, struct.pack("<3200Q", *([1] * 3200)), 64, [_cache()] * 64)[0]
    assert many == {(7, 100 + i, 30, 0, 1, 0): 64 for i in range(50)}


def test_live_read_takes_only_copies_of_one_owner(monkeypatch):
    """A CPU whose gen moved (or stood odd) during a copy is copied again:
    the read takes, per CPU, the first copy made while its gen stood still."""
    a, b, c = (_cache((1, n, 0, 1), [(12, n)]) for n in (2, 3, 4))
    torn = _cache((1, 3, 0, 1), [(12, 999)])       # a mix of two owners
    # (gens before the copy, the copy); the gens after a copy are the next entry's before
    reads = [((0, 4), [a, torn]), ((0, 5), [a, torn]), ((0, 6), [b, b]), ((2, 6), [c, c]), ((2, 6), [c, c])]

    def read_percpu(fd, size, ncpu):
        if fd == "gens":
            return struct.pack("<2Q", *reads[0][0])
        return b"".join(reads.pop(0)[1])
    monkeypatch.setattr(maps, "read_percpu", read_percpu)
    obj = skeleton.KvmExitObject.__new__(skeleton.KvmExitObject)
    obj.ncpu, obj.cache_size = 2, len(a)
    obj.obj = type("O", (), {"map_fd": staticmethod(lambda name: name)})()
    got = obj._caches()
    # CPU 0: gen 0 before and after the first copy: a.  CPU 1: 4 -> 5 (torn), 5 -> 6 (odd before),
    # 6 -> 6: the third copy, b.
    assert got == [a, b]
    assert [r[0] for r in reads] == [(2, 6), (2, 6)]     # no copy taken once every CPU had one


def test_live_read_never_takes_a_torn_copy(monkeypatch):
    """A CPU whose gen moves during every copy fails the read (a scrape
    fails, a table says why) rather than hand back a mix of two owners."""
    gens = iter(range(10 ** 6))
    monkeypatch.setattr(maps, "read_percpu",
                        lambda fd, size, ncpu: struct.pack("<2Q", 0, 2 * next(gens)) if fd == "gens"
                        else _cache() * 2)
    obj = skeleton.KvmExitObject.__new__(skeleton.KvmExitObject)
    obj.ncpu, obj.cache_size = 2, len(_cache())
    obj.obj = type("O", (), {"map_fd": staticmethod(lambda name: name)})()
    with pytest.raises(KvmexitError) as e:
        obj._caches()
    assert str(e.value) == ("cannot read CPU 1's counts consistently: its cache changed owner during %d copies "
                            "in a row; run again" % skeleton.CACHE_TRIES)
    assert next(gens) == 2 * skeleton.CACHE_TRIES
