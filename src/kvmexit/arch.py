# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What differs between the architectures kvmexit runs on, in one table:
the BPF object, the kvm_exit program of each attach kind, the isa the
exits are counted under, the program that tells each thread's vCPU where
kvm_exit names none, --detail's events, and whether the calibration hooks
exist.  Reason names live in reasons.py (by isa), the built-in guest's
machine code in guest.py (by arch name).  Adding an architecture is a row
here, its programs in kvm_exit.bpf.c and its guest code.
"""
import os
import re
from dataclasses import dataclass

from .abi import KVMEXIT_ISA_ARM64, KVMEXIT_ISA_SVM, KVMEXIT_ISA_VMX
from .errors import KvmexitError


@dataclass(frozen=True)
class Arch:
    """One architecture's side of kvm_exit.bpf.c.

    exit_programs: (attach kind, kvm_exit prototype) -> program; the
        prototype is "new" (vcpu, isa), "old" (reason, vcpu, isa) or None
        where there is one (tracepoint, arm64).
    vcpu_program: a kprobe recording each thread's vCPU id, loaded with
        every exit program, where kvm_exit carries no vCPU.
    detail_programs: tracepoint -> program of --detail.
    calibration: the kvm_pio/kvm_msr hooks exist (x86 only).
    direct_programs: (attach kind, prototype) -> the program that reads
        with plain loads where exit_programs' calls a helper, tried first
        on kernels since direct_since (x86: bpf_rdonly_cast() to void,
        6.17; arm64: bpf_get_current_task_btf() inlined by the JIT, 6.11),
        from direct_object (x86: apart, for the kfunc extern).
    """
    name: str
    machines: tuple
    isas: tuple
    core_object: str
    legacy_object: str
    exit_programs: dict
    vcpu_program: str
    detail_programs: dict
    calibration: bool
    direct_programs: dict
    direct_since: tuple
    direct_object: str


X86 = Arch(
    "x86", ("x86_64",), (KVMEXIT_ISA_VMX, KVMEXIT_ISA_SVM), "kvm_exit.bpf.o", "kvm_exit_legacy.bpf.o",
    {("tp_btf", "new"): "handle_kvm_exit_btf", ("raw_tp", "new"): "handle_kvm_exit_raw",
     ("tp_btf", "old"): "handle_kvm_exit_btf_old", ("raw_tp", "old"): "handle_kvm_exit_raw_old",
     ("tracepoint", None): "handle_kvm_exit_tp"},
    None,
    {"kvm_pio": "detail_kvm_pio", "kvm_msr": "detail_kvm_msr", "kvm_mmio": "detail_kvm_mmio",
     "kvm_fast_mmio": "detail_kvm_fast_mmio", "kvm_hypercall": "detail_kvm_hypercall",
     "kvm_userspace_exit": "detail_kvm_userspace_exit"},
    True,
    {("tp_btf", "new"): "handle_kvm_exit_btf_direct", ("raw_tp", "new"): "handle_kvm_exit_raw_direct"},
    (6, 17), "kvm_exit_direct.bpf.o")

ARM64 = Arch(
    "arm64", ("aarch64", "arm64"), (KVMEXIT_ISA_ARM64,), "kvm_exit_arm64.bpf.o", None,
    {("tp_btf", None): "handle_kvm_exit_arm64_btf", ("raw_tp", None): "handle_kvm_exit_arm64_raw",
     ("tracepoint", None): "handle_kvm_exit_arm64_tp"},
    "enter_vcpu_run",
    {"kvm_mmio": "detail_kvm_mmio", "kvm_hvc_arm64": "detail_kvm_hvc_arm64",
     "kvm_handle_sys_reg": "detail_kvm_handle_sys_reg", "kvm_wfx_arm64": "detail_kvm_wfx_arm64",
     "kvm_userspace_exit": "detail_kvm_userspace_exit"},
    False,
    {("tp_btf", None): "handle_kvm_exit_arm64_btf_direct"},
    (6, 11), "kvm_exit_arm64.bpf.o")

ARCHES = {a.name: a for a in (X86, ARM64)}


def for_machine(machine):
    """The Arch of a uname machine ("x86_64", "aarch64")."""
    for a in ARCHES.values():
        if machine in a.machines:
            return a
    raise KvmexitError("kvmexit runs on x86-64 and arm64 KVM hosts, not on %s" % machine)


def current():
    return for_machine(os.uname().machine)


def release_at_least(release, version):
    """Whether a kernel release string ("6.17.3+deb13-amd64") is version (6, 17) or later (pure)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= tuple(version)
