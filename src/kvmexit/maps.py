# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Reading the counts: per-CPU map reads (syscalls) and one pure function
that combines the per-CPU cache with the per-CPU hash.

Per CPU, a (thread, reason) pair is counted either in its cache slot (while
that thread owns the CPU's cache and the reason has a slot) or in the hash,
never both; each holds the cumulative count.  Reading the cache before the
hash keeps every total monotonic even while the programs run: a slot seen
in the cache snapshot is at least the hash value it was loaded from, and an
eviction after the snapshot only raises the hash value read later.
"""
import ctypes as ct
import errno
from dataclasses import dataclass

from . import _libbpf
from .abi import kvmexit_cache, kvmexit_key, kvmexit_lat
from .errors import LibbpfError

KEY_SIZE = ct.sizeof(kvmexit_key)
CACHE_SIZE = ct.sizeof(kvmexit_cache)  # a multiple of 8, as per-CPU values are laid out
LAT_SIZE = ct.sizeof(kvmexit_lat)
ENOTSUPP = 524  # the kernel's internal "operation not supported", seen by userspace


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


def possible_cpus():
    """Possible CPUs (not online ones): the per-CPU value count of every map."""
    return _libbpf.load().libbpf_num_possible_cpus()


def read_cache(fd, ncpu):
    """The cache's per-CPU values as raw bytes (one syscall)."""
    buf = ct.create_string_buffer(CACHE_SIZE * ncpu)
    zero = ct.c_uint32(0)
    _libbpf.load().bpf_map_lookup_elem(fd, ct.byref(zero), buf)
    return buf.raw


def read_counts(fd, ncpu, max_entries):
    """All (key, per-CPU u64 values) of the counts hash as two byte strings.

    Returns:
        (keys, values): n * KEY_SIZE bytes and n * ncpu * 8 bytes.
    """
    return read_hash(fd, 8 * ncpu, max_entries)


def read_hash(fd, value_size, max_entries):
    """All entries of a hash keyed by struct kvmexit_key, as (keys, values) bytes.

    Uses BPF_MAP_LOOKUP_BATCH (kernel 5.6+) and falls back to one lookup
    per key where batching is not supported.  value_size: the whole value
    as userspace sees it (a per-CPU value: 8-byte aligned size x CPUs).
    """
    lib = _libbpf.load()
    chunk = max(1, min(max_entries, 4096))
    kbuf = ct.create_string_buffer(KEY_SIZE * chunk)
    vbuf = ct.create_string_buffer(value_size * chunk)
    token = ct.create_string_buffer(KEY_SIZE)
    opts = _libbpf.bpf_map_batch_opts(sz=ct.sizeof(_libbpf.bpf_map_batch_opts))
    keys, values = [], []
    in_batch = None
    while True:
        count = ct.c_uint32(chunk)
        rc = lib.bpf_map_lookup_batch(fd, in_batch, token, kbuf, vbuf, ct.byref(count), ct.byref(opts))
        err = -rc if rc < 0 else 0
        if err and err != errno.ENOENT:
            if in_batch is None and err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                return _read_hash_by_key(fd, value_size)
            raise LibbpfError(err, "bpf_map_lookup_batch")
        n = count.value
        keys.append(kbuf.raw[:KEY_SIZE * n])
        values.append(vbuf.raw[:value_size * n])
        if err == errno.ENOENT:
            break
        in_batch = token
    return b"".join(keys), b"".join(values)


def _read_hash_by_key(fd, value_size):
    lib = _libbpf.load()
    keys, values = [], []
    prev, cur = None, ct.create_string_buffer(KEY_SIZE)
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
        prev = ct.create_string_buffer(cur.raw, KEY_SIZE)
    return b"".join(keys), b"".join(values)


def combine(keys, values, ncpu, cache):
    """Sum the per-CPU counts, taking cached slots over stale hash values.

    Args:
        keys: n packed struct kvmexit_key.
        values: n * ncpu little-endian u64, key-major.
        ncpu: possible CPUs.
        cache: ncpu packed struct kvmexit_cache.
    Returns:
        ({(tgid, tid, reason, vcpu, isa, flags): total}, drops)
    """
    vals = memoryview(values).cast("Q")
    # per-CPU cache corrections: key -> [(cpu, cached count)]
    cached = {}
    drops = 0
    for cpu in range(ncpu):
        c = kvmexit_cache.from_buffer_copy(cache, cpu * CACHE_SIZE)
        drops += c.drops
        if not c.key.isa:
            continue
        k = c.key
        for s in c.slots[:min(c.nslots, len(c.slots))]:
            ident = (k.tgid, k.tid, s.tag & 0xFFFFFFFF, k.vcpu, k.isa, (s.tag >> 32) & 0xFF)
            cached.setdefault(ident, []).append((cpu, s.count))
    totals = {}
    kv = memoryview(keys)
    unpack = kvmexit_key.from_buffer_copy
    for i in range(len(keys) // KEY_SIZE):
        k = unpack(kv, i * KEY_SIZE)
        ident = (k.tgid, k.tid, k.reason, k.vcpu, k.isa, k.flags)
        row = vals[i * ncpu:(i + 1) * ncpu]
        total = sum(row)
        for cpu, count in cached.get(ident, ()):
            total += count - row[cpu]
        if total:
            totals[ident] = totals.get(ident, 0) + total
    return totals, drops


def latency_stats(keys, values):
    """The latency map's entries (pure).

    Returns:
        {(tgid, tid, reason, vcpu, isa, flags): LatencyStat}
    """
    out = {}
    for i in range(len(keys) // KEY_SIZE):
        k = kvmexit_key.from_buffer_copy(keys, i * KEY_SIZE)
        v = kvmexit_lat.from_buffer_copy(values, i * LAT_SIZE)
        if v.count:
            out[(k.tgid, k.tid, k.reason, k.vcpu, k.isa, k.flags)] = LatencyStat(
                v.count, v.total_ns, v.min_ns, v.max_ns, tuple(v.hist))
    return out
