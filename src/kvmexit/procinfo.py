# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Who a VM process and a vCPU thread are: VM names from the VMM's command
line, thread names from /proc.  Looked up once per process or thread and
remembered (a pid is not reused while the tool counts it in practice; a
name that cannot be read is "-")."""

UNKNOWN = "-"


def _qemu_name(value):
    """QEMU -name: "guest=NAME,debug-threads=on", "NAME,process=..." or "NAME"; ",," is a comma."""
    parts, cur, i = [], "", 0
    while i < len(value):
        if value[i] == ",":
            if value[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += value[i]
        i += 1
    parts.append(cur)
    for p in parts:
        if p.startswith("guest="):
            return p[len("guest="):]
    first = parts[0]
    return first if "=" not in first else None


# VMM option -> parser of its value (QEMU and libvirt's QEMU, Firecracker, kvmtool, ...)
_OPTIONS = {
    "-name": _qemu_name,          # QEMU; libvirt passes -name guest=<domain>,debug-threads=on
    "--name": lambda v: v,        # kvmtool (lkvm run --name), kvmexit guest
    "--id": lambda v: v,          # Firecracker
}


def vm_name_from_argv(argv):
    """The VM name a VMM's arguments carry, or None (pure).

    Also cloud-hypervisor and others started with --api-socket PATH: the
    socket's file name without its extension.
    """
    for i, arg in enumerate(argv):
        opt, eq, val = arg.partition("=")
        if opt in _OPTIONS:
            value = val if eq else (argv[i + 1] if i + 1 < len(argv) else None)
            if value:
                name = _OPTIONS[opt](value)
                if name:
                    return name
    for i, arg in enumerate(argv):
        if arg.startswith("--api-socket"):
            opt, eq, val = arg.partition("=")
            value = val if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            value = value.split(",")[0]
            value = value[len("path="):] if value.startswith("path=") else value
            base = value.rsplit("/", 1)[-1]
            if base:
                return base.rsplit(".", 1)[0]
    return None


class Names:
    """Cached VM and thread names."""

    def __init__(self, proc="/proc"):
        self.proc = proc
        self._vm, self._comm = {}, {}

    def vm(self, pid):
        if pid not in self._vm:
            try:
                with open("%s/%d/cmdline" % (self.proc, pid), "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
                self._vm[pid] = vm_name_from_argv(argv[1:]) or UNKNOWN
            except OSError:
                self._vm[pid] = UNKNOWN
        return self._vm[pid]

    def comm(self, pid, tid):
        if tid not in self._comm:
            try:
                with open("%s/%d/task/%d/comm" % (self.proc, pid, tid)) as f:
                    self._comm[tid] = f.read().rstrip("\n") or UNKNOWN
            except OSError:
                self._comm[tid] = UNKNOWN
        return self._comm[tid]
