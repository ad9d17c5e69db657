# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""A built-in KVM guest: pure Python over /dev/kvm, no QEMU.

A VM with N vCPUs, each on its own thread, each running a program of
exit-causing instructions with known counts: on x86 real-mode code (real
mode runs under every KVM: VMX unrestricted guest, SVM, PVM's emulator), on
arm64 EL1 code with the MMU off.

Each vCPU's program is a list of steps (see Step); it always ends with one
`out` to DONE_PORT (arm64: a store to ARM64_DONE), which ends the vCPU
thread.  A SYNC step makes the vCPU thread wait in userspace for the caller
(pacing, "attach while running").
"""
import ctypes as ct
import fcntl
import mmap
import os
import signal
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
                  8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT"}

DONE_PORT = 0x0F4   # last exit of every vCPU program
SYNC_PORT = 0x0F5   # the vCPU thread waits for the caller here
MSR_MISC_ENABLE = 0x1A0  # intercepted and handled in the kernel by every KVM

PR_SET_NAME = 15
_libc = ct.CDLL(None, use_errno=True)

MEM_SIZE = 0x10000
CODE_BASE = 0x1000
CODE_STRIDE = 0x1000  # one page of code per vCPU


# -- arm64 (include/uapi/linux/kvm.h, arch/arm64/include/uapi/asm/kvm.h) ------
KVM_ARM_PREFERRED_TARGET = 0x8020AEAF   # _IOR(KVMIO, 0xaf, struct kvm_vcpu_init)
KVM_ARM_VCPU_INIT = 0x4020AEAE          # _IOW(KVMIO, 0xae, struct kvm_vcpu_init)
KVM_SET_ONE_REG = 0x4010AEAC            # _IOW(KVMIO, 0xac, struct kvm_one_reg)
KVM_ARM_VCPU_PSCI_0_2 = 2               # feature bit: PSCI 0.2+ calls handled by KVM
KVM_REG_PC = 0x6030000000100040         # KVM_REG_ARM64 | U64 | CORE | offsetof(kvm_regs, regs.pc) / 4
KVM_EXIT_MMIO = 6
KVM_EXIT_INTR = 10
ARM64_RAM = 0x40000000                  # guest-physical base of the memslot
# guest-physical addresses outside the memslot: stores there exit to userspace
ARM64_DONE = 0x10000F40                 # the last exit of every vCPU program
ARM64_SYNC = 0x10000F50                 # the vCPU thread waits for the caller here
ARM64_MMIO = 0x10001000                 # the default address of an "mmio" step
# a "wfi" step is bracketed by stores here: between them the vCPU thread is
# woken from each wfi (KVM blocks it until a signal or an interrupt)
ARM64_WFI_BEGIN = 0x10000F60
ARM64_WFI_END = 0x10000F70
WFI_KICK_S = 0.001                      # how often a vCPU in a wfi step is signalled
PSCI_VERSION = 0x84000000               # what each hvc asks (handled in the kernel)
ID_AA64PFR0_EL1 = (3, 0, 0, 4, 0)       # what each mrs reads (Op0, Op1, CRn, CRm, Op2; trapped: HCR_EL2.TID3)

# the steps each architecture's guest runs, and what "sync" is there
KINDS = {"x86": ("out", "rdmsr", "wrmsr", "cpuid", "hlt", "sync"), "arm64": ("mmio", "mrs", "hvc", "wfi", "sync")}


@dataclass(frozen=True)
class Step:
    """One block of a vCPU program.

    kind: x86: "out" (port given), "rdmsr", "wrmsr", "cpuid", "hlt";
        arm64: "mmio" (a 32-bit store, address given as port), "mrs"
        (ID_AA64PFR0_EL1), "hvc" (PSCI_VERSION), "wfi"; both: "sync".
    count: how many times the instruction runs (exits it causes).
    port: the I/O port of "out", the guest-physical address of "mmio".
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


def parse_program(spec, arch="x86"):
    """Steps from "out:0x80:1000,cpuid:23,hlt:5,sync" (x86) or
    "mmio:0x10001000:10,mrs:5,hvc:5,wfi:3,sync" (arm64): kind[:port]:count (pure)."""
    steps = []
    addressed = {"x86": "out", "arm64": "mmio"}[arch]
    plain = [k for k in KINDS[arch] if k != addressed]
    for item in filter(None, spec.split(",")):
        parts = item.split(":")
        try:
            if parts[0] == addressed and len(parts) == 3:
                steps.append(Step(addressed, int(parts[2], 0), int(parts[1], 0)))
            elif parts[0] in plain and len(parts) <= 2:
                steps.append(Step(parts[0], int(parts[1], 0) if len(parts) == 2 else 1))
            else:
                raise ValueError
        except ValueError:
            raise ValueError("bad guest step %r: use %s:%s:COUNT, %s or sync" % (
                item, addressed, "PORT" if arch == "x86" else "ADDRESS",
                ", ".join("%s:N" % k for k in plain if k != "sync"))) from None
        limit = 0xFFFF if arch == "x86" else (1 << 40) - 1
        if not 0 <= steps[-1].count <= 1 << 31 or not 0 <= steps[-1].port <= limit:
            raise ValueError("bad guest step %r: count or %s out of range"
                             % (item, "port" if arch == "x86" else "address"))
    return steps


def expected_exits(steps, arch="x86"):
    """{(kind, port): exits} a program causes, its last exit (DONE_PORT,
    ARM64_DONE) included (pure).  Syncs are outs (x86) or mmio stores (arm64)."""
    exp = {}
    addressed, done, sync = ("out", DONE_PORT, SYNC_PORT) if arch == "x86" else ("mmio", ARM64_DONE, ARM64_SYNC)
    for s in list(steps) + [Step(addressed, 1, done)]:
        if s.count <= 0:
            continue
        key = (addressed, sync if s.kind == "sync" else s.port) if s.kind in (addressed, "sync") else (s.kind, 0)
        exp[key] = exp.get(key, 0) + s.count
        if s.kind == "wrmsr":
            exp[("rdmsr", 0)] = exp.get(("rdmsr", 0), 0) + 1
        if s.kind == "wfi":
            for mark in (ARM64_WFI_BEGIN, ARM64_WFI_END):
                exp[("mmio", mark)] = exp.get(("mmio", mark), 0) + 1
    return exp


# -- arm64 machine code -----------------------------------------------------
def _a64_mov(rd, imm):
    """movz/movk: a 64-bit constant into xRd (pure, instruction words)."""
    words = [0xD2800000 | (imm & 0xFFFF) << 5 | rd]                  # movz xd, #imm16
    for hw in (1, 2, 3):
        part = imm >> 16 * hw & 0xFFFF
        if part:
            words.append(0xF2800000 | hw << 21 | part << 5 | rd)       # movk xd, #part, lsl #16*hw
    return words


def _a64_mrs(rt, op0, op1, crn, crm, op2):
    return 0xD5300000 | (op0 - 2) << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5 | rt


A64_STR_W1_X0 = 0xB9000001     # str w1, [x0]: a 32-bit store the ESR describes (ISV), so KVM hands it over
A64_HVC_0 = 0xD4000002         # hvc #0
A64_WFI = 0xD503207F
A64_SUBS_X19 = 0xF1000673      # subs x19, x19, #1: KVM's SMCCC handling writes x0-x3, never x19
A64_B_SELF = 0x14000000        # b .


def assemble_arm64(steps, vcpu_id):
    """EL1 machine code (MMU off) for one vCPU program (pure).

    Each counted block loops on x19: `mov x19, n; L: <insn>; subs x19, x19,
    #1; b.ne L`.  Stores write the vCPU id (w1), so kvm_mmio's value names
    the vCPU as `out` does on x86.  A wfi block is bracketed by stores to
    ARM64_WFI_BEGIN and ARM64_WFI_END: in between, Guest signals the vCPU
    thread every WFI_KICK_S, which ends the wait KVM puts each wfi in.
    """
    words = []

    def loop(body, n):
        while n > 0:
            chunk = min(n, 0xFFFF)
            words.extend(_a64_mov(19, chunk))
            start = len(words)
            words.extend(body)
            words.append(A64_SUBS_X19)
            words.append(0x54000001 | ((start - len(words)) & 0x7FFFF) << 5)   # b.ne start
            n -= chunk

    for s in list(steps) + [Step("mmio", 1, ARM64_DONE)]:
        if s.count <= 0:
            continue
        if s.kind in ("mmio", "sync"):
            words.extend(_a64_mov(0, ARM64_SYNC if s.kind == "sync" else s.port) + _a64_mov(1, vcpu_id))
            loop([A64_STR_W1_X0], s.count)
        elif s.kind == "mrs":
            loop([_a64_mrs(3, *ID_AA64PFR0_EL1)], s.count)
        elif s.kind == "hvc":
            loop(_a64_mov(0, PSCI_VERSION) + [A64_HVC_0], s.count)
        elif s.kind == "wfi":
            words.extend(_a64_mov(0, ARM64_WFI_BEGIN) + _a64_mov(1, vcpu_id) + [A64_STR_W1_X0])
            loop([A64_WFI], s.count)
            words.extend(_a64_mov(0, ARM64_WFI_END) + [A64_STR_W1_X0])
        else:
            raise ValueError("unknown step kind %r" % s.kind)
    words.append(A64_B_SELF)                                              # not reached
    code = struct.pack("<%dI" % len(words), *words)
    if len(code) > CODE_STRIDE:
        raise ValueError("program too long (%d bytes of code, at most %d)" % (len(code), CODE_STRIDE))
    return code


def _host_arch():
    return "arm64" if os.uname().machine in ("aarch64", "arm64") else "x86"


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


def strict_turns(n, timeout):
    """A sync for two vCPUs of n SYNC steps each (Guest's sync): each one
    re-enters the guest only after the other's SYNC, so that their exits
    alternate; a wait that passes timeout seconds goes on."""
    cond, turn = threading.Condition(), [0]

    def sync(vcpu, i):
        with cond:
            turn[0] = 1 - vcpu
            cond.notify_all()
            if i < n - 1:
                cond.wait_for(lambda: turn[0] == vcpu, timeout=timeout)
    return sync


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
        rotate: after each SYNC (once sync has returned), each vCPU thread
            runs the next vCPU: vCPUs move between threads.  Needs a sync
            that holds every vCPU until all are there (kvmexit guest --wait)
            and as many syncs in every program.
    """

    def __init__(self, programs, sync=None, affinity=None, repeat=None, arch=None, rotate=False):
        self.arch = arch or _host_arch()
        self.programs = [list(p) for p in programs]
        self.rotate = rotate
        self._vcpus = [None] * len(programs)      # (fd, kvm_run mmap, restart) of each vCPU
        self._nsync = [0] * len(programs)
        self.sync = sync
        self.affinity = affinity
        self.repeat = repeat
        self.rounds = [0] * len(programs)
        self.tids = [None] * len(programs)
        self.errors = []
        self._threads = []
        self._ready = threading.Barrier(len(programs) + 1)
        self._waking = {}                 # arm64: vCPU -> thread ident, while it runs a wfi step
        self._wake_cond = threading.Condition()
        if self.arch == "arm64" and any(st.kind == "wfi" for p in self.programs for st in p):
            # a handler, so that the signal ends KVM_RUN's wait (EINTR) and nothing else
            signal.signal(signal.SIGUSR1, lambda *_: None)
            threading.Thread(target=self._waker, name="wfi waker", daemon=True).start()
        self._kvm = _open_kvm()
        try:
            self._vm = fcntl.ioctl(self._kvm, KVM_CREATE_VM, 0)
            self._mem = mmap.mmap(-1, MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            addr = ct.addressof(ct.c_char.from_buffer(self._mem))
            region = struct.pack("<IIQQQ", 0, 0, self._ram_base, MEM_SIZE, addr)
            fcntl.ioctl(self._vm, KVM_SET_USER_MEMORY_REGION, region)
            self._run_size = fcntl.ioctl(self._kvm, KVM_GET_VCPU_MMAP_SIZE)
            if self.arch == "arm64":
                self._vcpu_init = bytearray(32)               # struct kvm_vcpu_init
                fcntl.ioctl(self._vm, KVM_ARM_PREFERRED_TARGET, self._vcpu_init)
                struct.pack_into("<I", self._vcpu_init, 4, 1 << KVM_ARM_VCPU_PSCI_0_2)
            for i, prog in enumerate(self.programs):
                try:
                    code = (assemble_arm64 if self.arch == "arm64" else assemble)(prog, i)
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

    @property
    def _ram_base(self):
        return ARM64_RAM if self.arch == "arm64" else 0

    def _setup_x86(self, vcpu, i):
        """Real mode at the vCPU's code; returns what restarts the program."""
        sregs = bytearray(312)
        fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
        struct.pack_into("<QIH", sregs, 0, 0, 0xFFFF, 0)  # cs: base 0, limit 64K, selector 0
        fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
        regs = bytearray(144)
        struct.pack_into("<QQ", regs, 128, CODE_BASE + i * CODE_STRIDE, 0x2)  # rip, rflags
        fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))
        return lambda: fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))

    def _setup_arm64(self, vcpu, i):
        """EL1h with DAIF masked (KVM_ARM_VCPU_INIT's reset state), PC at the
        vCPU's code.  No interrupt is ever pending: each wfi traps (an
        interrupt pending, even masked, makes wfi complete without a trap)."""
        fcntl.ioctl(vcpu, KVM_ARM_VCPU_INIT, bytes(self._vcpu_init))
        pc = ct.c_uint64(ARM64_RAM + CODE_BASE + i * CODE_STRIDE)
        one_reg = struct.pack("<QQ", KVM_REG_PC, ct.addressof(pc))

        def restart():
            fcntl.ioctl(vcpu, KVM_SET_ONE_REG, one_reg)
        restart()
        return restart

    def _vcpu_thread(self, i):
        self.tids[i] = threading.get_native_id()
        # QEMU's vCPU thread name, so thread-name views look as on a real host
        _libc.prctl(PR_SET_NAME, ("CPU %d/KVM" % i).encode(), 0, 0, 0)
        vcpu = run = restart = None
        try:
            vcpu = fcntl.ioctl(self._vm, KVM_CREATE_VCPU, i)
            run = mmap.mmap(vcpu, self._run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            restart = (self._setup_arm64 if self.arch == "arm64" else self._setup_x86)(vcpu, i)
        except OSError as e:
            self.errors.append("vCPU %d: setup failed: %s" % (i, e))
            self._ready.abort()
        finally:
            # closed by close(), after every thread: with rotate, another thread may run it
            self._vcpus[i] = (vcpu, run, restart)
        if self.errors:
            return
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            return
        self._run(i)

    def _run(self, i):
        """KVM_RUN on thread i until its vCPU's program ends (at its done port,
        no repeat asked); with rotate, the next vCPU after each sync."""
        exits = 0
        v = i
        vcpu, run, restart = self._vcpus[v]
        # the exit that carries a port or address, where that is, and the done/sync values
        io, fmt, off, done, sync = ((KVM_EXIT_MMIO, "<Q", 32, ARM64_DONE, ARM64_SYNC) if self.arch == "arm64"
                                    else (KVM_EXIT_IO, "<H", 34, DONE_PORT, SYNC_PORT))
        try:
            while True:
                if self.affinity is not None:
                    cpus = self.affinity(i, exits)
                    if cpus:
                        os.sched_setaffinity(0, cpus)
                try:
                    fcntl.ioctl(vcpu, KVM_RUN, 0)
                except InterruptedError:       # arm64's wfi wake-up, where Python does not retry
                    continue
                exits += 1
                reason = struct.unpack_from("<I", run, 8)[0]
                if reason == io:
                    where = struct.unpack_from(fmt, run, off)[0]
                    if where in (ARM64_WFI_BEGIN, ARM64_WFI_END) and self.arch == "arm64":
                        with self._wake_cond:
                            if where == ARM64_WFI_BEGIN:
                                self._waking[i] = threading.get_ident()
                            else:
                                self._waking.pop(i, None)
                            self._wake_cond.notify_all()
                    if where == done:
                        self.rounds[v] += 1
                        if self.repeat is None or not self.repeat(v, self.rounds[v]):
                            return
                        restart()                                   # from the top
                    if where == sync and self.sync is not None:
                        # counted before the wait: with rotate, the thread that takes this vCPU
                        # next must see its next sync's number once every thread is released
                        n, self._nsync[v] = self._nsync[v], self._nsync[v] + 1
                        self.sync(v, n)
                        if self.rotate:        # every thread is past this sync: each takes the next vCPU
                            v = (v + 1) % len(self._vcpus)
                            vcpu, run, restart = self._vcpus[v]
                elif reason == KVM_EXIT_INTR and self.arch == "arm64":
                    pass                       # a wake-up signal ended KVM_RUN
                elif reason != KVM_EXIT_HLT or self.arch != "x86":
                    self.errors.append("vCPU %d: unexpected KVM exit %s"
                                       % (v, KVM_EXIT_NAMES.get(reason, reason)))
                    return
        except OSError as e:
            self.errors.append("vCPU %d: KVM_RUN failed: %s" % (v, e))

    def _waker(self):
        """arm64: signal each vCPU thread inside a wfi step every WFI_KICK_S;
        sleep on the condition while none is."""
        with self._wake_cond:
            while True:
                if self._waking:
                    self._wake_cond.wait(WFI_KICK_S)
                else:
                    self._wake_cond.wait()
                for ident in list(self._waking.values()):
                    try:
                        signal.pthread_kill(ident, signal.SIGUSR1)
                    except ProcessLookupError:
                        pass

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
        for i, entry in enumerate(self._vcpus):
            if entry is not None:
                vcpu, run, _ = entry
                if run is not None:
                    run.close()
                if vcpu is not None:
                    os.close(vcpu)
                self._vcpus[i] = None
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
