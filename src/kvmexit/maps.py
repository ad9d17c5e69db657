# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Reading the maps: the syscalls (one batched copy per map), and pure
functions that decode what they copied, in bulk (struct.iter_unpack and
memoryview casts: no ctypes object per key).

Per CPU, a (thread, reason) pair is counted either in that CPU's cache
(while the thread owns it and the reason sits there) or in the hash, never
both; each holds the cumulative count.  A reader takes, per CPU, a copy of
the cache that is of one owner (its gen the same and even before and after
the copy), and only then the hash: every total is then at least what the
previous read saw, even while the programs run (a cached count is at least
the hash value it was loaded from, and a write-back after the copy only
raises the hash value read later).
"""
import ctypes as ct
import errno
import itertools
import operator
import struct

from . import _libbpf
from .abi import KVMEXIT_CACHE_REASONS, KVMEXIT_LAT_SLOTS, kvmexit_cache, kvmexit_detail_key, kvmexit_key, kvmexit_lat
from .counts import CounterKey, DetailKey, LatencyStat
from .errors import LibbpfError

KEY = struct.Struct("<IIIHBB")
KEY_SIZE = KEY.size
CACHE_SIZE = ct.sizeof(kvmexit_cache)  # a multiple of 8, as per-CPU values are laid out
LAT_SIZE = ct.sizeof(kvmexit_lat)
# struct kvmexit_cache up to its reasons[], then where dense[] starts
CACHE_HEAD = struct.Struct("<Q%ssQQQI%dH" % (KEY_SIZE, KVMEXIT_CACHE_REASONS))
DENSE_OFF = kvmexit_cache.dense.offset
LAT = struct.Struct("<4Q%dQ" % KVMEXIT_LAT_SLOTS)
DETAIL_KEY = struct.Struct("<IIIHBBQII")     # struct kvmexit_detail_key
ENOTSUPP = 524  # the kernel's internal "operation not supported", seen by userspace
# the formats are the contract's (abi.py mirrors kvm_exit.h; tests/test_objects.py checks it against the object)
assert KEY.size == ct.sizeof(kvmexit_key) and DETAIL_KEY.size == ct.sizeof(kvmexit_detail_key)
assert CACHE_HEAD.size == kvmexit_cache.reasons.offset + kvmexit_cache.reasons.size <= DENSE_OFF
assert LAT.size == LAT_SIZE


def possible_cpus():
    """Possible CPUs (not online ones): the per-CPU value count of every map."""
    return _libbpf.load().libbpf_num_possible_cpus()


def read_percpu(fd, value_size, ncpu):
    """Element 0 of a per-CPU array: ncpu values (each padded to 8 bytes) as bytes (one syscall)."""
    buf = ct.create_string_buffer(value_size * ncpu)
    zero = ct.c_uint32(0)
    _libbpf.load().bpf_map_lookup_elem(fd, ct.byref(zero), buf)
    return buf.raw


def read_hash(fd, value_size, max_entries, key_size=KEY_SIZE):
    """All entries of a hash (keys struct kvmexit_key unless key_size says otherwise), as (keys, values) bytes.

    Uses BPF_MAP_LOOKUP_BATCH (kernel 5.6+) and falls back to one lookup
    per key where batching is not supported.  value_size: the whole value
    as userspace sees it (a per-CPU value: 8-byte aligned size x CPUs).
    """
    lib = _libbpf.load()
    chunk = max(1, min(max_entries, 4096))
    kbuf = ct.create_string_buffer(key_size * chunk)
    vbuf = ct.create_string_buffer(value_size * chunk)
    token = ct.create_string_buffer(key_size)
    opts = _libbpf.bpf_map_batch_opts(sz=ct.sizeof(_libbpf.bpf_map_batch_opts))
    keys, values = [], []
    in_batch = None
    while True:
        count = ct.c_uint32(chunk)
        rc = lib.bpf_map_lookup_batch(fd, in_batch, token, kbuf, vbuf, ct.byref(count), ct.byref(opts))
        err = -rc if rc < 0 else 0
        if err and err != errno.ENOENT:
            if in_batch is None and err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                return _read_hash_by_key(fd, value_size, key_size)
            raise LibbpfError(err, "bpf_map_lookup_batch")
        n = count.value
        keys.append(kbuf.raw[:key_size * n])
        values.append(vbuf.raw[:value_size * n])
        if err == errno.ENOENT:
            break
        in_batch = token
    return b"".join(keys), b"".join(values)


def _read_hash_by_key(fd, value_size, key_size):
    lib = _libbpf.load()
    keys, values = [], []
    prev, cur = None, ct.create_string_buffer(key_size)
    vbuf = ct.create_string_buffer(value_size)
    while lib.bpf_map_get_next_key(fd, prev, cur) == 0:
        try:
            lib.bpf_map_lookup_elem(fd, cur, vbuf)
        except LibbpfError as e:
            if e.errno != errno.ENOENT:
                raise
        else:
            keys.append(cur.raw)
            values.append(vbuf.raw)
        prev = ct.create_string_buffer(cur.raw, key_size)
    return b"".join(keys), b"".join(values)


def cached_counts(cache):
    """What one CPU's cache holds (pure).

    Args:
        cache: one CPU's struct kvmexit_cache.
    Returns:
        ([(CounterKey, count)], (drops, untimed, undetailed))
    """
    owner, key, drops, untimed, undetailed, n, *reasons = CACHE_HEAD.unpack_from(cache)
    losses = (drops, untimed, undetailed)
    if not owner:
        return [], losses
    tgid, tid, _, vcpu, isa, _ = KEY.unpack(key)
    return [(CounterKey(tgid, tid, r, vcpu, isa, 0), struct.unpack_from("<Q", cache, DENSE_OFF + 8 * r)[0])
            for r in reasons[:min(n, KVMEXIT_CACHE_REASONS)]], losses


def decode_keys(keys, known=None):
    """The CounterKeys of n packed struct kvmexit_key (pure but for known).

    known: a dict kept by a live reader, updated in place.  Read after
    read the hash holds the same keys in the same order (it changes only
    when a key is added): the last read's keys are reused then, and a new
    key's neighbours are found among those decoded before.
    """
    if known is None:
        return list(map(tuple.__new__, itertools.repeat(CounterKey), KEY.iter_unpack(keys)))
    last = known.get(None)
    if last is not None and last[0] == keys:
        return last[1]
    words = memoryview(keys).cast("Q")
    out = list(map(known.get, zip(words[0::2], words[1::2])))
    if None in out:
        for i, k in enumerate(out):
            if k is None:
                out[i] = known[(words[2 * i], words[2 * i + 1])] = CounterKey._make(
                    KEY.unpack_from(keys, i * KEY_SIZE))
    known[None] = (keys, out)
    return out


def combine(keys, values, ncpu, caches, known=None):
    """Sum the per-CPU counts, taking cached counts over stale hash values (pure but for known).

    Args:
        keys: n packed struct kvmexit_key.
        values: n * ncpu little-endian u64, key-major.
        ncpu: possible CPUs.
        caches: ncpu packed struct kvmexit_cache, one per CPU.
        known: decode_keys()' cache of decoded keys, or None.
    Returns:
        ({CounterKey: total}, (drops, untimed, undetailed)): the losses
        summed over the caches (struct kvmexit_cache says what each counts).
    """
    vals = memoryview(values).cast("Q")
    if ncpu <= 8:
        sums = vals[0::ncpu]
        for cpu in range(1, ncpu):
            sums = map(operator.add, sums, vals[cpu::ncpu])
    else:
        sums = map(sum, zip(*(vals[cpu::ncpu] for cpu in range(ncpu))))
    sums = list(sums)
    # a key's hash values are all 0 while a cache holds its count (rare): left out
    totals = dict(itertools.compress(zip(decode_keys(keys, known), sums), sums))
    losses, cached = (0, 0, 0), []
    for cpu, cache in enumerate(caches):
        counts, lost = cached_counts(cache)
        losses = tuple(map(operator.add, losses, lost))
        cached += [(cpu, k, n) for k, n in counts]
    for cpu, k, n in cached:
        i = _position(keys, k, len(cached))
        totals[k] = totals.get(k, 0) + n - (vals[i * ncpu + cpu] if i is not None else 0)
    return totals, losses


def _position(keys, k, lookups, _index={}):
    """Where key k is among the packed keys, or None.  A few lookups scan
    the bytes; many (many CPUs) build an index once per keys buffer."""
    packed = KEY.pack(*k)
    if lookups <= 64:
        at = keys.find(packed)
        while at >= 0 and at % KEY_SIZE:
            at = keys.find(packed, at + 1)
        return at // KEY_SIZE if at >= 0 else None
    if _index.get("keys") is not keys:
        _index.clear()
        _index["keys"] = keys
        _index.update((keys[i:i + KEY_SIZE], i // KEY_SIZE) for i in range(0, len(keys), KEY_SIZE))
    return _index.get(packed)


def latency_stats(keys, values):
    """The latency map's entries (pure).

    Returns:
        {CounterKey: LatencyStat}
    """
    out = {}
    for k, v in zip(decode_keys(keys), LAT.iter_unpack(values)):
        if v[0]:
            out[k] = LatencyStat(v[0], v[1], v[2], v[3], v[4:])
    return out


def detail_counts(keys, values):
    """The details map's entries (pure).

    Returns:
        {DetailKey: count}
    """
    counts = memoryview(values).cast("Q")
    return {DetailKey(CounterKey(*k[:6]), k[7], k[8], k[6]): n
            for k, n in zip(DETAIL_KEY.iter_unpack(keys), counts) if n}
