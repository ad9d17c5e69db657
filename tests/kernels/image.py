# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""What a machine boots besides its kernel: a busybox initramfs that loads
the modules, finds a root (this machine's own root over virtio-9p under
QEMU; an ext2 disk image under Bochs, which has no virtio), runs one
command in it and powers off; and the Bochs disk images."""
import gzip
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

BUSYBOX = "/bin/busybox"
REPO_IN_IMAGE = "/kvmexit/repo"    # where a Bochs root image keeps the checkout (see INIT)
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# The initramfs's /init.  kvmexit.root= says where the root comes from,
# kvmexit.run= what to run there; the output folder is /mnt in the root.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
arg() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
for m in $(cat /modules.list); do
	insmod /lib/modules/$m 2>/tmp/err || case "$(cat /tmp/err)" in *exists*) ;; *) echo "init: insmod $m: $(cat /tmp/err)";; esac
done
ip link set lo up
R=/newroot
mkdir -p $R
case "$(arg kvmexit.root)" in
9p)
	o=trans=virtio,version=9p2000.L,msize=524288
	# read-only and unchanged while the machine runs: cached (uncached, Debian
	# 5.10 took 5 s to start python3)
	mount -t 9p -o $o,ro,cache=loose hostroot $R || echo "init: cannot mount the 9p root"
	mount -t tmpfs tmp $R/tmp
	mount -t tmpfs run $R/run
	mount -t tmpfs root $R/root
	mount -t 9p -o $o out $R/mnt
	repo=$(arg kvmexit.repo)
	# the checkout again at its own path: a checkout under /tmp is under the tmpfs now
	[ -n "$repo" ] && mkdir -p $R$repo && mount -t 9p -o $o,ro,cache=loose repo $R$repo
	;;
disk)
	n=0
	while [ ! -b /dev/sda ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
	mount -t ext4 -o ro /dev/sda $R || echo "init: cannot mount /dev/sda"
	mount -t tmpfs tmp $R/tmp
	mount -t tmpfs run $R/run
	mount -t tmpfs root $R/root
	mount -t tmpfs out $R/mnt
	repo=$(arg kvmexit.repo)
	# the image keeps the checkout at /kvmexit/repo, where nothing is mounted: bound at its own path
	[ -n "$repo" ] && mkdir -p $R$repo && mount -o bind $R/kvmexit/repo $R$repo
	;;
esac
mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t bpf bpf $R/sys/fs/bpf
echo "init: running $(arg kvmexit.run) on $(uname -r)"
chroot $R /usr/bin/env -i PATH=$(arg kvmexit.path):/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
	PYTHONDONTWRITEBYTECODE=1 KVMEXIT_OUT=/mnt /bin/sh $(arg kvmexit.run) </dev/null >/dev/console 2>&1
echo $? > $R/mnt/rc
case "$(arg kvmexit.root)" in
disk) (cd $R/mnt && tar cf /dev/sdb .) ;;
9p) umount $R/mnt ;;
esac
sync
echo "init: done, rc $(cat $R/mnt/rc 2>/dev/null || echo ?)"
sleep 1
poweroff -f
"""


def _cpio(entries):
    """A newc cpio archive of (path, mode, data) entries (pure)."""
    out = io.BytesIO()
    for ino, (path, mode, data) in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], 1):
        name = path.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name), 0))
        out.write(hdr.encode() + name)
        out.write(b"\0" * (-(110 + len(name)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def initramfs(kernel, modules, dest, busybox=BUSYBOX):
    """The initramfs for a kernel: busybox, /init and the modules (in load order).

    Args:
        kernel: fetch.Kernel.
        modules: module names to load, e.g. ("virtio_pci", "9p", "kvm_amd").
        busybox: a static busybox of the kernel's architecture.
    """
    order = []
    for m in modules:
        for f in kernel.modules_for(m):
            if f.name not in order:
                order.append(f.name)
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [(p, d, b"") for p in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules", "newroot")]
    entries += [("bin/busybox", x, Path(busybox).read_bytes()), ("init", x, INIT.encode()),
                ("modules.list", f, "\n".join(order).encode() + b"\n")]
    entries += [("lib/modules/" + n, f, (kernel.path / "modules" / n).read_bytes()) for n in order]
    dest.write_bytes(gzip.compress(_cpio(entries), 6))
    return dest


# -- Bochs: the root as an ext2 image, results as a tar on a raw disk ------------
def _ldd(paths):
    """The shared libraries (and the loader) that the given programs need."""
    libs = set()
    for p in paths:
        out = subprocess.run(["ldd", str(p)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            for w in parts:
                if w.startswith("/"):
                    libs.add(w)
    return sorted(libs)


def _copy(src, root, at=None):
    """Copy src (a file, a link or a tree) to the same path under root, or
    to the path at, links kept."""
    src = Path(src)
    # through the real parent: on merged-/usr hosts /lib/x is /usr/lib/x
    dst = root / (at or Path(os.path.realpath(src.parent)) / src.name).relative_to("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if not dst.exists() and not dst.is_symlink():
            os.symlink(os.readlink(src), dst)
        target = (src.parent / os.readlink(src)).resolve()
        if target != src:
            _copy(target, root)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "turtledemo",
                                                      "ensurepip", "lib2to3", "pydoc_data", "config-3*"))
    elif not dst.exists():
        shutil.copy2(src, dst)


def root_image(paths, programs, dest, files=None, size_mb=None, repo=None):
    """An ext2 image holding paths (files or trees, at their own paths) and
    the programs with their shared libraries; built without mounting.

    Programs are looked up in the system's PATH (not the caller's); /bin/sh and /usr/bin/env are
    always there (the initramfs chroots into this root with them).  files:
    {path: text} written into the image as well.  Paths inside repo (the
    checkout) go under REPO_IN_IMAGE instead, which INIT binds at repo's own
    path once the machine's tmpfs mounts (/tmp, /root, ...) are in place.
    """
    root = dest.parent / (dest.name + ".d")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("tmp", "run", "root", "mnt", "proc", "sys", "dev", "etc"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        if os.path.islink("/" + d):                   # merged /usr
            os.symlink(os.readlink("/" + d), root / d)
    progs = [shutil.which(p, path=SYSTEM_PATH) or p for p in ("sh", "env") + tuple(programs)]
    for p in list(paths) + progs + _ldd(progs + [q for q in paths if Path(q).is_file()]):
        inside = repo is not None and Path(p).is_relative_to(repo)
        _copy(p, root, Path(REPO_IN_IMAGE) / Path(p).relative_to(repo) if inside else None)
    if repo is not None:
        # the bind's mount point, where no tmpfs will be
        (root / Path(repo).relative_to("/")).mkdir(parents=True, exist_ok=True)
    for so in _ldd(sorted(str(p) for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink())):
        _copy(so, root)
    # bytecode for every module the image holds: compiling at each start is
    # most of a Python start-up under emulation
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/", str(root)],
                   check=False, capture_output=True)
    for path, text in (files or {}).items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    used = int(subprocess.run(["du", "-sm", str(root)], capture_output=True, text=True).stdout.split()[0])
    size = size_mb or used + used // 4 + 16
    dest.unlink(missing_ok=True)
    subprocess.run(["mke2fs", "-q", "-t", "ext2", "-d", str(root), "-L", "kvmexit", "-b", "4096",
                    "-N", "0", str(dest), "%dM" % size], check=True, capture_output=True)
    shutil.rmtree(root)
    return dest


def blank_disk(dest, size_mb):
    """A zero-filled raw disk (sparse)."""
    with open(dest, "wb") as f:
        f.truncate(size_mb << 20)
    return dest


def untar_disk(disk, dest):
    """Unpack what the machine wrote to a raw disk with tar; False if nothing was written."""
    with open(disk, "rb") as f:
        if f.read(512).count(0) == 512:
            return False
    with tarfile.open(disk, "r:") as t:
        t.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(dest)
    return True
