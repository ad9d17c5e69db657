# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""How the attach mode is chosen, from kernel BTF and the tracepoint
records (pure), and what a kernel or libbpf that cannot do it says."""
import pytest

from kvmexit.errors import KvmexitError
from kvmexit.skeleton import CORE_OBJECT, LEGACY_OBJECT
from kvmexit.kernel import KernelBtf, parse_format
from kvmexit.tracer import Attempt, plan


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


@pytest.mark.parametrize("version,mounted,mount_works,calls,error", [
    ((1, 1, 2), False, True, 0, None),      # libbpf 1.x finds tracefs itself: debugfs left alone
    ((0, 8, 1), True, True, 0, None),       # already there
    ((0, 8, 1), False, True, 1, None),      # mounted for it
    ((0, 5, 0), False, False, 1, "libbpf 0.5 needs debugfs for tracepoints: mount -t debugfs nodev "
                                 "/sys/kernel/debug (or install libbpf 1.0 or newer)"),
])
def test_debugfs_only_for_old_libbpf(monkeypatch, version, mounted, mount_works, calls, error):
    """An old libbpf finds tracepoints under debugfs only: mounted when missing, said when that fails."""
    from kvmexit import kernel
    import subprocess
    state = {"mounted": mounted, "calls": []}

    def run(args, **kw):
        state["calls"].append(args)
        state["mounted"] = mount_works
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(kernel.os.path, "isdir", lambda p: p == "/sys/kernel/debug" or (
        p == "/sys/kernel/debug/tracing/events" and state["mounted"]))
    monkeypatch.setattr(kernel.os, "geteuid", lambda: 0)
    if error:
        with pytest.raises(KvmexitError) as e:
            kernel.debugfs_for_old_libbpf(version)
        assert str(e.value) == error
    else:
        kernel.debugfs_for_old_libbpf(version)
    assert state["calls"] == [["mount", "-t", "debugfs", "nodev", "/sys/kernel/debug"]] * calls


def test_libbpf_private_error_codes_get_libbpf_text():
    from kvmexit import _libbpf
    assert str(_libbpf._error(4003, "bpf_object__load")) == "bpf_object__load: Endian mismatch"
    assert str(_libbpf._error(13, "bpf_object__load")) == "bpf_object__load: Permission denied"


def test_arm64_plan():
    """arm64: one object (CO-RE, kernel BTF needed), every mode with vCPU ids;
    tracepoint mode only where the record has arm64's layout; no calibration hook."""
    from kvmexit.arch import ARM64
    arm = KernelBtf(available=True, proto="old")           # arm64's kvm_exit starts with an int
    attempts, notes = plan("kvm_exit", "auto", arm, need_vcpu=True, arch=ARM64)
    assert [(a.obj, a.prog, a.kind) for a in attempts] == [
        ("kvm_exit_arm64.bpf.o", "handle_kvm_exit_arm64_btf", "tp_btf"),
        ("kvm_exit_arm64.bpf.o", "handle_kvm_exit_arm64_raw", "raw_tp"),
        ("kvm_exit_arm64.bpf.o", "handle_kvm_exit_arm64_tp", "tracepoint")] and notes == []
    assert _kinds(plan("kvm_exit", "auto", arm, tp_ok=False, arch=ARM64)[0]) == ["tp_btf", "raw_tp"]
    assert _kinds(plan("kvm_exit", "raw_tp", arm, arch=ARM64)[0]) == ["raw_tp"]
    with pytest.raises(KvmexitError, match="needs kernel BTF"):
        plan("kvm_exit", "auto", NOBTF, arch=ARM64)
    with pytest.raises(KvmexitError, match="calibration hook of x86 KVM"):
        plan("kvm_pio", "auto", arm, arch=ARM64)
    with pytest.raises(KvmexitError, match="no way to attach"):
        plan("kvm_exit", "tracepoint", arm, tp_ok=False, arch=ARM64)


def test_direct_programs_first_where_the_kernel_should_take_them():
    """6.17+ (x86) and 6.11+ (arm64): the direct program of a kind first, the
    helper-reading one after it (what loads where a verifier refuses the
    direct one); only kvm_exit's new prototype has one on x86."""
    from dataclasses import replace
    from kvmexit.arch import ARM64
    attempts, _ = plan("kvm_exit", "auto", replace(NEW_VMX, direct=True))
    assert [(a.obj, a.prog, a.kind) for a in attempts] == [
        ("kvm_exit_direct.bpf.o", "handle_kvm_exit_btf_direct", "tp_btf"),
        (CORE_OBJECT, "handle_kvm_exit_btf", "tp_btf"),
        ("kvm_exit_direct.bpf.o", "handle_kvm_exit_raw_direct", "raw_tp"),
        (CORE_OBJECT, "handle_kvm_exit_raw", "raw_tp"),
        (CORE_OBJECT, "handle_kvm_exit_tp", "tracepoint")]
    assert [a.prog for a in plan("kvm_exit", "raw_tp", replace(NEW_VMX, direct=True))[0]] == [
        "handle_kvm_exit_raw_direct", "handle_kvm_exit_raw"]
    assert [a.prog for a in plan("kvm_exit", "auto", replace(OLD, direct=True))[0]] == [
        "handle_kvm_exit_btf_old", "handle_kvm_exit_raw_old", "handle_kvm_exit_tp"]
    assert [a.prog for a in plan("kvm_pio", "auto", replace(NEW_VMX, direct=True))[0]] == [
        "handle_kvm_pio_btf", "handle_kvm_pio_raw", "handle_kvm_pio_tp"]
    arm = KernelBtf(available=True, proto="old", direct=True)
    assert [a.prog for a in plan("kvm_exit", "auto", arm, arch=ARM64)[0]] == [
        "handle_kvm_exit_arm64_btf_direct", "handle_kvm_exit_arm64_btf", "handle_kvm_exit_arm64_raw",
        "handle_kvm_exit_arm64_tp"]


@pytest.mark.parametrize("release,version,want", [
    ("6.17.0", (6, 17), True), ("7.3.4+deb13-amd64", (6, 17), True), ("6.16.12+deb13-amd64", (6, 17), False),
    ("6.12.118+deb13-arm64", (6, 11), True), ("6.1.0-57-arm64", (6, 11), False), ("5.10.0-32-amd64", (6, 17), False),
    ("6.18.0-pvm", (6, 17), True), ("10.0.1", (6, 17), True), ("weird", (6, 17), False),
])
def test_release_at_least(release, version, want):
    from kvmexit.arch import release_at_least
    assert release_at_least(release, version) is want
