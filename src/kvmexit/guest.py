# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A built-in KVM guest: pure Python over /dev/kvm, no QEMU.

A VM with N vCPUs, each on its own thread, each running a real-mode program
of exit-causing instructions with known counts.  Real mode runs under every
KVM (VMX unrestricted guest, SVM, PVM's emulator).

Each vCPU's program is a list of steps (see Step); it always ends with one
`out` to DONE_PORT, which ends the vCPU thread.  A SYNC step makes the vCPU
thread wait in userspace for the caller (pacing, "attach while running").
"""
import ctypes as ct
import fcntl
import mmap
import os
import struct
import threading
from dataclasses import dataclass

from .errors import KvmexitError

# ioctls (include/uapi/linux/kvm.h, x86-64)
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84

# kvm_run.exit_reason
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_NAMES = {0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
                  8: "SHUTDOWN", 9: "FAIL_ENTRY", 17: "INTERNAL_ERROR"}

DONE_PORT = 0x0F4   # last exit of every vCPU program
SYNC_PORT = 0x0F5   # the vCPU thread waits for the caller here
MSR_MISC_ENABLE = 0x1A0  # intercepted and handled in the kernel by every KVM

PR_SET_NAME = 15
_libc = ct.CDLL(None, use_errno=True)

MEM_SIZE = 0x10000
CODE_BASE = 0x1000
CODE_STRIDE = 0x1000  # one page of code per vCPU


@dataclass(frozen=True)
class Step:
    """One block of a vCPU program.

    kind: "out" (port given), "rdmsr", "wrmsr", "cpuid", "hlt" or "sync".
    count: how many times the instruction runs (exits it causes).
    """
    kind: str
    count: int = 1
    port: int = 0


def _imm16(v):
    return struct.pack("<H", v)


def assemble(steps, vcpu_id):
    """Real-mode machine code for one vCPU program (pure).

    Each counted block loops on SI: `mov si, n; L: <insn>; dec si; jnz L`.
    `out` writes the vCPU id (in AX) to its port, so kvm_pio's value names
    the vCPU.  wrmsr blocks read the MSR once first (one extra rdmsr exit)
    and write the same value back.
    """
    code = bytearray()

    def loop(body, n):
        while n > 0:
            chunk = min(n, 0xFFFF)
            code.extend(b"\xBE" + _imm16(chunk))          # mov si, chunk
            start = len(code)
            code.extend(body)
            code.extend(b"\x4E")                          # dec si
            rel = start - (len(code) + 2)
            code.extend(b"\x75" + struct.pack("<b", rel))  # jnz start
            n -= chunk

    mov_ecx_msr = b"\x66\xB9" + struct.pack("<I", MSR_MISC_ENABLE)
    for s in list(steps) + [Step("out", 1, DONE_PORT)]:
        if s.count <= 0:
            continue
        if s.kind in ("out", "sync"):
            port = SYNC_PORT if s.kind == "sync" else s.port
            code.extend(b"\xBA" + _imm16(port) + b"\xB8" + _imm16(vcpu_id))  # mov dx, port; mov ax, id
            loop(b"\xEF", s.count)                                          # out dx, ax
        elif s.kind == "rdmsr":
            loop(mov_ecx_msr + b"\x0F\x32", s.count)
        elif s.kind == "wrmsr":
            code.extend(mov_ecx_msr + b"\x0F\x32")        # rdmsr once
            loop(b"\x0F\x30", s.count)                    # wrmsr, same value
        elif s.kind == "cpuid":
            loop(b"\x66\x31\xC0\x0F\xA2", s.count)        # xor eax, eax; cpuid
        elif s.kind == "hlt":
            loop(b"\xF4", s.count)
        else:
            raise ValueError("unknown step kind %r" % s.kind)
    code.extend(b"\xF4\xEB\xFD")  # not reached: hlt; jmp $-1
    if len(code) > CODE_STRIDE:
        raise ValueError("program too long (%d bytes of code, at most %d)" % (len(code), CODE_STRIDE))
    return bytes(code)


def parse_program(spec):
    """Steps from "out:0x80:1000,cpuid:23,hlt:5,sync" (kind[:port]:count, pure)."""
    steps = []
    for item in filter(None, spec.split(",")):
        parts = item.split(":")
        try:
            if parts[0] == "out" and len(parts) == 3:
                steps.append(Step("out", int(parts[2], 0), int(parts[1], 0)))
            elif parts[0] in ("rdmsr", "wrmsr", "cpuid", "hlt", "sync") and len(parts) <= 2:
                steps.append(Step(parts[0], int(parts[1], 0) if len(parts) == 2 else 1))
            else:
                raise ValueError
        except ValueError:
            raise ValueError("bad guest step %r: use out:PORT:COUNT, rdmsr:N, wrmsr:N, cpuid:N, hlt:N "
                             "or sync" % item) from None
        if not 0 <= steps[-1].count <= 1 << 31 or not 0 <= steps[-1].port <= 0xFFFF:
            raise ValueError("bad guest step %r: count or port out of range" % item)
    return steps


def expected_exits(steps):
    """{(kind, port): exits} a program causes, DONE_PORT included (pure)."""
    exp = {}
    for s in list(steps) + [Step("out", 1, DONE_PORT)]:
        if s.count <= 0:
            continue
        key = ("out", SYNC_PORT if s.kind == "sync" else s.port) if s.kind in ("out", "sync") else (s.kind, 0)
        exp[key] = exp.get(key, 0) + s.count
        if s.kind == "wrmsr":
            exp[("rdmsr", 0)] = exp.get(("rdmsr", 0), 0) + 1
    return exp


def _open_kvm():
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmexitError("/dev/kvm not found: load kvm (modprobe kvm_intel or kvm_amd) "
                           "or enable virtualization for this machine") from None
    except PermissionError:
        raise KvmexitError("/dev/kvm is not accessible: run as root or join the kvm group") from None
    if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
        os.close(fd)
        raise KvmexitError("/dev/kvm speaks an unknown KVM API version")
    return fd


class Guest:
    """A VM whose vCPU threads run the given programs.

    Args:
        programs: one list of Step per vCPU; vCPU i gets vcpu_id i.
        sync: callable(vcpu_id, n) run on the vCPU thread at its n-th SYNC
            exit (n from 0), before the vCPU re-enters the guest.
        affinity: callable(vcpu_id, exits_so_far) -> set of CPUs or None,
            applied to the vCPU thread after each userspace exit.
        repeat: callable(vcpu_id, rounds_done) -> bool, asked at the end of
            each run of the program: True runs it again on the same thread.
    """

    def __init__(self, programs, sync=None, affinity=None, repeat=None):
        self.programs = [list(p) for p in programs]
        self.sync = sync
        self.affinity = affinity
        self.repeat = repeat
        self.rounds = [0] * len(programs)
        self.tids = [None] * len(programs)
        self.errors = []
        self._threads = []
        self._ready = threading.Barrier(len(programs) + 1)
        self._kvm = _open_kvm()
        try:
            self._vm = fcntl.ioctl(self._kvm, KVM_CREATE_VM, 0)
            self._mem = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            addr = ct.addressof(ct.c_char.from_buffer(self._mem))
            region = struct.pack("<IIQQQ", 0, 0, 0, MEM_SIZE, addr)
            fcntl.ioctl(self._vm, KVM_SET_USER_MEMORY_REGION, region)
            self._run_size = fcntl.ioctl(self._kvm, KVM_GET_VCPU_MMAP_SIZE)
            for i, prog in enumerate(self.programs):
                try:
                    code = assemble(prog, i)
                except ValueError as e:
                    raise KvmexitError("vCPU %d: %s; give smaller counts (--seconds repeats a program)"
                                       % (i, e)) from None
                base = CODE_BASE + i * CODE_STRIDE
                if base + CODE_STRIDE > MEM_SIZE:
                    raise KvmexitError("too many vCPUs for the built-in guest (at most %d)"
                                       % ((MEM_SIZE - CODE_BASE) // CODE_STRIDE))
                self._mem[base:base + len(code)] = code
        except OSError as e:
            self.close()
            raise KvmexitError("cannot create a KVM guest: %s" % e) from None
        except KvmexitError:
            self.close()
            raise

    @property
    def pid(self):
        return os.getpid()

    def _vcpu_thread(self, i):
        self.tids[i] = threading.get_native_id()
        # QEMU's vCPU thread name, so thread-name views look as on a real host
        _libc.prctl(PR_SET_NAME, ("CPU %d/KVM" % i).encode(), 0, 0, 0)
        vcpu = run = None
        try:
            try:
                vcpu = fcntl.ioctl(self._vm, KVM_CREATE_VCPU, i)
                run = mmap.mmap(vcpu, self._run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                sregs = bytearray(312)
                fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
                struct.pack_into("<QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base 0, limit 64K, selector 0
                fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
                regs = bytearray(144)
                struct.pack_into("<QQ", regs, 128, CODE_BASE + i * CODE_STRIDE, 0x2)  # rip, rflags
                fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
            except OSError as e:
                self.errors.append("vCPU %d: setup failed: %s" % (i, e))
                self._ready.abort()
                return
            try:
                self._ready.wait()
            except threading.BrokenBarrierError:
                return
            self._run(i, vcpu, run, regs)
        finally:
            if run is not None:
                run.close()
            if vcpu is not None:
                os.close(vcpu)

    def _run(self, i, vcpu, run, regs):
        """KVM_RUN until the program's done port (and no repeat asked)."""
        nsync = exits = 0
        try:
            while True:
                if self.affinity is not None:
                    cpus = self.affinity(i, exits)
                    if cpus:
                        os.sched_setaffinity(0, cpus)
                fcntl.ioctl(vcpu, KVM_RUN, 0)
                exits += 1
                reason = struct.unpack_from("<I", run, 8)[0]
                if reason == KVM_EXIT_IO:
                    port = struct.unpack_from("<H", run, 34)[0]
                    if port == DONE_PORT:
                        self.rounds[i] += 1
                        if self.repeat is None or not self.repeat(i, self.rounds[i]):
                            return
                        fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))  # from the top
                    if port == SYNC_PORT and self.sync is not None:
                        self.sync(i, nsync)
                        nsync += 1
                elif reason != KVM_EXIT_HLT:
                    self.errors.append("vCPU %d: unexpected KVM exit %s"
                                       % (i, KVM_EXIT_NAMES.get(reason, reason)))
                    return
        except OSError as e:
            self.errors.append("vCPU %d: KVM_RUN failed: %s" % (i, e))

    def start(self):
        """Create the vCPUs, each on its own thread; return once all are ready to run."""
        for i in range(len(self.programs)):
            t = threading.Thread(target=self._vcpu_thread, args=(i,), name="CPU %d/KVM" % i, daemon=True)
            t.start()
            self._threads.append(t)
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            self.join()
            raise KvmexitError("cannot start the guest: %s" % "; ".join(self.errors)) from None
        return self

    def join(self, timeout=60):
        """Wait for the vCPU threads (timeout None: as long as they run)."""
        for t in self._threads:
            t.join(timeout)
        if any(t.is_alive() for t in self._threads):
            raise KvmexitError("guest vCPU threads did not finish in %ds" % timeout)
        if self.errors:
            raise KvmexitError("guest failed: %s" % "; ".join(self.errors))

    def close(self):
        for attr in ("_vm", "_kvm"):
            fd = getattr(self, attr, None)
            if fd is not None:
                os.close(fd)
                setattr(self, attr, None)
        mem = getattr(self, "_mem", None)
        if mem is not None:
            try:
                mem.close()
            except BufferError:
                pass  # a ctypes view still references it; freed with the object
            self._mem = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
