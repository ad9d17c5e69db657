# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The built-in guest's programs: parsing, the exits they cause, the
machine code, and what it says when /dev/kvm is unusable."""
import json
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


# -- arm64 -------------------------------------------------------------------
def test_arm64_program_parsing_and_expected_exits():
    steps = guest.parse_program("mmio:0x10001000:10,mrs:5,hvc:5,wfi:3,sync", "arm64")
    assert steps == [guest.Step("mmio", 10, 0x10001000), guest.Step("mrs", 5), guest.Step("hvc", 5),
                     guest.Step("wfi", 3), guest.Step("sync", 1)]
    assert guest.expected_exits(steps, "arm64") == {
        ("mmio", 0x10001000): 10, ("mrs", 0): 5, ("hvc", 0): 5, ("wfi", 0): 3, ("mmio", guest.ARM64_SYNC): 1,
        ("mmio", guest.ARM64_WFI_BEGIN): 1, ("mmio", guest.ARM64_WFI_END): 1, ("mmio", guest.ARM64_DONE): 1}
    for bad in ("out:0x80:1", "mmio:1", "cpuid:3", "mmio:0x10000000000:1"):
        with pytest.raises(ValueError, match="bad guest step"):
            guest.parse_program(bad, "arm64")


def _clang_a64(asm, tmp_path):
    """clang's integrated assembler's bytes for AArch64 source (the reference)."""
    import shutil
    import subprocess
    if not shutil.which("clang") or not shutil.which("llvm-objcopy"):
        pytest.skip("clang and llvm-objcopy not found: apt-get install clang llvm (make test installs them)")
    (tmp_path / "a.s").write_text(asm)
    subprocess.run(["clang", "--target=aarch64-linux-gnu", "-c", str(tmp_path / "a.s"), "-o", str(tmp_path / "a.o")],
                   check=True)
    subprocess.run(["llvm-objcopy", "-O", "binary", "-j", ".text", str(tmp_path / "a.o"), str(tmp_path / "a.bin")],
                   check=True)
    return (tmp_path / "a.bin").read_bytes()


def test_arm64_machine_code_is_what_an_assembler_makes(tmp_path):
    """Every instruction the arm64 guest uses, against clang's assembler."""
    steps = guest.parse_program("mmio:0x10002000:70000,mrs:5,hvc:2,wfi:3,sync", "arm64")
    mine = guest.assemble_arm64(steps, 1)
    asm = """
        movz x0, #0x2000
        movk x0, #0x1000, lsl #16
        movz x1, #1
        movz x19, #0xffff
    1:  str w1, [x0]
        subs x19, x19, #1
        b.ne 1b
        movz x19, #4465
    2:  str w1, [x0]
        subs x19, x19, #1
        b.ne 2b
        movz x19, #5
    3:  mrs x3, ID_AA64PFR0_EL1
        subs x19, x19, #1
        b.ne 3b
        movz x19, #2
    4:  movz x0, #0
        movk x0, #0x8400, lsl #16
        hvc #0
        subs x19, x19, #1
        b.ne 4b
        movz x0, #0xf60
        movk x0, #0x1000, lsl #16
        movz x1, #1
        str w1, [x0]
        movz x19, #3
    5:  wfi
        subs x19, x19, #1
        b.ne 5b
        movz x0, #0xf70
        movk x0, #0x1000, lsl #16
        str w1, [x0]
        movz x0, #0xf50
        movk x0, #0x1000, lsl #16
        movz x1, #1
        movz x19, #1
    6:  str w1, [x0]
        subs x19, x19, #1
        b.ne 6b
        movz x0, #0xf40
        movk x0, #0x1000, lsl #16
        movz x1, #1
        movz x19, #1
    7:  str w1, [x0]
        subs x19, x19, #1
        b.ne 7b
        b .
    """
    assert mine == _clang_a64(asm, tmp_path)


@pytest.mark.bpf
@pytest.mark.kvm
def test_rotate_moves_vcpus_between_threads():
    """kvmexit guest --rotate: after each sync each thread runs the next vCPU,
    as an independent ftrace count of kvm_pio (by thread, the vCPU id
    written, port) shows; kvmexit counts each thread's ports the same."""
    from helpers import Ftrace, GuestProc, calibrated, stop_all
    ft = Ftrace()
    try:
        g = GuestProc(["sync,out:0x80:10,sync,out:0x80:20", "sync,out:0x81:30,sync,out:0x81:40"], migrate=None,
                      extra=["--rotate"])
        t = calibrated("-p", g.pid, "-a", "-o", "json")
        g.release()
        assert json.loads(g.p.stdout.readline()) == {"sync": 1}
        g.finish()
        out = stop_all({"t": t})["t"]
        seen = ft.counts(set(g.tids))
    finally:
        ft.close()
    a, b = g.tids
    # phase 1 (after sync 0): thread a runs vCPU 1, b vCPU 0; phase 2 (after sync 1): back
    assert seen == {(a, 1, 0x81): 30, (a, 1, 0xF5): 1, (b, 0, 0x80): 10, (b, 0, 0xF5): 1,
                    (a, 0, 0x80): 20, (a, 0, 0xF4): 1, (b, 1, 0x81): 40, (b, 1, 0xF4): 1,
                    (a, 0, 0xF5): 1, (b, 1, 0xF5): 1}
    rec = json.loads(out)
    mine = {}      # by thread and port (the calibration hook's vCPU is the value written, kept per cache)
    for e in rec["exits"]:
        mine[(e["tid"], e["reason"])] = mine.get((e["tid"], e["reason"]), 0) + e["count"]
    want = {}
    for (tid, _, port), n in seen.items():
        want[(tid, port)] = want.get((tid, port), 0) + n
    # the tracer attached after each thread's first sync (port 0xf5); short only by events the
    # kernel reported skipping its program for (kvm_pio runs preemptibly)
    want[(a, 0xF5)] -= 1
    want[(b, 0xF5)] -= 1
    from kernels.expect import short_of
    short_of(mine, want, rec["skipped"])
