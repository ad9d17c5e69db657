# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A libbpf object over the ctypes binding: open -> configure -> load ->
attach -> close.  What the object holds (programs, maps, .rodata
variables, value sizes) is read from the object itself, never listed by
hand.  close() detaches every link and frees the object; it is idempotent,
and use after close is a clear error.  Only this module and maps.py call
_libbpf.
"""
import ctypes as ct
import pkgutil
import struct

from . import _libbpf
from .errors import KvmexitError

# struct bpf_prog_info (uapi, append-only): jited/xlated_prog_len @16/@20, run_time_ns @192, run_cnt @200,
# recursion_misses @208 (Linux 5.12+; older kernels leave it 0)
_PROG_INFO_LENS = 16      # jited_prog_len, xlated_prog_len
_PROG_INFO_RUN_TIME = 192
_PROG_INFO_MISSES = 208
_PROG_INFO_SIZE = 216


def package_object(name):
    """A shipped object's bytes (works from a wheel, a zipapp or the tree)."""
    try:
        data = pkgutil.get_data("kvmexit", "bpf/" + name)
    except OSError:
        data = None
    if not data:
        raise KvmexitError("BPF object %s is missing from the kvmexit package: "
                           "build it with 'make' (needs clang) or reinstall kvmexit" % name)
    return data


class BpfObject:
    """One opened (then loaded) BPF object.

    Args:
        data: the ELF bytes.
        name: the object name (internal maps are "<name>.rodata" etc.).
        btf_custom_path: BTF file to use for CO-RE instead of the kernel's
            (tests use it to relocate against other kernels' layouts).
    """

    def __init__(self, data, name, btf_custom_path=None):
        self._lib = lib = _libbpf.load()
        self._data = ct.create_string_buffer(data, len(data))  # kept alive with the object
        self.name = name
        opts = _libbpf.bpf_object_open_opts()
        opts.object_name = name.encode()
        if lib.version[:3] == (1, 0, 0):
            # 1.0.0 shifted the fields after pin_root_path (b3a11777)
            opts.sz = _libbpf.bpf_object_open_opts.kconfig.offset
            if btf_custom_path:
                raise KvmexitError("libbpf 1.0.0 cannot take btf_custom_path here; use libbpf 1.0.1 or newer")
        else:
            opts.sz = ct.sizeof(opts)
            if btf_custom_path:
                opts.btf_custom_path = str(btf_custom_path).encode()
        self._ptr = lib.bpf_object__open_mem(self._data, len(data), ct.byref(opts))
        self._links = []
        self.programs = self._each(lib.bpf_object__next_program, lib.bpf_program__next, lib.bpf_program__name)
        self.maps = self._each(lib.bpf_object__next_map, lib.bpf_map__next, lib.bpf_map__name)

    def _each(self, next_new, next_old, name_of):
        """{name: pointer} of the object's programs or maps (libbpf 0.6+ iterator, else 0.5's)."""
        out, cur = {}, None
        while True:
            cur = next_new(self._ptr, cur) if next_new is not None else next_old(cur, self._ptr)
            if not cur:
                return out
            out[name_of(cur).decode()] = cur

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _obj(self):
        if not self._ptr:
            raise KvmexitError("BPF object used after close")
        return self._ptr

    def close(self):
        """Detach every link, then free the object (and its kernel maps and programs)."""
        self.detach()
        if self._ptr:
            self._lib.bpf_object__close(self._ptr)
            self._ptr = None

    # -- configure (before load) ------------------------------------------
    def load_only(self, names):
        """Mark exactly the programs in names to be loaded."""
        unknown = set(names) - set(self.programs)
        if unknown:
            raise KvmexitError("BPF object %s has no program %s" % (self.name, ", ".join(sorted(unknown))))
        for n, prog in self.programs.items():
            self._lib.bpf_program__set_autoload(prog, n in names)

    def set_max_entries(self, map_name, n):
        self._lib.bpf_map__set_max_entries(self.maps[map_name], n)

    def _rodata_map(self):
        # "<name>.rodata", truncated on some libbpf versions: match the suffix
        return next(m for n, m in self.maps.items() if n.endswith(".rodata"))

    def rodata_layout(self):
        """{variable: (offset, size)} of .rodata, from the object's BTF DATASEC."""
        lib = self._lib
        btf = lib.bpf_object__btf(self._obj())
        if not btf:
            raise KvmexitError("BPF object has no BTF: rebuild it with clang -g")
        tid = lib.btf__find_by_name_kind(btf, b".rodata", _libbpf.BTF_KIND_DATASEC)
        if tid < 0:
            return {}
        t = lib.btf__type_by_id(btf, tid)
        base = ct.addressof(t.contents) + ct.sizeof(_libbpf.btf_type)
        secinfo = (_libbpf.btf_var_secinfo * t.contents.vlen).from_address(base)
        layout = {}
        for v in secinfo:
            name = lib.btf__name_by_offset(btf, lib.btf__type_by_id(btf, v.type).contents.name_off)
            layout[name.decode()] = (v.offset, v.size)
        return layout

    def set_rodata(self, values):
        """Write const volatile globals before load (what a skeleton does).

        Args:
            values: {name: int or bool}, or {name: bytes} of exactly the variable's size.
        """
        layout = self.rodata_layout()
        size = ct.c_size_t()
        base = self._lib.bpf_map__initial_value(self._rodata_map(), ct.byref(size))
        for name, value in values.items():
            off, sz = layout[name]
            raw = value if isinstance(value, bytes) else int(value).to_bytes(sz, "little")
            if len(raw) != sz:
                raise ValueError("%s takes %d bytes, got %d" % (name, sz, len(raw)))
            ct.memmove(base + off, raw, sz)

    # -- load, attach, detach ---------------------------------------------
    def load(self):
        self._lib.bpf_object__load(self._obj())

    def attach(self, prog_name, kind, tp_name, category="kvm"):
        """Attach one program: kind tp_btf, kprobe (where its section says), raw_tp or tracepoint.

        libbpf 0.8 - 1.0.x reports EOPNOTSUPP from generic attach on raw_tp
        (fixed by eb77c721): raw_tp and tracepoint use the explicit calls.
        """
        prog = self.programs[prog_name]
        if kind in ("tp_btf", "kprobe"):
            ptr = self._lib.bpf_program__attach(prog)
        elif kind == "raw_tp":
            ptr = self._lib.bpf_program__attach_raw_tracepoint(prog, tp_name.encode())
        else:
            ptr = self._lib.bpf_program__attach_tracepoint(prog, category.encode(), tp_name.encode())
        self._links.append(ptr)

    def detach(self):
        """Destroy every link: the programs stop running, the maps stay readable."""
        for link in self._links:
            self._lib.bpf_link__destroy(link)
        self._links = []

    # -- file descriptors and sizes ----------------------------------------
    def prog_fd(self, name):
        return self._lib.bpf_program__fd(self.programs[name])

    def map_fd(self, name):
        return self._lib.bpf_map__fd(self.maps[name])

    def key_size(self, name):
        return self._lib.bpf_map__key_size(self.maps[name])

    def value_size(self, name):
        return self._lib.bpf_map__value_size(self.maps[name])

    # -- inspection ----------------------------------------------------------
    def _prog_info(self, prog_name):
        info = ct.create_string_buffer(_PROG_INFO_SIZE)
        size = ct.c_uint32(_PROG_INFO_SIZE)
        self._lib.bpf_obj_get_info_by_fd(self.prog_fd(prog_name), info, ct.byref(size))
        return info.raw

    def prog_id(self, prog_name):
        """The kernel's id of a loaded program (what bpftool names it by)."""
        return struct.unpack_from("<I", self._prog_info(prog_name), 4)[0]

    def prog_sizes(self, prog_name):
        """(instructions after the verifier, JIT bytes) of a loaded program."""
        jited, xlated = struct.unpack_from("<II", self._prog_info(prog_name), _PROG_INFO_LENS)
        return xlated // 8, jited

    def prog_stats(self, prog_name):
        """(run_time_ns, run_cnt) of a loaded program (kernel.bpf_stats_enabled)."""
        return struct.unpack_from("<QQ", self._prog_info(prog_name), _PROG_INFO_RUN_TIME)

    def prog_misses(self, prog_name):
        """Events for which the kernel skipped the program: one run per CPU at
        a time, per program for raw_tp and tp_btf, shared with every tracing
        program and bpf() map operation for the classic tracepoint
        (bpf_prog_info.recursion_misses)."""
        return struct.unpack_from("<Q", self._prog_info(prog_name), _PROG_INFO_MISSES)[0]

    def test_run(self, prog_name, args):
        """BPF_PROG_TEST_RUN a raw_tp program with args as its u64 context.

        Returns:
            the program's return value.
        """
        ctx = (ct.c_uint64 * len(args))(*args)
        opts = _libbpf.bpf_test_run_opts(sz=ct.sizeof(_libbpf.bpf_test_run_opts),
                                         ctx_in=ct.addressof(ctx), ctx_size_in=ct.sizeof(ctx))
        self._lib.bpf_prog_test_run_opts(self.prog_fd(prog_name), ct.byref(opts))
        return opts.retval

    def memlock(self, map_name):
        """Kernel memory charged for a map, in bytes (its fdinfo "memlock")."""
        with open("/proc/self/fdinfo/%d" % self.map_fd(map_name)) as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
        return 0
