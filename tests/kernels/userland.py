# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The userspace an arm64 machine runs: Debian's own arm64 packages (Python,
libbpf, perf, busybox and everything they depend on, as apt resolves it),
unpacked into one directory of the kernel cache and shared read-only with
the machine over 9p.  The checkout and its virtualenv's pure-Python packages
(click, prometheus-client) reach it on PYTHONPATH; `kvmexit` there is
`python3 -m kvmexit`.

The packages are those of one suite (the host's, so that the virtualenv's
pure-Python packages match its Python), each checked by apt against the
suite's signed index; their names, versions and sha256s are kept in
root.json beside the tree and printed with each run.
"""
import hashlib
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

from . import fetch

SUITE = "bookworm"
PACKAGES = ("python3-minimal", "libpython3.11-stdlib", "libbpf1", "linux-perf", "busybox-static")
KVMEXIT = "#!/bin/sh\nexec python3 -m kvmexit \"$@\"\n"
BIN = "/usr/local/bin"          # kvmexit's wrapper, first on the machine's PATH


def _uris(apt):
    """[(deb file name, sha256)] that `apt-get install` would download, the
    sha256 from the suite's signed index."""
    for left in (apt.root / "archives").glob("*.deb"):    # apt lists only what it has not downloaded
        left.unlink()
    out = apt.run("install", "-y", "--no-install-recommends", "--print-uris", *PACKAGES, quiet="-q")
    index = apt.packages()
    debs = []
    for name in re.findall(r"^'[^']+' (\S+\.deb) \d+ ", out, re.M):
        pkg, version = name.split("_")[:2]
        sha = next(p.sha256 for p in index[pkg] if p.version == urllib.parse.unquote(version))
        debs.append((name, sha))
    if not debs:
        raise RuntimeError("apt resolved no packages for %s" % " ".join(PACKAGES))
    return sorted(debs)


def arm64_root(log=print):
    """The arm64 userspace tree, built in the cache on first use.

    Returns:
        (root, packages): the tree, and [(deb file, sha256)] it was made of.
    """
    apt = fetch.Apt(SUITE, "debian", fetch.cache_dir() / "apt" / ("%s-arm64" % SUITE), "arm64")
    try:
        apt.run("update")
        debs = _uris(apt)
    except RuntimeError as e:
        cached = sorted(fetch.cache_dir().glob("arm64-userland-*/root.json"))
        if not cached:
            raise
        log("  arm64 userland: %s; using the cached %s" % (e, cached[-1].parent.name))
        return cached[-1].parent / "root", json.loads(cached[-1].read_text())["packages"]
    key = hashlib.sha256(json.dumps(debs).encode()).hexdigest()[:16]
    top = fetch.cache_dir() / ("arm64-userland-%s" % key)
    root = top / "root"
    if not (top / "root.json").exists():
        shutil.rmtree(top, ignore_errors=True)
        root.mkdir(parents=True)
        log("  arm64 userland: downloading %d packages of %s" % (len(debs), SUITE))
        apt.run("install", "-y", "--no-install-recommends", "--download-only", *PACKAGES)
        archives = apt.root / "archives"
        for name, sha in debs:
            deb = archives / name
            if fetch._sha256(deb) != sha:
                raise RuntimeError("%s: sha256 differs from the signed index" % name)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
            deb.unlink()
        for d in ("tmp", "run", "root", "mnt", "proc", "sys", "dev", "etc", BIN.lstrip("/")):
            (root / d).mkdir(parents=True, exist_ok=True)
        # busybox is the shell and env the initramfs chroots with
        for tool in ("sh", "env"):
            link = root / ("bin" if tool == "sh" else "usr/bin") / tool
            if not link.is_symlink() and not link.exists():
                link.symlink_to("/bin/busybox")
        (root / BIN.lstrip("/") / "kvmexit").write_text(KVMEXIT)
        (root / BIN.lstrip("/") / "kvmexit").chmod(0o755)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        (top / "root.json").write_text(json.dumps({"suite": SUITE, "packages": debs}, indent=1))
    return root, json.loads((top / "root.json").read_text())["packages"]


def pythonpath(repo):
    """What the machine's Python needs from the checkout: the package and the
    virtualenv's pure-Python dependencies."""
    site = next((Path(repo) / ".venv" / "lib").glob("python3*/site-packages"))
    return "%s:%s" % (Path(repo) / "src", site)
