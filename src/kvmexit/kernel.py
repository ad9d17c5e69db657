# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What the running kernel offers: tracefs events, their record layout,
kernel BTF (kvm_exit prototype, vendor vCPU types) and the VMs on the host."""
import ctypes as ct
import os
import re
from dataclasses import dataclass, field

from . import _libbpf
from . import arch as arches
from .abi import TP_LAYOUT
from .errors import KvmexitError, LibbpfError

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


# what loading and attaching kvmexit's programs takes: {capability: what needs it}
NEEDED_CAPS = {CAP_BPF: ("CAP_BPF", "loading its BPF programs and maps"),
               CAP_PERFMON: ("CAP_PERFMON", "attaching them to tracepoints")}


def missing_caps():
    """The names of NEEDED_CAPS not in the effective set ([] with CAP_SYS_ADMIN,
    which stands for both); uid 0 without them cannot trace either."""
    try:
        with open("/proc/self/status") as f:
            eff = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return [name for name, _ in NEEDED_CAPS.values()]
    if eff >> CAP_SYS_ADMIN & 1:
        return []
    return [name for cap, (name, _) in NEEDED_CAPS.items() if not eff >> cap & 1]


def bpf_capable():
    """CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON, in the effective set."""
    return not missing_caps()


def caps_error():
    """The one line that names the capabilities missing and what needs them."""
    missing = missing_caps()
    return ("kvmexit needs %s, or root: %s %s missing; run it with sudo or grant %s" % (
        " and ".join("%s (%s)" % v for v in NEEDED_CAPS.values()), " and ".join(missing),
        "is" if len(missing) == 1 else "are", "it" if len(missing) == 1 else "them"))


class TracefsUnreadable(KvmexitError):
    """tracefs is mounted, but readable by root only."""

    def __init__(self, path):
        super().__init__("%s is readable by root only: the tracepoint mode needs CAP_DAC_READ_SEARCH (or root)"
                         % path)


def tracefs(mount=True):
    """The tracefs directory, mounting it at /sys/kernel/tracing when missing (root only)."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events")):
            return d
    for d in TRACEFS_DIRS:
        if os.path.ismount(d) and not os.access(d, os.R_OK | os.X_OK):
            raise TracefsUnreadable("tracefs (%s)" % d)
    if mount and os.geteuid() == 0 and os.path.isdir(TRACEFS_DIRS[0]):
        import subprocess
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_DIRS[0]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if os.path.isdir(os.path.join(TRACEFS_DIRS[0], "events")):
            return TRACEFS_DIRS[0]
    raise KvmexitError("tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")


def debugfs_for_old_libbpf(version):
    """libbpf before 1.0 finds tracepoint ids only under /sys/kernel/debug/tracing
    (tracefs fallback: 1fe0248c, libbpf 1.0): mount debugfs there when needed."""
    if version >= (1, 0) or os.path.isdir("/sys/kernel/debug/tracing/events"):
        return
    if os.geteuid() == 0 and os.path.isdir("/sys/kernel/debug"):
        import subprocess
        subprocess.run(["mount", "-t", "debugfs", "nodev", "/sys/kernel/debug"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not os.path.isdir("/sys/kernel/debug/tracing/events"):
        raise KvmexitError("libbpf %d.%d needs debugfs for tracepoints: mount -t debugfs nodev /sys/kernel/debug "
                           "(or install libbpf 1.0 or newer)" % version[:2])


def event_dir(category, name):
    return os.path.join(tracefs(), "events", category, name)


_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);")


def parse_format(text):
    """Fields of a tracefs event format file.

    Returns:
        ({field: (offset, size)}, print_fmt)
    """
    fields = {}
    for m in _FIELD.finditer(text):
        name = re.sub(r"\[.*\]$", "", m.group("decl").split()[-1])
        fields[name] = (int(m.group("off")), int(m.group("size")))
    pf = text.split("print fmt:", 1)
    return fields, (pf[1].strip() if len(pf) > 1 else "")


def event_format(category, name):
    """parse_format() of an event; KvmexitError if the event does not exist."""
    path = os.path.join(event_dir(category, name), "format")
    try:
        with open(path) as f:
            return parse_format(f.read())
    except FileNotFoundError:
        raise KvmexitError("tracepoint %s:%s not found: the kvm module is not loaded "
                           "(modprobe kvm_intel or kvm_amd)" % (category, name)) from None
    except PermissionError:
        raise TracefsUnreadable(path) from None


def check_tp_layout(arch, event, fields):
    """True if the record has the offsets the tracepoint program of arch
    ("x86", "arm64") reads (struct kvmexit_tp_* of kvm_exit.h, mirrored in abi.py)."""
    return all(fields.get(f) == want for f, want in TP_LAYOUT[(arch, event)].items())


# -- kernel BTF -------------------------------------------------------------
@dataclass
class KernelBtf:
    """BTF facts that decide the attach mode (tracer.plan)."""
    available: bool = False
    proto: str = None              # "new" (vcpu, isa), "old" (reason, vcpu, isa) or None
    vendors: set = field(default_factory=set)   # {"vmx", "svm"} vendor structs found
    flavour: str = None            # "pvm" when the KVM is kvm_pvm (never emits kvm_exit)
    error: str = None
    direct: bool = False           # the arch's direct programs are worth a try (arch.Arch.direct_since)


def _resolve(lib, btf, tid):
    """Follow typedefs and modifiers to the underlying kind."""
    for _ in range(32):
        t = lib.btf__type_by_id(btf, tid).contents
        if t.kind in (_libbpf.BTF_KIND_TYPEDEF, _libbpf.BTF_KIND_VOLATILE,
                      _libbpf.BTF_KIND_CONST, _libbpf.BTF_KIND_RESTRICT):
            tid = t.size_or_type
            continue
        return t
    return t


def tracepoint_proto(lib, btf, event):
    """Kinds of the tracepoint's arguments from its btf_trace_<event> typedef.

    Returns:
        list of BTF kinds (without the leading void *__data), or None.
    """
    tid = lib.btf__find_by_name_kind(btf, ("btf_trace_" + event).encode(), _libbpf.BTF_KIND_TYPEDEF)
    if tid < 0:
        return None
    ptr = _resolve(lib, btf, tid)
    if ptr.kind != _libbpf.BTF_KIND_PTR:
        return None
    proto = lib.btf__type_by_id(btf, ptr.size_or_type)
    if proto.contents.kind != _libbpf.BTF_KIND_FUNC_PROTO:
        return None
    base = ct.addressof(proto.contents) + ct.sizeof(_libbpf.btf_type)
    params = (_libbpf.btf_param * proto.contents.vlen).from_address(base)
    return [_resolve(lib, btf, p.type).kind for p in params[1:]]


def kvm_exit_proto(lib, btf):
    """"new" for (vcpu, isa) (>= 5.16), "old" for (reason, vcpu, isa), else None."""
    kinds = tracepoint_proto(lib, btf, "kvm_exit")
    if not kinds:
        return None
    if kinds[0] == _libbpf.BTF_KIND_PTR:
        return "new"
    if kinds[0] == _libbpf.BTF_KIND_INT:
        return "old"
    return None


def has_struct(lib, btf, name):
    return lib.btf__find_by_name_kind(btf, name.encode(), _libbpf.BTF_KIND_STRUCT) >= 0


def probe_btf():
    """Look at vmlinux and kvm module BTF.  Never raises: a kernel without
    usable BTF gives KernelBtf(available=False) and the legacy object."""
    lib = _libbpf.load()
    info = KernelBtf()
    try:
        vmlinux = lib.btf__load_vmlinux_btf()
    except LibbpfError as e:
        info.error = "kernel BTF unavailable (%s)" % e
        return info
    info.available = True
    info.direct = arches.release_at_least(os.uname().release, arches.current().direct_since)
    btfs, loaded = [vmlinux], []
    try:
        for mod in ("kvm", "kvm_intel", "kvm_amd"):
            if os.path.exists("/sys/kernel/btf/" + mod):
                try:
                    m = lib.btf__load_module_btf(mod.encode(), vmlinux)
                except LibbpfError:
                    continue
                btfs.append(m)
                loaded.append(m)
        for btf in btfs:
            info.proto = info.proto or kvm_exit_proto(lib, btf)
            for vendor in ("vmx", "svm"):
                if has_struct(lib, btf, "vcpu_" + vendor):
                    info.vendors.add(vendor)
            if has_struct(lib, btf, "vcpu_pvm"):
                info.flavour = "pvm"
    finally:
        for b in loaded:
            lib.btf__free(b)
        lib.btf__free(vmlinux)
    return info


# -- VMs on this host -------------------------------------------------------
_VCPU_FD = re.compile(r"anon_inode:kvm-vcpu:(\d+)$")


def vcpus_of(pid):
    """vcpu_ids of the vCPUs process pid created (KVM names each vCPU fd
    "anon_inode:kvm-vcpu:<vcpu_id>"), or None if the process does not exist."""
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except FileNotFoundError:
        return None
    except PermissionError:
        return set()
    ids = set()
    for fd in fds:
        try:
            m = _VCPU_FD.match(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


def vm_processes():
    """{pid: vcpu_ids} of every process on the host holding KVM vCPUs."""
    vms = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            ids = vcpus_of(int(d))
            if ids:
                vms[int(d)] = ids
    return vms


def process_exists(pid):
    return os.path.exists("/proc/%d" % pid)


def thread_exists(tid):
    return os.path.exists("/proc/%d/status" % tid)
