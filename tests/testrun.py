# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""BPF_PROG_TEST_RUN harness: fake vendor vCPU structs in kernel memory,
kvm_exit.bpf.o's raw_tp programs run on them from real threads, relocated
against other kernels' BTF (one file merged from vmlinux and a module)."""
import ctypes as ct
import os
import queue
import threading
from pathlib import Path

from kernels.corpus import HDR, MAGIC, sections
from kvmexit import _libbpf
from kvmexit.arch import X86
from kvmexit.bpfobject import BpfObject
from kvmexit.skeleton import CORE_OBJECT, Filter, KvmExitObject

FAKEMEM = Path(__file__).resolve().parents[1] / "build" / "fakemem.bpf.o"
FAKE_SIZE = 16384


class FakeMem:
    """Four 16 KiB elements of kernel memory whose addresses are known."""

    def __init__(self):
        self.obj = BpfObject(FAKEMEM.read_bytes(), "fakemem")
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


def core(prog, btf_path=None, filt=Filter(), max_entries=64, entry=None, detail=False):
    """kvm_exit.bpf.o (kvm_exit_direct.bpf.o for a *_direct program) loaded for
    test runs of prog, CO-RE relocated against btf_path."""
    obj = X86.direct_object if prog.endswith("_direct") else CORE_OBJECT
    return KvmExitObject(obj, prog, entry, filt, max_entries, True, btf_path, detail)


def counts(obj):
    """(totals, drops) of a KvmExitObject read now."""
    snap = obj.read()
    return snap.totals, snap.drops


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


# -- one standalone BTF file from a module's split BTF on its base ----------
# libbpf's btf_custom_path reads exactly one file and no module BTF.  Type
# ids and string offsets stay as they are: split ids follow the base's last
# id, and split string offsets follow the base's strings.
def merge_split(base_path, split_path, out_path):
    version, flags, base_types, base_strs = sections(Path(base_path).read_bytes())
    _, _, split_types, split_strs = sections(Path(split_path).read_bytes())
    types, strs = base_types + split_types, base_strs + split_strs
    hdr = HDR.pack(MAGIC, version, flags, HDR.size, 0, len(types), len(types), len(strs))
    with open(out_path, "wb") as f:
        f.write(hdr + types + strs)
    return out_path
