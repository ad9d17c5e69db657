# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The built-in guest's programs: parsing, the exits they cause, the
machine code, and what it says when /dev/kvm is unusable."""
import struct

import pytest

from kvmexit import guest
from kvmexit.errors import KvmexitError


def test_guest_program_parsing_and_expectations():
    steps = guest.parse_program("out:0x80:1000,cpuid:23,wrmsr:4,hlt,sync")
    assert steps == [guest.Step("out", 1000, 0x80), guest.Step("cpuid", 23), guest.Step("wrmsr", 4),
                     guest.Step("hlt", 1), guest.Step("sync", 1)]
    assert guest.expected_exits(steps) == {("out", 0x80): 1000, ("cpuid", 0): 23, ("wrmsr", 0): 4,
                                           ("rdmsr", 0): 1, ("hlt", 0): 1, ("out", guest.SYNC_PORT): 1,
                                           ("out", guest.DONE_PORT): 1}
    for bad in ("out:0x80", "jmp:3", "cpuid:x", "out:0x10000:1"):
        with pytest.raises(ValueError, match="bad guest step"):
            guest.parse_program(bad)


def test_guest_assembly():
    code = guest.assemble([guest.Step("out", 70000, 0x80)], 3)
    # mov dx, 0x80; mov ax, 3; then two loops (65535 + 4465) of out dx, ax
    assert code[:6] == b"\xBA\x80\x00\xB8\x03\x00"
    assert code[6:9] == b"\xBE\xFF\xFF" and code[9:12] == b"\xEF\x4E\x75"
    assert struct.unpack("<b", code[12:13])[0] == -4  # back to the out at 9
    assert code[13:16] == b"\xBE" + struct.pack("<H", 4465)
    with pytest.raises(ValueError):
        guest.assemble([guest.Step("out", 1, p) for p in range(1000)], 0)


@pytest.mark.parametrize("exc,message", [
    (FileNotFoundError, "/dev/kvm not found: load kvm (modprobe kvm_intel or kvm_amd) "
                        "or enable virtualization for this machine"),
    (PermissionError, "/dev/kvm is not accessible: run as root or join the kvm group"),
])
def test_guest_says_why_dev_kvm_is_unusable(monkeypatch, capsys, exc, message):
    from kvmexit import cli

    def refuse(path, flags):
        raise exc(path)
    monkeypatch.setattr(guest.os, "open", refuse)
    with pytest.raises(KvmexitError, match="^%s$" % message.replace("(", r"\(").replace(")", r"\)")):
        guest.Guest([[guest.Step("hlt")]])
    with pytest.raises(SystemExit) as e:
        cli.main(["guest"])
    assert e.value.code == 1
    assert capsys.readouterr().err == "kvmexit guest: %s\n" % message
