# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""BPF_PROG_TEST_RUN harness: fake vendor vCPU structs in kernel memory,
kvm_exit.bpf.o's raw_tp programs run on them from real threads."""
import ctypes as ct
import os
import queue
import threading
from pathlib import Path

from kvmexit import _libbpf, maps
from kvmexit.abi import MAP_CACHE, MAP_COUNTS, MAP_LATENCY, MAP_PENDING
from kvmexit.bpf import CORE_OBJECT, BpfObject, object_bytes
from kvmexit.tracer import CORE_PROGRAMS, Filter

FAKEMEM = Path(__file__).resolve().parents[1] / "build" / "fakemem.bpf.o"
FAKE_SIZE = 16384


class FakeMem:
    """Four 16 KiB elements of kernel memory whose addresses are known."""

    def __init__(self):
        self.obj = BpfObject(FAKEMEM.read_bytes())
        self.obj.load()
        self.obj.test_run("leak_addrs", [0])
        lib = _libbpf.load()
        self.addrs = []
        for i in range(4):
            k, v = ct.c_uint32(i), ct.c_uint64()
            lib.bpf_map_lookup_elem(self.obj.map_fd("addrs"), ct.byref(k), ct.byref(v))
            self.addrs.append(v.value)
        assert all(self.addrs) and len(set(self.addrs)) == 4

    def write(self, elem, fields):
        """Fill one element: fields = {offset: bytes}, zero elsewhere."""
        buf = bytearray(FAKE_SIZE)
        for off, raw in fields.items():
            buf[off:off + len(raw)] = raw
        k = ct.c_uint32(elem)
        data = (ct.c_char * FAKE_SIZE).from_buffer(buf)
        _libbpf.load().bpf_map_update_elem(self.obj.map_fd("mem"), ct.byref(k), data, 0)

    def close(self):
        self.obj.close()


class KvmExitObject:
    """kvm_exit.bpf.o loaded for test runs, CO-RE relocated against btf_path."""

    def __init__(self, prog, btf_path=None, filt=Filter(), max_entries=64, tp_has_vcpu_id=True, also=()):
        self.prog = prog
        self.obj = BpfObject(object_bytes(CORE_OBJECT), btf_custom_path=btf_path)
        self.obj.autoload_only({prog, *also}, CORE_PROGRAMS)
        for m in (MAP_COUNTS, MAP_PENDING, MAP_LATENCY):
            self.obj.set_max_entries(m, max_entries)
        self.obj.set_rodata(filt.rodata(tp_has_vcpu_id))
        self.obj.load()
        self.max_entries = max_entries

    def run(self, *args):
        return self.obj.test_run(self.prog, list(args))

    def run_prog(self, prog, *args):
        return self.obj.test_run(prog, list(args))

    def read_latency(self):
        keys, values = maps.read_hash(self.obj.map_fd(MAP_LATENCY), maps.LAT_SIZE, self.max_entries)
        return maps.latency_stats(keys, values)

    def read(self):
        ncpu = maps.possible_cpus()
        cache = maps.read_cache(self.obj.map_fd(MAP_CACHE), ncpu)
        keys, values = maps.read_counts(self.obj.map_fd(MAP_COUNTS), ncpu, self.max_entries)
        return maps.combine(keys, values, ncpu, cache)

    def close(self):
        self.obj.close()


class Worker:
    """A thread of its own (its own TID), pinned to one CPU, running calls."""

    def __init__(self, cpu):
        self.cpu = cpu
        self._q = queue.Queue()
        self._done = queue.Queue()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        self.tid = self.call(threading.get_native_id)

    def _loop(self):
        os.sched_setaffinity(0, {self.cpu})
        while True:
            fn = self._q.get()
            if fn is None:
                return
            try:
                self._done.put((True, fn()))
            except Exception as e:  # handed back to the caller
                self._done.put((False, e))

    def call(self, fn):
        self._q.put(fn)
        ok, val = self._done.get(timeout=30)
        if not ok:
            raise val
        return val

    def move(self, cpu):
        self.cpu = cpu
        return self.call(lambda: os.sched_setaffinity(0, {cpu}))

    def stop(self):
        self._q.put(None)
        self._t.join()
