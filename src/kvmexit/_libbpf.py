# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""ctypes binding to the system libbpf (libbpf.so.1, else libbpf.so.0).

Only ctypes lives here: the signatures as data, one error policy applied in
one place, and libbpf's exact symbol names so that one grep finds both
sides.  Every checked call raises LibbpfError instead of returning an error
code; callers never test return values.

Supported: libbpf 0.5 and newer.  libbpf 1.x reports errors as NULL + errno
or as -errno; 0.x does so only in strict mode, which load() switches on.
"""
import ctypes as ct
import errno as _errno
import os

from .errors import LibbpfError

c_int, c_uint, c_size_t, c_char_p, c_void_p = ct.c_int, ct.c_uint, ct.c_size_t, ct.c_char_p, ct.c_void_p
c_u32, c_u64 = ct.c_uint32, ct.c_uint64

# BTF kinds (include/uapi/linux/btf.h)
BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_STRUCT = 1, 2, 4
BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT = 8, 9, 10, 11
BTF_KIND_FUNC_PROTO, BTF_KIND_VAR, BTF_KIND_DATASEC = 13, 14, 15
BTF_F_TEST_RUN_ON_CPU = 1 << 0

# libbpf_strict_mode: LIBBPF_STRICT_CLEAN_PTRS | LIBBPF_STRICT_DIRECT_ERRS
_STRICT_CLEAN = 0x01 | 0x02


class bpf_object_open_opts(ct.Structure):
    """The 0.5 - 1.7 layout up to btf_custom_path (sz = 56).

    libbpf 1.0.0 alone moved the fields after pin_root_path by 8 bytes
    (fixed by b3a11777 "libbpf: restore memory layout of
    bpf_object_open_opts"); open_opts() sets nothing past object_name there.
    """
    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", ct.c_bool),
        ("pin_root_path", c_char_p),
        ("attach_prog_fd", c_u32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
    ]


class bpf_test_run_opts(ct.Structure):
    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_u32),
        ("data_size_out", c_u32),
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_u32),
        ("ctx_size_out", c_u32),
        ("retval", c_u32),
        ("repeat", c_int),
        ("duration", c_u32),
        ("flags", c_u32),
        ("cpu", c_u32),
        ("batch_size", c_u32),
    ]


class bpf_map_batch_opts(ct.Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_u64), ("flags", c_u64)]


class btf_type(ct.Structure):
    _fields_ = [("name_off", c_u32), ("info", c_u32), ("size_or_type", c_u32)]

    @property
    def kind(self):
        return (self.info >> 24) & 0x1F

    @property
    def vlen(self):
        return self.info & 0xFFFF


class btf_var_secinfo(ct.Structure):
    _fields_ = [("type", c_u32), ("offset", c_u32), ("size", c_u32)]


class btf_param(ct.Structure):
    _fields_ = [("name_off", c_u32), ("type", c_u32)]


# Error checkers: libbpf 1.x's two conventions (and 0.x in strict mode).
def _error(err, op):
    """LibbpfError, with libbpf's own text for its private LIBBPF_ERRNO__* codes (4000+)."""
    return LibbpfError(err, op, "%s: %s" % (op, strerror(err)) if err >= 4000 else None)


def _check_ptr(result, func, args):
    # 0.x without strict mode returns ERR_PTR values: keep a guard anyway
    if not result or result >= 2**64 - 4095:
        err = ct.get_errno() or (2**64 - result if result else _errno.EINVAL)
        raise _error(err, func.__name__)
    return result


def _check_int(result, func, args):
    if result < 0:
        raise _error(-result if result != -1 else (ct.get_errno() or _errno.EINVAL), func.__name__)
    return result


P = c_void_p  # opaque pointers: struct bpf_object *, bpf_program *, bpf_map *, bpf_link *, btf *

# name: (argtypes, restype, errcheck)
SIGNATURES = {
    "libbpf_set_print": ([c_void_p], c_void_p, None),
    "libbpf_strerror": ([c_int, c_char_p, c_size_t], c_int, None),
    "libbpf_num_possible_cpus": ([], c_int, _check_int),
    "bpf_object__open_mem": ([c_void_p, c_size_t, ct.POINTER(bpf_object_open_opts)], P, _check_ptr),
    "bpf_object__load": ([P], c_int, _check_int),
    "bpf_object__close": ([P], None, None),
    "bpf_object__find_program_by_name": ([P, c_char_p], P, _check_ptr),
    "bpf_object__find_map_by_name": ([P, c_char_p], P, _check_ptr),
    "bpf_program__set_autoload": ([P, ct.c_bool], c_int, _check_int),
    "bpf_program__fd": ([P], c_int, _check_int),
    "bpf_program__attach": ([P], P, _check_ptr),
    "bpf_program__attach_raw_tracepoint": ([P, c_char_p], P, _check_ptr),
    "bpf_program__attach_tracepoint": ([P, c_char_p, c_char_p], P, _check_ptr),
    "bpf_link__destroy": ([P], c_int, None),
    "bpf_map__fd": ([P], c_int, _check_int),
    "bpf_map__name": ([P], c_char_p, None),
    "bpf_map__set_max_entries": ([P, c_u32], c_int, _check_int),
    "bpf_map__initial_value": ([P, ct.POINTER(c_size_t)], P, _check_ptr),
    "bpf_map__value_size": ([P], c_u32, None),
    "bpf_map__key_size": ([P], c_u32, None),
    "bpf_program__name": ([P], c_char_p, None),
    "bpf_map_lookup_elem": ([c_int, c_void_p, c_void_p], c_int, _check_int),
    "bpf_map_update_elem": ([c_int, c_void_p, c_void_p, c_u64], c_int, _check_int),
    # -ENOENT ends both iterations: the callers test for it
    "bpf_map_get_next_key": ([c_int, c_void_p, c_void_p], c_int, None),
    "bpf_map_lookup_batch": ([c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                              ct.POINTER(c_u32), ct.POINTER(bpf_map_batch_opts)], c_int, None),
    "bpf_prog_test_run_opts": ([c_int, ct.POINTER(bpf_test_run_opts)], c_int, _check_int),
    "bpf_obj_get_info_by_fd": ([c_int, c_void_p, ct.POINTER(c_u32)], c_int, _check_int),
    "btf__load_vmlinux_btf": ([], P, _check_ptr),
    "btf__load_module_btf": ([c_char_p, P], P, _check_ptr),
    "btf__parse": ([c_char_p, c_void_p], P, _check_ptr),
    "btf__parse_split": ([c_char_p, P], P, _check_ptr),
    "btf__find_by_name_kind": ([P, c_char_p, c_u32], ct.c_int32, None),
    "btf__type_by_id": ([P, c_u32], ct.POINTER(btf_type), None),
    "btf__resolve_size": ([P, c_u32], ct.c_int64, None),
    "btf__free": ([P], None, None),
    "btf__name_by_offset": ([P, c_u32], c_char_p, None),
    "bpf_object__btf": ([P], P, None),
}

# present only in some libbpf versions: looked up softly
OPTIONAL = {
    "libbpf_major_version": ([], c_u32, None),
    "libbpf_minor_version": ([], c_u32, None),
    "libbpf_set_strict_mode": ([c_int], c_int, None),
    # iterators: 0.6+, else the 0.x names (dropped in 1.0)
    "bpf_object__next_program": ([P, P], P, None),
    "bpf_object__next_map": ([P, P], P, None),
    "bpf_program__next": ([P, P], P, None),
    "bpf_map__next": ([P, P], P, None),
}

SONAMES = ("libbpf.so.1", "libbpf.so.0")

# libbpf_print_fn_t; use_errno so that logging cannot clobber libbpf's errno
PRINT_FN = ct.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p, use_errno=True)

_lib = None


class _Lib:
    """The loaded library: each symbol of SIGNATURES as an attribute."""

    def __init__(self, cdll, path):
        self.path = path
        for name, (argtypes, restype, errcheck) in SIGNATURES.items():
            fn = getattr(cdll, name)
            fn.argtypes, fn.restype = argtypes, restype
            if errcheck:
                fn.errcheck = errcheck
            setattr(self, name, fn)
        for name, (argtypes, restype, _) in OPTIONAL.items():
            fn = getattr(cdll, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = argtypes, restype
            setattr(self, name, fn)
        if self.libbpf_set_strict_mode is not None:
            # a no-op on 1.x, needed on 0.x for NULL + errno returns
            self.libbpf_set_strict_mode(_STRICT_CLEAN)

    @property
    def version(self):
        """(major, minor, patch); patch only where the file name tells it."""
        major = minor = patch = 0
        if self.libbpf_major_version is not None:
            major, minor = self.libbpf_major_version(), self.libbpf_minor_version()
        elif self.libbpf_set_strict_mode is not None:
            major, minor = 0, 5
        real = _mapped_path()
        if real:
            parts = os.path.basename(real).split(".so.")[-1].split(".")
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                major, minor, patch = map(int, parts)
        return (major, minor, patch)


def _mapped_path():
    """The libbpf file this process mapped (its name carries the patch level)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "/libbpf.so" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


def load():
    """Load the system libbpf once.

    Returns:
        _Lib: the bound library.
    Raises:
        LibbpfError: no libbpf.so.1 / libbpf.so.0, or one older than 0.5.
    """
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for soname in SONAMES:
        try:
            cdll = ct.CDLL(soname, use_errno=True)
        except OSError as e:
            errors.append(str(e))
            continue
        if not hasattr(cdll, "btf__load_vmlinux_btf"):
            raise LibbpfError(_errno.ENOSYS, "load", "libbpf older than 0.5 (%s); install libbpf 0.5 or newer" % soname)
        _lib = _Lib(cdll, soname)
        return _lib
    raise LibbpfError(_errno.ENOENT, "load",
                      "libbpf not found (%s); install it: apt-get install libbpf1" % "; ".join(errors))


def strerror(err):
    """libbpf's text for an errno or a LIBBPF_ERRNO__* code."""
    lib = load()
    buf = ct.create_string_buffer(128)
    lib.libbpf_strerror(err, buf, len(buf))
    return buf.value.decode(errors="replace")


# libbpf's log: kept until someone asks (--verbose), never printed by default.
_log_sink = None
def _load_libc():
    # libc.so.6 directly: find_library() runs ldconfig, ~5 ms of start-up
    try:
        return ct.CDLL("libc.so.6", use_errno=True)
    except OSError:
        import ctypes.util
        return ct.CDLL(ctypes.util.find_library("c"), use_errno=True)


_libc = _load_libc()
_libc.vasprintf.argtypes = [ct.POINTER(c_char_p), c_char_p, c_void_p]
_libc.vasprintf.restype = c_int
_libc.free.argtypes = [c_void_p]


@PRINT_FN
def _print_cb(level, fmt, ap):
    # Format once with vasprintf: a second pass over one va_list prints
    # garbage on x86-64.
    out = c_char_p()
    if _libc.vasprintf(ct.byref(out), fmt, ap) < 0:
        return 0
    try:
        text = out.value.decode(errors="replace")
    finally:
        _libc.free(ct.cast(out, c_void_p))
    if _log_sink is not None:
        _log_sink(level, text)
    return 0


def set_log_sink(sink):
    """Route libbpf's messages to sink(level, text); None drops them, in
    libbpf (no callback: hundreds of messages a load, none formatted)."""
    global _log_sink
    _log_sink = sink
    load().libbpf_set_print(ct.cast(_print_cb, c_void_p) if sink is not None else None)
