# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Debian kernel packages, fetched with apt through a private configuration
and kept in a cache outside the tree.

apt-get download checks each .deb against the archive's signed index
(InRelease -> Packages -> SHA256); the SHA256 is checked once more here and
printed with the package and version a run used.  The archive keeps current
versions only, so a series ("the newest 6.1.0-N-amd64-unsigned of
bookworm-security") resolves to its newest package, never to a fixed one.
Only the kernel image and the modules the machines load are kept.
"""
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MIRROR = os.environ.get("KVMEXIT_DEBIAN_MIRROR", "http://deb.debian.org")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# what the machines load; the rest of each package is not kept
MODULES = ("kvm_amd", "kvm_intel", "virtio_pci", "9pnet_virtio", "9p", "ata_piix", "sd_mod", "ext4")


def cache_dir():
    """$KVMEXIT_KERNEL_CACHE, else ~/.cache/kvmexit/kernels."""
    env = os.environ.get("KVMEXIT_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kvmexit" / "kernels"


@dataclass(frozen=True)
class Series:
    """A kernel named by suite and package series.

    image: regex of the package holding the kernel (group 1: the kernel release).
    modules: package holding the modules, "{release}" filled in; None when
        the image package holds them (Debian before 7.x).
    """
    name: str
    suite: str
    image: str
    modules: str = None
    arch: str = "amd64"         # Debian's name of the architecture

    @property
    def archive(self):
        return "debian-security" if self.suite.endswith("-security") else "debian"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    size: int

    def line(self):
        return "%s %s sha256 %s" % (self.name, self.version, self.sha256)


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel in the cache."""
    series: Series
    release: str               # uname -r
    packages: tuple            # Package, ...
    path: Path

    @property
    def vmlinuz(self):
        return self.path / "vmlinuz"

    def modules_for(self, module):
        """Module files to insmod, dependencies first, for one module (or [] if built in)."""
        return [self.path / "modules" / m for m in self.meta["depends"][module]]

    @property
    def meta(self):
        return json.loads((self.path / "kernel.json").read_text())


# -- Debian version order (deb-version(7)) -----------------------------------
def _order(c):
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _cmp_part(a, b):
    while a or b:
        na = re.match(r"\D*", a).group()
        nb = re.match(r"\D*", b).group()
        for x, y in zip(na + "\0" * len(nb), nb + "\0" * len(na)):
            ox, oy = (0 if x == "\0" else _order(x)), (0 if y == "\0" else _order(y))
            if ox != oy:
                return -1 if ox < oy else 1
        a, b = a[len(na):], b[len(nb):]
        da = re.match(r"\d*", a).group()
        db = re.match(r"\d*", b).group()
        if int(da or 0) != int(db or 0):
            return -1 if int(da or 0) < int(db or 0) else 1
        a, b = a[len(da):], b[len(db):]
    return 0


def version_cmp(a, b):
    """Compare two Debian versions: -1, 0 or 1."""
    def split(v):
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        up, _, rev = rest.rpartition("-") if "-" in rest else (rest, "", "0")
        return int(epoch or 0), up, rev
    ea, ua, ra = split(a)
    eb, ub, rb = split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


# -- apt ---------------------------------------------------------------------
class Apt:
    """apt-get with its own sources, lists and cache (nothing of the host's apt is touched)."""

    def __init__(self, suite, archive, root, arch="amd64"):
        self.root = root
        (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (root / "sources.list").write_text("deb [signed-by=%s] %s/%s %s main\n" % (KEYRING, MIRROR, archive, suite))
        # nothing installed, as far as this apt knows: install -d resolves every dependency
        (root / "status").touch()
        self.opts = ["-o", "Dir::Etc::sourcelist=%s" % (root / "sources.list"), "-o", "Dir::Etc::sourceparts=-",
                     "-o", "Dir::State::Lists=%s" % (root / "lists"), "-o", "Dir::Cache=%s" % root,
                     "-o", "Dir::State::status=%s" % (root / "status"),
                     "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                     "-o", "APT::Architecture=%s" % arch, "-o", "APT::Architectures=%s" % arch,
                     "-o", "Debug::NoLocking=1"]

    def run(self, *args, cwd=None, quiet="-qq"):
        r = subprocess.run(["apt-get", *self.opts, quiet, *args], cwd=cwd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("apt-get %s failed: %s" % (" ".join(args), (r.stderr or r.stdout).strip()[-800:]))
        return r.stdout

    def packages(self):
        """{name: [Package]} of the suite's signed Packages index."""
        out = {}
        for f in sorted((self.root / "lists").glob("*_Packages*")):
            text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(f)], capture_output=True,
                                  text=True, check=True).stdout
            for stanza in text.split("\n\n"):
                fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.M))
                if "Package" in fields and "SHA256" in fields:
                    p = Package(fields["Package"], fields["Version"], fields["SHA256"], int(fields["Size"]))
                    out.setdefault(p.name, []).append(p)
        return out


def _newest(pkgs):
    return max(pkgs, key=functools.cmp_to_key(lambda a, b: version_cmp(a.version, b.version)))


def resolve(series, index):
    """The newest image package of a series, and its modules package (pure)."""
    found = []
    for name, versions in index.items():
        m = re.fullmatch(series.image, name)
        if m:
            found.append((m.group(1), _newest(versions)))
    if not found:
        raise RuntimeError("no package matching %s in %s" % (series.image, series.suite))
    release, image = max(found, key=functools.cmp_to_key(lambda a, b: version_cmp(a[1].version, b[1].version)))
    pkgs = [image]
    if series.modules:
        mods = index.get(series.modules.format(release=release))
        if not mods:
            raise RuntimeError("%s has no %s" % (image.name, series.modules.format(release=release)))
        pkgs.append(_newest(mods))
    return release, tuple(pkgs)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decompress(src, dst):
    """A module file as plain .ko (busybox insmod takes no .xz/.zst)."""
    if src.suffix == ".xz":
        cmd = ["xz", "-dc", str(src)]
    elif src.suffix == ".zst":
        cmd = ["zstd", "-qdc", str(src)]
    elif src.suffix == ".gz":
        cmd = ["gzip", "-dc", str(src)]
    else:
        shutil.copyfile(src, dst)
        return
    with open(dst, "wb") as out:
        subprocess.run(cmd, stdout=out, check=True)


def _unpack(release, debs, dest, log):
    """vmlinuz and the wanted modules (dependencies resolved by modprobe) into dest."""
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        root = Path(tmp)
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        moddir = next(p for p in (root / "lib/modules" / release, root / "usr/lib/modules" / release) if p.is_dir())
        vmlinuz = next(p for p in (root / "boot" / ("vmlinuz-" + release), moddir / "vmlinuz.unsigned",
                                   moddir / "vmlinuz") if p.exists())
        base = moddir.parent.parent.parent   # the root that holds lib/modules
        subprocess.run(["depmod", "-b", str(base), release], check=True, capture_output=True)
        (dest / "modules").mkdir(parents=True)
        shutil.copyfile(vmlinuz, dest / "vmlinuz")
        depends = {}
        for mod in MODULES:
            r = subprocess.run(["modprobe", "-d", str(base), "-S", release, "--show-depends", mod],
                               capture_output=True, text=True)
            files = []
            for line in r.stdout.splitlines():
                parts = line.split()
                if parts and parts[0] == "insmod":
                    src = Path(parts[1])
                    name = re.sub(r"\.ko(\.\w+)?$", ".ko", src.name)
                    if not (dest / "modules" / name).exists():
                        _decompress(src, dest / "modules" / name)
                    files.append(name)
            if r.returncode and not files:
                log("  %s: no module %s (built in)" % (release, mod))
            depends[mod] = files
        return depends


def _apt(series):
    sub = series.suite if series.arch == "amd64" else "%s-%s" % (series.suite, series.arch)
    return Apt(series.suite, series.archive, cache_dir() / "apt" / sub, series.arch)


def download(series, package, dest, log=print):
    """One package of the series' suite into dest, its sha256 checked; the .deb's path."""
    dest.mkdir(parents=True, exist_ok=True)
    log("  downloading %s %s (%d MB)" % (package.name, package.version, package.size >> 20))
    _apt(series).run("download", "%s=%s" % (package.name, package.version), cwd=dest)
    deb = next(dest.glob("%s_*.deb" % package.name))
    got = _sha256(deb)
    if got != package.sha256:
        deb.unlink()
        raise RuntimeError("%s: sha256 %s, the signed index says %s" % (deb.name, got, package.sha256))
    return deb


def extra_package(series, name, log=print):
    """The newest package of that name in the series' suite (its index as fetch() last updated it)."""
    versions = _apt(series).packages().get(name)
    if not versions:
        raise RuntimeError("no package %s in %s" % (name, series.suite))
    return _newest(versions)


def fetch(series, log=print):
    """The newest kernel of a series, from the cache or downloaded into it.

    Returns:
        Kernel.  Prints the exact packages, versions and SHA256s used.
    """
    top = cache_dir()
    apt = _apt(series)
    try:
        apt.run("update")
        release, pkgs = resolve(series, apt.packages())
    except RuntimeError as e:
        cached = sorted(top.glob("%s-*/kernel.json" % series.name))
        if not cached:
            raise
        meta = json.loads(cached[-1].read_text())
        log("  %s: %s; using the cached %s" % (series.name, e, meta["release"]))
        release, pkgs = meta["release"], tuple(Package(**p) for p in meta["packages"])
    dest = top / ("%s-%s" % (series.name, "_".join("%s_%s" % (p.name, p.version) for p in pkgs)))
    if not (dest / "kernel.json").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dl = top / "download"
        debs = [download(series, p, dl, log) for p in pkgs]
        dest.mkdir(parents=True)
        try:
            depends = _unpack(release, debs, dest, log)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            for deb in debs:
                deb.unlink()
        (dest / "kernel.json").write_text(json.dumps({
            "series": series.name, "suite": series.suite, "release": release,
            "packages": [p.__dict__ for p in pkgs], "depends": depends}, indent=1))
    k = Kernel(series, release, pkgs, dest)
    for p in pkgs:
        log("  %s: %s (%s)" % (series.name, p.line(), series.suite))
    return k
