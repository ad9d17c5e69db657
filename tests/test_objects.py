# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The shipped BPF objects, read as files: ELF shape, programs, license,
CO-RE relocations, and the ABI against abi.py (no root needed)."""
import ctypes as ct
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import kvmexit
from kvmexit import _libbpf, abi
from kvmexit.arch import ARM64, X86
from kvmexit.bpfobject import BpfObject, package_object
from kvmexit.skeleton import CORE_OBJECT, LEGACY_OBJECT, Filter
from kvmexit.tracer import ENTRY_PROGRAMS, PROGRAMS

ARM64_OBJECT = ARM64.core_object
DIRECT_OBJECT = X86.direct_object

OBJDIR = Path(kvmexit.__file__).parent / "bpf"



def _elf(name):
    path = OBJDIR / name
    if not path.exists():
        pytest.skip("%s not built (make)" % path)
    return path


def _programs(elf):
    out = {}
    for sym in elf.get_section_by_name(".symtab").iter_symbols():
        if sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_GLOBAL":
            out[sym.name] = elf.get_section(sym["st_shndx"]).name
    return out


def _core_relo_len(elf):
    ext = elf.get_section_by_name(".BTF.ext").data()
    magic, = struct.unpack_from("<H", ext)
    assert magic == 0xEB9F
    hdr_len, = struct.unpack_from("<I", ext, 4)
    return struct.unpack_from("<I", ext, 28)[0] if hdr_len >= 32 else 0


def _table(name):
    """{program: section} the tracer's tables ask of an object: all of x86's
    of the CO-RE one; of the legacy one, those that need no kernel BTF (no
    tp_btf, not the new prototype, which finds the reason by CO-RE); arm64's
    of the arm64 one, the direct programs of the CO-RE ones, and the
    kvm_entry programs of all."""
    core = name != LEGACY_OBJECT
    if name == ARM64_OBJECT:
        rows = [(prog, kind, "kvm_exit") for (kind, _), prog in ARM64.exit_programs.items()]
        rows += [(ARM64.vcpu_program, "kprobe", "kvm_arch_vcpu_ioctl_run")]
    else:
        rows = [(prog, kind, source) for (source, kind, proto), prog in PROGRAMS.items()
                if core or (kind != "tp_btf" and proto != "new")]
    if name in (ARM64_OBJECT, DIRECT_OBJECT):
        rows += [(prog, kind, "kvm_exit") for (kind, _), prog in (ARM64 if name == ARM64_OBJECT else X86)
                 .direct_programs.items()]
    if name == DIRECT_OBJECT:
        # make bench-real's: the direct tp_btf program with the thread read from vcpu->pid
        rows += [("handle_kvm_exit_btf_direct_vpid", "tp_btf", "kvm_exit")]
    rows += [(prog, kind, "kvm_entry") for kind, prog in ENTRY_PROGRAMS.items() if core or kind != "tp_btf"]
    rows += [(prog, "raw_tp", tp) for tp, prog in (ARM64 if name == ARM64_OBJECT else X86).detail_programs.items()]
    return {prog: ("tracepoint/kvm/%s" if kind == "tracepoint" else kind + "/%s") % source
            for prog, kind, source in rows}


@pytest.mark.parametrize("name,core", [(CORE_OBJECT, True), (DIRECT_OBJECT, True), (LEGACY_OBJECT, False),
                                       (ARM64_OBJECT, True)])
def test_object_shape(name, core):
    with open(_elf(name), "rb") as f:
        elf = ELFFile(f)
        assert (elf["e_machine"], elf["e_type"], elf.elfclass, elf.little_endian) == ("EM_BPF", "ET_REL", 64, True)
        # every program the tracer may ask for is there, in the right section, and nothing else
        assert _programs(elf) == _table(name)
        assert elf.get_section_by_name("license").data() == b"GPL\0"
        maps = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s["st_shndx"] != "SHN_UNDEF" and elf.get_section(s["st_shndx"]).name == ".maps"}
        arm64 = name == ARM64_OBJECT
        assert maps == {abi.MAP_CACHE, abi.MAP_GENS, abi.MAP_COUNTS, abi.MAP_PENDING, abi.MAP_LAT,
                        abi.MAP_DETAILS} | ({abi.MAP_THREAD_VCPU} if arm64 else set())
        # the subprograms: the slow path shared by every program, --latency's exit record
        assert {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF"
                and elf.get_section(s["st_shndx"]).name == ".text"} == {"count_slow", "record_exit"}
        relos = _core_relo_len(elf)
        # the legacy object must load where kernel BTF is missing: no CO-RE at all; arm64's
        # reads one kernel field (kvm_vcpu.vcpu_id, in its kprobe)
        assert relos > 200 if name in (CORE_OBJECT, DIRECT_OBJECT) else relos > 0 if arm64 else relos == 0
        # the kfunc extern (bpf_rdonly_cast) only in the direct object: an old libbpf opens the others
        kfuncs = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols() if s["st_shndx"] == "SHN_UNDEF"
                  and s.name}
        assert kfuncs == ({"bpf_rdonly_cast"} if name == DIRECT_OBJECT else set())
    # libbpf finds the same programs and maps by iterating the object
    with BpfObject(package_object(name), abi.OBJECT_NAME) as obj:
        assert set(obj.programs) == set(_table(name))
        # arm64: vcpu_moves in .bss
        assert set(obj.maps) == maps | {abi.OBJECT_NAME + ".rodata"} | ({abi.OBJECT_NAME + ".bss"} if arm64 else set())
        assert obj.value_size(abi.MAP_CACHE) == ct.sizeof(abi.kvmexit_cache)
        assert obj.key_size(abi.MAP_COUNTS) == ct.sizeof(abi.kvmexit_key)
        assert obj.key_size(abi.MAP_DETAILS) == ct.sizeof(abi.kvmexit_detail_key)


def _members(lib, btf, name):
    tid = lib.btf__find_by_name_kind(btf, name.encode(), _libbpf.BTF_KIND_STRUCT)
    assert tid > 0, name
    t = lib.btf__type_by_id(btf, tid).contents
    base = ct.addressof(t) + ct.sizeof(_libbpf.btf_type)
    members = (ct.c_uint32 * (3 * t.vlen)).from_address(base)
    out = {}
    for i in range(t.vlen):
        name_off, _, bit_off = members[3 * i: 3 * i + 3]
        out[lib.btf__name_by_offset(btf, name_off).decode()] = bit_off // 8
    return lib.btf__resolve_size(btf, tid), out


@pytest.mark.parametrize("name", [CORE_OBJECT, LEGACY_OBJECT, ARM64_OBJECT])
def test_abi_matches_object_btf(name):
    lib = _libbpf.load()
    btf = lib.btf__parse(str(_elf(name)).encode(), None)
    records = ("kvmexit_tp_exit_arm64",) if name == ARM64_OBJECT else ("kvmexit_tp_exit", "kvmexit_tp_pio",
                                                                        "kvmexit_tp_msr")
    try:
        for cname in ("kvmexit_key", "kvmexit_cache", "kvmexit_gen", "kvmexit_pending", "kvmexit_lat",
                      "kvmexit_detail_key") + records:
            ctype = getattr(abi, cname)
            size, members = _members(lib, btf, cname)
            assert size == ct.sizeof(ctype), cname
            assert members == {f: getattr(ctype, f).offset for f, _ in ctype._fields_}, cname
    finally:
        lib.btf__free(btf)


def test_rodata_layout_matches_filter():
    """Unprivileged: open (not load) the object and read .rodata's variables."""
    with BpfObject(package_object(CORE_OBJECT), abi.OBJECT_NAME) as obj:
        layout = obj.rodata_layout()
        # the zero templates of the maps' new elements and the cache's key, not settings
        zeros = {k: layout.pop(k)[1] for k in ("zero_count", "zero_pending", "zero_lat", "zero_key")}
        assert zeros == {"zero_count": 8, "zero_key": 4, "zero_pending": ct.sizeof(abi.kvmexit_pending),
                         "zero_lat": ct.sizeof(abi.kvmexit_lat)}
        values = dict(Filter(tgid=5, tids=(1, 2), vcpu=3).rodata(), tp_has_vcpu_id=True, latency=False,
                      detail=True, record=True)
        assert {k: v[1] for k, v in layout.items()} == {"targ_tgid": 4, "targ_vcpu": 4, "targ_ntids": 4,
                                                        "targ_tids": 4 * abi.KVMEXIT_MAX_TIDS,
                                                        "tp_has_vcpu_id": 1, "latency": 1, "detail": 1,
                                                        "record": 1}
        obj.set_rodata(values)
