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
from kvmexit.bpf import CORE_OBJECT, LEGACY_OBJECT, BpfObject, object_bytes
from kvmexit.tracer import CORE_PROGRAMS, ENTRY_PROGRAMS, EXIT_PROGRAMS, LEGACY_PROGRAMS, PROGRAMS, Filter

OBJDIR = Path(kvmexit.__file__).parent / "bpf"
SECTIONS = {
    "handle_kvm_exit_btf": "tp_btf/kvm_exit", "handle_kvm_exit_btf_old": "tp_btf/kvm_exit",
    "handle_kvm_exit_raw": "raw_tp/kvm_exit", "handle_kvm_exit_raw_old": "raw_tp/kvm_exit",
    "handle_kvm_exit_tp": "tracepoint/kvm/kvm_exit", "handle_kvm_pio_btf": "tp_btf/kvm_pio",
    "handle_kvm_pio_raw": "raw_tp/kvm_pio", "handle_kvm_pio_tp": "tracepoint/kvm/kvm_pio",
    "handle_kvm_msr_btf": "tp_btf/kvm_msr", "handle_kvm_msr_raw": "raw_tp/kvm_msr",
    "handle_kvm_msr_tp": "tracepoint/kvm/kvm_msr",
    "handle_kvm_entry_btf": "tp_btf/kvm_entry", "handle_kvm_entry_raw": "raw_tp/kvm_entry",
    "handle_kvm_entry_tp": "tracepoint/kvm/kvm_entry",
}
SECTIONS.update({p + "_lat": sec for p, sec in list(SECTIONS.items()) if p.startswith("handle_kvm_exit_")})


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


@pytest.mark.parametrize("name,programs,core", [(CORE_OBJECT, CORE_PROGRAMS, True),
                                                 (LEGACY_OBJECT, LEGACY_PROGRAMS, False)])
def test_object_shape(name, programs, core):
    with open(_elf(name), "rb") as f:
        elf = ELFFile(f)
        assert (elf["e_machine"], elf["e_type"], elf.elfclass, elf.little_endian) == ("EM_BPF", "ET_REL", 64, True)
        assert _programs(elf) == {p: SECTIONS[p] for p in programs}
        assert elf.get_section_by_name("license").data() == b"GPL\0"
        maps = {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s["st_shndx"] != "SHN_UNDEF" and elf.get_section(s["st_shndx"]).name == ".maps"}
        assert maps == {abi.MAP_CACHE, abi.MAP_COUNTS, abi.MAP_PENDING, abi.MAP_LATENCY}
        # the subprograms: the slow path shared by every program, --latency's exit record
        assert {s.name for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF"
                and elf.get_section(s["st_shndx"]).name == ".text"} == {"count_slow", "record_exit"}
        relos = _core_relo_len(elf)
        # the legacy object must load where kernel BTF is missing: no CO-RE at all
        assert relos > 200 if core else relos == 0
    assert set(PROGRAMS.values()) | set(ENTRY_PROGRAMS.values()) | {p + "_lat" for p in EXIT_PROGRAMS} \
        == set(CORE_PROGRAMS)


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


@pytest.mark.parametrize("name", [CORE_OBJECT, LEGACY_OBJECT])
def test_abi_matches_object_btf(name):
    lib = _libbpf.load()
    btf = lib.btf__parse(str(_elf(name)).encode(), None)
    try:
        for cname in ("kvmexit_key", "kvmexit_slot", "kvmexit_cache", "kvmexit_pending", "kvmexit_lat"):
            ctype = getattr(abi, cname)
            size, members = _members(lib, btf, cname)
            assert size == ct.sizeof(ctype), cname
            assert members == {f: getattr(ctype, f).offset for f, _ in ctype._fields_}, cname
    finally:
        lib.btf__free(btf)


def test_rodata_layout_matches_filter():
    """Unprivileged: open (not load) the object and read .rodata's variables."""
    with BpfObject(object_bytes(CORE_OBJECT)) as obj:
        layout = obj.rodata_layout()
        values = Filter(tgid=5, tids=(1, 2), vcpu=3).rodata(True)
        lat_zero = layout.pop("lat_zero")   # the zero template of --latency's map, not a setting
        assert lat_zero[1] == ct.sizeof(abi.kvmexit_lat)
        assert {k: v[1] for k, v in layout.items()} == {k: len(v) for k, v in values.items()}
        obj.set_rodata(values)
