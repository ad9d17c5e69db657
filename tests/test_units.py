# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Pure functions: per-CPU combination, mode planning, guest programs."""
import struct

import pytest

from kvmexit import guest, maps
from kvmexit.abi import kvmexit_cache, kvmexit_key
from kvmexit.bpf import CORE_OBJECT, LEGACY_OBJECT
from kvmexit.errors import KvmexitError
from kvmexit.kernel import KernelBtf, parse_format
from kvmexit.tracer import Attempt, plan


def _key(tgid, tid, reason, vcpu=0, isa=1, flags=0):
    return bytes(kvmexit_key(tgid, tid, reason, vcpu, isa, flags))


def _cache(owner=None, slots=(), drops=0):
    c = kvmexit_cache()
    if owner:
        c.pid_tgid = owner[0] << 32 | owner[1]
        c.key = kvmexit_key(owner[0], owner[1], 0, owner[2], owner[3], 0)
    for i in range(len(c.slots)):
        c.slots[i].tag = 2**64 - 1
    for i, (reason, count) in enumerate(slots):
        c.slots[i].tag, c.slots[i].count = reason | owner[3] << 40, count
    c.nslots, c.drops = len(slots), drops
    return bytes(c)


def test_combine_takes_cached_slot_over_stale_hash_value():
    ncpu = 3
    keys = _key(10, 11, 12) + _key(10, 11, 30) + _key(10, 12, 12, vcpu=1)
    values = struct.pack("<9Q", 5, 1, 0,   7, 0, 0,   0, 0, 4)
    # CPU 0's cache: tid 11 owns it, HLT (12) is now 8 there (hash still says 5)
    cache = _cache((10, 11, 0, 1), [(12, 8)], drops=2) + _cache() + _cache((10, 12, 1, 1), [(12, 6)], drops=1)
    totals, drops = maps.combine(keys, values, ncpu, cache)
    assert totals == {(10, 11, 12, 0, 1, 0): 9, (10, 11, 30, 0, 1, 0): 7, (10, 12, 12, 1, 1, 0): 6}
    assert drops == 3


def test_combine_ignores_cache_of_other_owner_and_zero_rows():
    keys = _key(1, 2, 12) + _key(1, 3, 12)
    values = struct.pack("<4Q", 4, 0, 0, 0)
    cache = _cache((1, 9, 0, 1), [(12, 100)]) + _cache()
    assert maps.combine(keys, values, 2, cache) == ({(1, 2, 12, 0, 1, 0): 4}, 0)


NEW_VMX = KernelBtf(available=True, proto="new", vendors={"vmx"})
NEW_NONE = KernelBtf(available=True, proto="new", flavour="pvm")
OLD = KernelBtf(available=True, proto="old", vendors={"svm"})
NOBTF = KernelBtf(available=False, error="no")


def _kinds(attempts):
    return [(a.obj == LEGACY_OBJECT and "legacy " or "") + a.kind for a in attempts]


@pytest.mark.parametrize("kbtf,mode,want", [
    (NEW_VMX, "auto", ["tp_btf", "raw_tp", "tracepoint"]),
    (OLD, "auto", ["tp_btf", "raw_tp", "tracepoint"]),
    (NEW_NONE, "auto", ["tracepoint"]),
    (NEW_NONE, "tp_btf", ["tp_btf"]),
    (NEW_VMX, "raw_tp", ["raw_tp"]),
    (NOBTF, "auto", ["legacy raw_tp", "legacy tracepoint"]),
    (NOBTF, "tracepoint", ["legacy tracepoint"]),
])
def test_plan_order(kbtf, mode, want):
    attempts, _ = plan("kvm_exit", mode, kbtf)
    assert _kinds(attempts) == want


def test_plan_programs_follow_the_prototype():
    assert plan("kvm_exit", "auto", OLD)[0][0] == Attempt(CORE_OBJECT, "handle_kvm_exit_btf_old", "tp_btf")
    assert plan("kvm_exit", "auto", NEW_VMX)[0][1] == Attempt(CORE_OBJECT, "handle_kvm_exit_raw", "raw_tp")
    assert plan("kvm_exit", "auto", NOBTF)[0][0].prog == "handle_kvm_exit_raw_old"
    assert plan("kvm_pio", "auto", NEW_NONE)[0][0].prog == "handle_kvm_pio_btf"


def test_plan_notes_and_refusals():
    assert "UNREADABLE" in plan("kvm_exit", "tp_btf", NEW_NONE)[1][0]
    with pytest.raises(KvmexitError, match="tp_btf mode needs kernel BTF"):
        plan("kvm_exit", "tp_btf", NOBTF)
    # kvm without module BTF (Debian 5.10): the old prototype's raw_tp first, never tp_btf
    no_typedef = KernelBtf(available=True, proto=None)
    assert plan("kvm_exit", "auto", no_typedef)[0] == [Attempt(LEGACY_OBJECT, "handle_kvm_exit_raw_old", "raw_tp"),
                                                        Attempt(CORE_OBJECT, "handle_kvm_exit_tp", "tracepoint")]
    assert _kinds(plan("kvm_exit", "raw_tp", no_typedef)[0]) == ["legacy raw_tp"]
    with pytest.raises(KvmexitError, match="tp_btf mode needs BTF of the kvm module"):
        plan("kvm_exit", "tp_btf", no_typedef)
    with pytest.raises(KvmexitError, match="-v needs vCPU ids"):
        plan("kvm_exit", "auto", NOBTF, need_vcpu=True, tp_vcpu=False)
    # a record without vcpu_id drops the tracepoint, never the BTF modes
    assert _kinds(plan("kvm_exit", "auto", NEW_VMX, need_vcpu=True, tp_vcpu=False)[0]) == ["tp_btf", "raw_tp"]
    assert _kinds(plan("kvm_exit", "auto", NEW_VMX, tp_ok=False)[0]) == ["tp_btf", "raw_tp"]


def test_parse_format():
    text = ("name: kvm_exit\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
            "\tfield:unsigned int exit_reason;\toffset:8;\tsize:4;\tsigned:0;\n"
            "\tfield:char name[16];\toffset:12;\tsize:16;\tsigned:0;\n\nprint fmt: \"x %d\", REC->x\n")
    fields, fmt = parse_format(text)
    assert fields == {"common_type": (0, 2), "exit_reason": (8, 4), "name": (12, 16)}
    assert fmt == '"x %d", REC->x'


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


def test_debugfs_is_left_alone_with_libbpf_1(monkeypatch):
    from kvmexit import kernel
    import subprocess
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    kernel.debugfs_for_old_libbpf((1, 1, 2))
    assert calls == []


def test_selftest_verdict_on_vmx_and_svm_hosts():
    """What selftest checks where kvm_exit fires: the guest's own reasons, exactly;
    the host's own exits for the guest (interrupts, EPT faults) are allowed."""
    from kvmexit import selftest
    progs = selftest.workload(2)
    tids = [101, 102]
    vmx = selftest.expected_counts(progs, tids, 1)
    assert vmx == {(101, 30): 1009 + 503 + 1, (101, 10): 23, (101, 31): 11 + 1, (101, 32): 13, (101, 12): 7,
                   (102, 30): 1220 + 604 + 1, (102, 10): 24, (102, 31): 12 + 1, (102, 32): 14, (102, 12): 8}
    svm = selftest.expected_counts(progs, tids, 2)
    assert svm[(101, 0x7C)] == 11 + 1 + 13 and svm[(102, 0x7B)] == 1220 + 604 + 1
    seen = dict(vmx)
    seen[(101, 1)] = 57          # EXTERNAL_INTERRUPT: the host's, not checked
    lines, bad, short = selftest.compare(vmx, seen, 1, exact_set=False)
    assert (bad, short, len(lines)) == (0, 0, 10)
    seen[(102, 12)] = 9
    lines, bad, short = selftest.compare(vmx, seen, 1, exact_set=False)
    assert (bad, short) == (1, 0) and "FAIL tid 102      HLT" in [l for l in lines if "FAIL" in l][0]


def test_selftest_accounts_for_events_the_kernel_skipped():
    """Counts short by no more than the events the kernel reported skipping
    are accounted for; a shortfall beyond them, or any excess, fails."""
    from kvmexit import selftest
    want = {(7, 0x80): 1009, (7, 0x70): 503, (8, 0x81): 1220}
    seen = {(7, 0x80): 1000, (7, 0x70): 503, (8, 0x81): 1217}
    lines, bad, short = selftest.compare(want, seen, 3, skipped=12)
    assert (bad, short) == (0, 2)
    assert lines == ["  ok   tid 7        PORT_0x0070                   503 == 503",
                     "  miss tid 7        PORT_0x0080                  1000 < 1009",
                     "  miss tid 8        PORT_0x0081                  1217 < 1220",
                     "  ok   12 short in all; the kernel skipped the program for 12 events and said so"]
    lines, bad, short = selftest.compare(want, seen, 3, skipped=11)
    assert (bad, short) == (2, 0) and lines[-1].startswith("  FAIL 12 short in all")
    lines, bad, short = selftest.compare(want, {**seen, (7, 0x70): 504}, 3, skipped=12)
    assert bad == 1 and "  FAIL tid 7        PORT_0x0070                   504 != 503" in lines
    assert selftest.compare(want, seen, 3)[1:] == (2, 0)      # nothing skipped: short is wrong


def test_libbpf_private_error_codes_get_libbpf_text():
    from kvmexit import _libbpf
    assert str(_libbpf._error(4003, "bpf_object__load")) == "bpf_object__load: Endian mismatch"
    assert str(_libbpf._error(13, "bpf_object__load")) == "bpf_object__load: Permission denied"


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
