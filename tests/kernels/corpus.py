# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The BTF corpus: for each series of the matrix, the kernel's vmlinux BTF
and the split BTF of kvm, kvm-intel and kvm-amd, taken from the Debian
packages the matrix boots (fetch.py) into the same cache, with each
package's name, version and sha256 and each file's sha256 recorded beside
them in corpus.json.  A reader of raw BTF gives the test its vendor struct
offsets from these files, independently of libbpf's CO-RE relocation.

Debian's 5.10 builds no module BTF (CONFIG_DEBUG_INFO_BTF_MODULES is 5.11
and later): its kvm*.btf are encoded by pahole as split BTF on the shipped
vmlinux BTF from the DWARF of the same build's -dbg package.
"""
import functools
import hashlib
import json
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import fetch
from .manifest import SERIES

MODULES = ("kvm", "kvm-intel", "kvm-amd")
FILES = ("vmlinux",) + MODULES


def corpus_dir():
    """$KVMEXIT_BTF_CORPUS (one folder per series, as built here), else the kernel cache's btf/."""
    env = os.environ.get("KVMEXIT_BTF_CORPUS")
    return Path(env) if env else fetch.cache_dir() / "btf"


# -- raw BTF -------------------------------------------------------------------
HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
MAGIC = 0xEB9F


def sections(data):
    """(version, flags, types, strings) of a raw BTF blob."""
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HDR.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not BTF")
    body = data[hdr_len:]
    return version, flags, body[type_off:type_off + type_len], body[str_off:str_off + str_len]


# kind: bytes after the 12-byte header, as (fixed, per vlen member)
_EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0), 9: (0, 0),
          10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0), 17: (4, 0),
          18: (0, 0), 19: (0, 12)}
STRUCT, UNION, PTR, TYPEDEF, FUNC_PROTO = 4, 5, 2, 8, 13
_MODIFIERS = (9, 10, 11, 18)          # volatile, const, restrict, type tag


@dataclass
class Type:
    kind: int
    name: str
    size_or_type: int
    members: list       # STRUCT/UNION: (name, type id, bit offset); FUNC_PROTO: (name, type id)


class Btf:
    """A raw BTF file, split on a base where given: types by id, names, member offsets."""

    def __init__(self, path, base=None):
        _, _, types, strs = sections(Path(path).read_bytes())
        self.types = list(base.types) if base else [None]              # id 0 is void
        self.strs = (base.strs if base else b"") + strs
        off = 0
        while off < len(types):
            name_off, info, size_or_type = struct.unpack_from("<III", types, off)
            kind, vlen, kflag = info >> 24 & 0x1F, info & 0xFFFF, info >> 31
            off += 12
            fixed, each = _EXTRA[kind]
            members = []
            if kind in (STRUCT, UNION):
                for i in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", types, off + fixed + 12 * i)
                    members.append((self._str(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off))
            elif kind == FUNC_PROTO:
                members = [(self._str(a), t) for a, t in struct.iter_unpack("<II", types[off:off + 8 * vlen])]
            self.types.append(Type(kind, self._str(name_off), size_or_type, members))
            off += fixed + each * vlen

    def _str(self, off):
        return self.strs[off:self.strs.index(b"\0", off)].decode()

    def named(self, kind, name):
        """The id of the named type of that kind with members (not a forward declaration)."""
        for i, t in enumerate(self.types):
            if t is not None and t.kind == kind and t.name == name and (kind != STRUCT or t.members):
                return i
        raise KeyError("no %s in this BTF" % name)

    def resolved(self, tid):
        """Through typedefs and modifiers."""
        while self.types[tid].kind in (TYPEDEF,) + _MODIFIERS:
            tid = self.types[tid].size_or_type
        return tid

    def member(self, tid, path):
        """(byte offset, type id) of a dotted member path inside struct/union tid."""
        offset = 0
        for name in path.split("."):
            t = self.types[self.resolved(tid)]
            found = next(((o, mt) for n, mt, o in t.members if n == name), None)
            if found is None:
                raise KeyError("%s has no member %s" % (t.name, name))
            offset += found[0] // 8
            tid = found[1]
        return offset, tid

    def size(self, tid):
        return self.types[self.resolved(tid)].size_or_type


@dataclass(frozen=True)
class Layout:
    """What kvmexit reads at a VM exit, as one kernel build lays it out."""
    proto: str        # kvm_exit's prototype: "old" (5.10: the reason first) or "new"
    vmx_reason: int   # offset of the u32 exit reason in struct vcpu_vmx
    svm_vmcb: int     # offset of struct vmcb * in struct vcpu_svm
    exit_code: int    # offset of control.exit_code in struct vmcb
    code64: bool      # vmcb.control.exit_code is u64
    vcpu_id: int      # offset of vcpu_id in struct kvm_vcpu


def layout(d):
    """The Layout of the corpus kernel in folder d, read from its BTF files."""
    vmlinux = Btf(d / "vmlinux.btf")
    kvm, intel, amd = (Btf(d / ("%s.btf" % m), vmlinux) for m in MODULES)
    proto = kvm.types[kvm.resolved(kvm.types[kvm.named(TYPEDEF, "btf_trace_kvm_exit")].size_or_type)]
    proto = kvm.types[proto.size_or_type]           # the pointer's target
    vmx = intel.named(STRUCT, "vcpu_vmx")
    try:
        reason = intel.member(vmx, "exit_reason.full")[0]
    except KeyError:                                 # 6.16: inside struct vcpu_vt
        reason = intel.member(vmx, "vt.exit_reason.full")[0]
    vmcb = amd.named(STRUCT, "vmcb")
    code_off, code_type = amd.member(vmcb, "control.exit_code")
    return Layout("old" if len(proto.members) == 4 else "new", reason, amd.member(amd.named(STRUCT, "vcpu_svm"), "vmcb")[0],
                  code_off, amd.size(code_type) == 8, vmlinux.member(vmlinux.named(STRUCT, "kvm_vcpu"), "vcpu_id")[0])


# -- building it ---------------------------------------------------------------
def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _vmlinux(vmlinuz, dest):
    """The ELF vmlinux inside a bzImage: the setup header's payload_offset
    and payload_length (boot protocol 2.08+) frame the compressed kernel."""
    data = Path(vmlinuz).read_bytes()
    setup_sects = data[0x1F1] or 4
    off, length = struct.unpack_from("<II", data, 0x248)
    payload = data[(setup_sects + 1) * 512 + off:][:length]
    # each stream read to its end: the build appends the ELF's size after it
    if payload[:2] == b"\x1f\x8b":
        elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    elif payload[:6] == b"\xfd7zXZ\x00":
        elf = lzma.LZMADecompressor().decompress(payload)
    elif payload[:4] == b"\x28\xb5\x2f\xfd":
        elf = subprocess.run(["zstd", "-qdc"], input=payload[:-4], capture_output=True, check=True).stdout
    else:
        raise RuntimeError("%s: unknown compression %r" % (vmlinuz, payload[:6]))
    Path(dest).write_bytes(elf)
    return dest


def _btf_section(elf, dest):
    """The raw .BTF section of an ELF file; False if it has none."""
    from elftools.elf.elffile import ELFFile
    with open(elf, "rb") as f:
        s = ELFFile(f).get_section_by_name(".BTF")
        if s is None:
            return False
        Path(dest).write_bytes(s.data())
    return True


def _from_dwarf(series, kernel, d, tmp, log):
    """kvm*.btf encoded by pahole from the -dbg package's DWARF, split on vmlinux.btf."""
    pkg = fetch.extra_package(series, "linux-image-%s-dbg" % kernel.release, log)
    deb = fetch.download(series, pkg, tmp, log)
    members = ["./usr/lib/debug/lib/modules/%s/kernel/arch/x86/kvm/%s.ko" % (kernel.release, m) for m in MODULES]
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        subprocess.run(["tar", "-x", "-C", str(tmp)] + members, stdin=p.stdout, check=True)
    deb.unlink()
    for m, member in zip(MODULES, members):
        subprocess.run(["pahole", "--btf_encode_detached=%s" % (d / ("%s.btf" % m)), "--btf_base=%s" % (d / "vmlinux.btf"),
                        str(tmp / member)], check=True, capture_output=True)
    return [pkg]


@functools.lru_cache(maxsize=None)
def folder(name):
    """build(name), once a process."""
    return build(name)


def build(name, log=print):
    """The corpus folder of one series, built from its packages unless already there.

    Returns:
        Path of the folder: vmlinux.btf, kvm.btf, kvm-intel.btf, kvm-amd.btf, corpus.json.
    """
    series = SERIES[name]
    d = corpus_dir() / name
    if "KVMEXIT_BTF_CORPUS" in os.environ:
        return d
    kernel = fetch.fetch(series, log)
    meta = d / "corpus.json"
    if meta.exists() and json.loads(meta.read_text())["kernel"] == [p.__dict__ for p in kernel.packages]:
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    packages = list(kernel.packages)
    with tempfile.TemporaryDirectory(dir=d.parent) as t:
        tmp = Path(t)
        if not _btf_section(_vmlinux(kernel.vmlinuz, tmp / "vmlinux"), d / "vmlinux.btf"):
            raise RuntimeError("%s: vmlinux has no BTF" % kernel.release)
        have = [_btf_section(kernel.path / "modules" / ("%s.ko" % m), d / ("%s.btf" % m)) for m in MODULES]
        how = "raw .BTF sections of vmlinux (from vmlinuz) and of the modules"
        if not any(have):
            packages += _from_dwarf(series, kernel, d, tmp, log)
            how = "raw .BTF of vmlinux (from vmlinuz); modules encoded by pahole from the -dbg package's DWARF"
        elif not all(have):
            raise RuntimeError("%s: only some kvm modules have BTF" % kernel.release)
    meta.write_text(json.dumps({
        "series": name, "release": kernel.release, "kernel": [p.__dict__ for p in kernel.packages],
        "packages": [p.__dict__ for p in packages], "how": how,
        "files": {"%s.btf" % f: _sha256(d / ("%s.btf" % f)) for f in FILES}}, indent=1))
    log("  BTF corpus %s: %s" % (name, ", ".join(p.line() for p in packages)))
    return d
