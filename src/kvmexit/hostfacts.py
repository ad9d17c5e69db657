# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What --explain's rules read on this host, once: KVM's module
parameters, each VM's command line, its vCPU threads' CPU affinity.  A
file that is absent (another kernel, another vendor, a VM gone) is a
note, never an error."""
import os
import re
from dataclasses import dataclass, field

from . import kernel

# the modules whose parameters bear on exits (kvm_pvm has none of these)
MODULES = ("kvm", "kvm_intel", "kvm_amd")


@dataclass
class VmFacts:
    """One VM process: its command line's options that rules read, and how its vCPU threads are placed."""
    pid: int
    argv: list
    options: dict            # "-cpu" -> "host,+x2apic", "-machine" -> "q35,...": as QEMU takes them (_options)
    vcpus: int               # KVM vCPUs (its kvm-vcpu fds)
    affinity: dict = field(default_factory=dict)   # vCPU thread -> Cpus_allowed_list, as they are seen

    @property
    def pinned(self):
        """vCPU threads allowed on exactly one CPU."""
        return sum(1 for cpus in self.affinity.values() if cpus and "," not in cpus and "-" not in cpus)

    def add_threads(self, tids, proc="/proc"):
        """Read the CPU affinity of vCPU threads not read yet (those still there)."""
        for tid in tids:
            if tid in self.affinity:
                continue
            try:
                with open(os.path.join(proc, str(self.pid), "task", str(tid), "status")) as f:
                    self.affinity[tid] = next((l.split(":", 1)[1].strip() for l in f
                                               if l.startswith("Cpus_allowed_list:")), "")
            except OSError:
                continue

    @property
    def vmm(self):
        """The VMM program's name: its executable's, or its script's under an interpreter."""
        if not self.argv:
            return None
        name = self.argv[0].rsplit("/", 1)[-1]
        if re.match(r"(python|perl|ruby|node|sh$|bash$)", name):
            rest = self.argv[1:]
            if rest[:1] == ["-m"] and len(rest) > 1:
                return rest[1]
            return next((a.rsplit("/", 1)[-1] for a in rest if not a.startswith("-")), name)
        return name

    def cpu_flags(self):
        """The -cpu option's flags: {"x2apic": True, "kvm-pv-unhalt": False, ...} ("+f", "-f", "f=on|off",
        and a bare "f", which QEMU takes as on)."""
        out = {}
        for part in (self.options.get("-cpu") or "").split(",")[1:]:
            if part[:1] in "+-" and part[1:]:
                out[part[1:]] = part[0] == "+"
            elif "=" in part:
                k, v = part.split("=", 1)
                out[k] = v in ("on", "true", "yes")
            elif part:
                out[part] = True
        return out


@dataclass
class HostFacts:
    params: dict = field(default_factory=dict)   # "kvm_intel.enable_apicv" -> "Y"
    notes: list = field(default_factory=list)    # what could not be read, and why
    host_cpus: int = 0
    clocksource: str = None                      # the host's current clocksource
    vms: dict = field(default_factory=dict)      # pid -> VmFacts or None (gone)
    memory: dict = field(default_factory=dict)   # host memory policy: MEMORY's names -> value read


CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
# the host's memory policy, which moves or merges guest pages (EPT/NPF and stage-2 faults)
MEMORY = {"numa_balancing": "/proc/sys/kernel/numa_balancing",
          "thp": "/sys/kernel/mm/transparent_hugepage/enabled",
          "ksm": "/sys/kernel/mm/ksm/run"}
# QEMU options whose repeats QEMU merges into one list (QemuOptsList merge_lists)
MERGED = ("-overcommit", "-machine", "-M")


def read_memory(paths=MEMORY):
    """{name: value} of the host's memory policy files; THP's [selected] mode."""
    out = {}
    for name, path in paths.items():
        value = _read(path)
        if value is None:
            continue
        m = re.search(r"\[(\w+)\]", value)
        out[name] = m.group(1) if m else value
    return out


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def read_params(sys_module="/sys/module"):
    """({"module.param": value}, notes) for MODULES."""
    params, notes = {}, []
    for m in MODULES:
        d = os.path.join(sys_module, m, "parameters")
        if not os.path.isdir(d):
            notes.append("%s is not loaded: its parameters are not read" % m)
            continue
        for name in sorted(os.listdir(d)):
            try:
                with open(os.path.join(d, name)) as f:
                    params["%s.%s" % (m, name)] = f.read().strip()
            except OSError:
                pass        # write-only or root-only parameters: not facts we use
    return params, notes


def _options(argv):
    """Each -option of a command line as QEMU takes it: the repeats of a
    merged one (MERGED) joined with ",", else the last value."""
    opts = {}
    for i, a in enumerate(argv[:-1]):
        if a.startswith("-") and not argv[i + 1].startswith("-"):
            name = "-" + a.lstrip("-")
            opts[name] = "%s,%s" % (opts[name], argv[i + 1]) if name in MERGED and name in opts else argv[i + 1]
    return opts


def read_vm(pid, tids=(), proc="/proc"):
    """VmFacts of a VM process, None when it is gone."""
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    if not argv:            # a process that has exited and waits to be reaped
        return None
    have = kernel.vcpus_of(pid) if proc == "/proc" else None
    vm = VmFacts(pid, argv, _options(argv), len(have) if have else len(tids))
    vm.add_threads(tids, proc)
    return vm


class Facts:
    """HostFacts read once: the host's at the first use, each VM's when it is
    first seen (its vCPU threads' placement as they come)."""

    def __init__(self, sys_module="/sys/module", proc="/proc", memory=MEMORY):
        self.sys_module, self.proc, self.memory, self.host = sys_module, proc, memory, None

    def update(self, vms):
        """vms: {pid: tids} seen now; returns the HostFacts."""
        if self.host is None:
            params, notes = read_params(self.sys_module)
            self.host = HostFacts(params, notes, os.cpu_count() or 0, _read(CLOCKSOURCE),
                                  memory=read_memory(self.memory))
        for pid, tids in vms.items():
            if pid not in self.host.vms:
                self.host.vms[pid] = read_vm(pid, tids, self.proc)
                if self.host.vms[pid] is None:
                    self.host.notes.append("PID %d had ended: its command line and vCPU placement are not read"
                                           % pid)
            elif self.host.vms[pid] is not None:
                self.host.vms[pid].add_threads(tids, self.proc)
        return self.host

    def seen(self, totals):
        """update() with the VMs and vCPU threads of a snapshot's totals."""
        vms = {}
        for k in totals:
            vms.setdefault(k.tgid, set()).add(k.tid)
        return self.update({pid: sorted(tids) for pid, tids in vms.items()})
