# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""One boot function per emulator.  Each runs one command in the machine
and returns once the machine has powered off; a boot that overruns its
timeout is killed and reported with the tail of its serial log."""
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import image
from .userland import BIN as ARM64_BIN

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


class BootError(RuntimeError):
    pass


@dataclass
class Boot:
    rc: int               # the command's exit status in the machine
    seconds: float        # boot to power-off
    serial: str           # the serial console: kernel messages and the command's output
    out: Path             # what the command wrote to $KVMEXIT_OUT


def _tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


def _wait(proc, serial, timeout, what):
    start = time.monotonic()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        log = serial.read_text(errors="replace") if serial.exists() else ""
        raise BootError("%s did not power off within %d s; serial log ends:\n%s" % (what, timeout, _tail(log)))
    return time.monotonic() - start


def _result(out, serial, seconds, what):
    log = serial.read_text(errors="replace") if serial.exists() else ""
    rc = out / "rc"
    if not rc.exists():
        raise BootError("%s powered off without running its command; serial log ends:\n%s" % (what, _tail(log)))
    return Boot(int(rc.read_text().strip() or -1), seconds, log, out)


def _cmdline(root, run, path=VENV_BIN, console="ttyS0"):
    return ("console=%s quiet loglevel=4 panic=-1 kvmexit.root=%s kvmexit.run=%s kvmexit.path=%s kvmexit.repo=%s"
            % (console, root, run, path, REPO))


def _share(tag, path, ro):
    """A virtio-9p share of path under mount tag."""
    return ["-fsdev", "local,id=%s,path=%s,security_model=none,multidevs=remap%s" % (tag, path, ",readonly=on" if ro else ""),
            "-device", "virtio-9p-pci,fsdev=%s,mount_tag=%s" % (tag, tag)]


def _qemu_run(cmd, kernel, out, serial, workdir, timeout, what):
    errors = workdir / "qemu.log"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        seconds = _wait(proc, serial, timeout, "%s (%s)" % (what, kernel.release))
    if proc.returncode and not (out / "rc").exists():
        raise BootError("%s failed (%d): %s" % (cmd[0], proc.returncode, errors.read_text()[-800:]))
    return _result(out, serial, seconds, "%s (%s)" % (what, kernel.release))


def _prepare(workdir, script):
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "run.sh").write_text(script)
    serial = workdir / "serial.log"
    serial.unlink(missing_ok=True)
    return out, serial


def qemu(kernel, script, workdir, timeout=600, cpus=2, mem_mb=2048):
    """Boot kernel under QEMU TCG with an AMD SVM CPU and run script.

    This machine's root is the machine's root, read-only over virtio-9p (the
    venv runs as is); script and its output live in workdir/out, /mnt inside.
    """
    out, serial = _prepare(workdir, script)
    initrd = image.initramfs(kernel, ("virtio_pci", "9pnet_virtio", "9p", "kvm_amd"), workdir / "initrd.gz")
    # one TCG thread for both vCPUs: with thread=multi, Debian 7.3 died at
    # boot, once in four, of "Oops: int3" in __schedule (a static key being
    # patched while the other vCPU ran it); one thread costs no time here
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=single", "-cpu", "max", "-smp", str(cpus), "-m", str(mem_mb),
           "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot", "-serial", "file:%s" % serial,
           "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
           # Debian 5.10 deems TCG's TSC unstable and reads the clock from the
           # emulated HPET: python3 -c pass then takes 5 s instead of 0.2
           "-append", _cmdline("9p", "/mnt/run.sh") + " tsc=reliable clocksource=tsc"]
    cmd += _share("hostroot", "/", True) + _share("out", out, False) + _share("repo", REPO, True)
    return _qemu_run(cmd, kernel, out, serial, workdir, timeout, "QEMU")


def qemu_arm64(kernel, script, workdir, root, timeout=600, cpus=2, mem_mb=2048, nvhe=False):
    """Boot an arm64 kernel under qemu-system-aarch64 TCG with EL2 (KVM in
    VHE mode, or nVHE) and run script.

    root: the arm64 userspace tree (userland.arm64_root), read-only over
    9p; the checkout at its own path; script and its output in workdir/out,
    /mnt inside.
    """
    out, serial = _prepare(workdir, script)
    # the checkout's mount point, where the machine's read-only root has no tmpfs (as /tmp or /root)
    (root / REPO.relative_to("/")).mkdir(parents=True, exist_ok=True)
    initrd = image.initramfs(kernel, ("virtio_pci", "9pnet_virtio", "9p"), workdir / "initrd.gz",
                             busybox=root / "bin" / "busybox")
    # one TCG thread for both vCPUs, as on x86; pauth-impdef: QEMU's fast pointer authentication
    cmd = ["qemu-system-aarch64", "-M", "virt,virtualization=on,gic-version=3", "-cpu", "max,pauth-impdef=on",
           "-accel", "tcg,thread=single", "-smp", str(cpus), "-m", str(mem_mb), "-display", "none",
           "-monitor", "none", "-nic", "none", "-no-reboot", "-serial", "file:%s" % serial,
           "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
           "-append", _cmdline("9p", "/mnt/run.sh", ARM64_BIN, "ttyAMA0") + (" kvm-arm.mode=nvhe" if nvhe else "")]
    cmd += _share("hostroot", root, True) + _share("out", out, False) + _share("repo", REPO, True)
    return _qemu_run(cmd, kernel, out, serial, workdir, timeout, "QEMU arm64")


BOCHSRC = """\
cpu: model={cpu}, count=1, ips=200000000
memory: guest={mem}, host={mem}
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=disk, path={root}, mode=flat
ata0-slave: type=disk, path={out}, mode=flat
ata1-master: type=cdrom, path={iso}, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev={serial}
panic: action=fatal
error: action=report
clock: sync=none, time0=local
display_library: term
log: {log}
"""


def iso(kernel, initrd, cmdline, dest):
    """An isolinux CD that boots kernel with initrd."""
    d = dest.parent / (dest.name + ".d")
    shutil.rmtree(d, ignore_errors=True)
    (d / "isolinux").mkdir(parents=True)
    shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", d / "isolinux")
    shutil.copy("/usr/lib/syslinux/modules/bios/ldlinux.c32", d / "isolinux")
    shutil.copy(kernel.vmlinuz, d / "vmlinuz")
    shutil.copy(initrd, d / "initrd.gz")
    (d / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT k\nPROMPT 0\nTIMEOUT 1\nLABEL k\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.gz %s\n" % cmdline)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(dest), "-b", "isolinux/isolinux.bin",
                    "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", str(d)],
                   check=True, capture_output=True)
    shutil.rmtree(d)
    return dest


def bochs(kernel, root_img, workdir, timeout=1500, cpu="corei7_skylake_x", mem_mb=1024, run="/run.sh"):
    """Boot kernel under Bochs with an Intel VMX (+EPT) CPU and run run from root_img.

    Bochs has no virtio and no -kernel: an isolinux CD boots the kernel, the
    root is an ext2 image on the first disk, and the command's output comes
    back as a tar written to the second disk.
    """
    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    initrd = image.initramfs(kernel, ("ata_piix", "sd_mod", "ext4", "kvm_intel"), workdir / "initrd.gz")
    cd = iso(kernel, initrd, _cmdline("disk", run), workdir / "boot.iso")
    outdisk = image.blank_disk(workdir / "out.img", 64)
    serial = workdir / "serial.log"
    serial.unlink(missing_ok=True)
    rc = workdir / "bochsrc"
    rc.write_text(BOCHSRC.format(cpu=cpu, mem=mem_mb, root=root_img, out=outdisk, iso=cd, serial=serial,
                                 log=workdir / "bochs.log"))
    (workdir / "debugger.rc").write_text("c\n")
    # Bochs wants a terminal (display_library: term) and stops at its debugger
    # prompt unless told to continue; the guest's power-off ends it.
    cmd = ["script", "-q", "-e", "-c", "bochs -q -f %s -rc %s" % (rc, workdir / "debugger.rc"), "/dev/null"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, TERM="dumb"), start_new_session=True)
    try:
        seconds = _wait(proc, serial, timeout, "Bochs (%s)" % kernel.release)
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
    image.untar_disk(outdisk, out)
    return _result(out, serial, seconds, "Bochs (%s)" % kernel.release)
