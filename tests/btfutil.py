# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Merge split BTF (a module's) onto its base (vmlinux) into one standalone
file, for libbpf's btf_custom_path, which reads exactly one file and no
module BTF.  Type ids and string offsets stay as they are: split ids follow
the base's last id, and split string offsets follow the base's strings."""
import struct
from pathlib import Path

HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
MAGIC = 0xEB9F


def _sections(data):
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = HDR.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not BTF")
    body = data[hdr_len:]
    return version, flags, body[type_off:type_off + type_len], body[str_off:str_off + str_len]


def merge_split(base_path, split_path, out_path):
    version, flags, base_types, base_strs = _sections(Path(base_path).read_bytes())
    _, _, split_types, split_strs = _sections(Path(split_path).read_bytes())
    types, strs = base_types + split_types, base_strs + split_strs
    hdr = HDR.pack(MAGIC, version, flags, HDR.size, 0, len(types), len(types), len(strs))
    with open(out_path, "wb") as f:
        f.write(hdr + types + strs)
    return out_path
