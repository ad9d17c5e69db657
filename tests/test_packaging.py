# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Shipping: reproducible objects, wheel and zipapp on a PATH without clang,
make install, and the .deb (build, install, man page, selftest, purge)."""
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = [pytest.mark.dist]
OBJECTS = ("kvm_exit.bpf.o", "kvm_exit_direct.bpf.o", "kvm_exit_legacy.bpf.o", "kvm_exit_arm64.bpf.o")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"   # Debian's tools, not a pyenv or venv


def make(*args, cwd=REPO, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "-s"] + list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env, **kw)


def tree_copy(dest):
    """The repository's files (tracked or not ignored) and the built objects."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = REPO / f.decode()
        if src.is_file():
            (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f.decode())
    (dest / "src/kvmexit/bpf").mkdir(parents=True, exist_ok=True)
    for o in OBJECTS:
        shutil.copy2(REPO / "src/kvmexit/bpf" / o, dest / "src/kvmexit/bpf" / o)
    return dest


@pytest.fixture(scope="module")
def clean_bin(tmp_path_factory):
    """A PATH with python3 and mount only: no clang, no llvm tools."""
    d = tmp_path_factory.mktemp("bin")
    for tool in ("python3", "mount"):
        os.symlink(shutil.which(tool, path=SYSTEM_PATH), d / tool)
    assert shutil.which("clang", path=str(d)) is None and shutil.which("llvm-strip", path=str(d)) is None
    return d


@pytest.fixture(scope="module")
def dist():
    r = make("zipapp")
    assert r.returncode == 0, r.stderr
    wheel = next((REPO / "dist").glob("kvmexit-*-py3-none-any.whl"))
    return wheel, REPO / "dist" / "kvmexit.pyz"


def test_objects_rebuild_byte_identical_elsewhere():
    r = make("check-repro")
    assert (r.returncode, r.stdout) == (0, "check-repro: the four objects rebuild byte-identical\n"), r.stderr


def test_check_repro_catches_a_stale_object(tmp_path):
    copy = tree_copy(tmp_path / "tree")
    src = copy / "bpf" / "kvm_exit.bpf.c"
    src.write_text(src.read_text().replace("c->drops++;", "c->drops += 2;"))
    r = make("check-repro", cwd=copy)
    assert r.returncode != 0
    assert "check-repro: src/kvmexit/bpf/kvm_exit.bpf.o differs from a rebuild of bpf/: run make" in r.stderr


def test_wheel_carries_the_tree_objects_and_man_page(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        for o in OBJECTS:
            assert z.read("kvmexit/bpf/" + o) == (REPO / "src/kvmexit/bpf" / o).read_bytes()
        assert "kvmexit-0.1.0.data/data/share/man/man8/kvmexit.8" in z.namelist()
    assert wheel.name == "kvmexit-0.1.0-py3-none-any.whl"


def test_sdist_is_the_tree_with_its_objects(dist, clean_bin, tmp_path):
    """The sdist: every tracked file but CI's and Debian's, plus the built
    objects; a wheel built from it, where there is no clang, ships them."""
    sdist = REPO / "dist" / "kvmexit-0.1.0.tar.gz"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    with tarfile.open(sdist) as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
        assert names == {"kvmexit-0.1.0/" + f for f in tracked if not f.startswith((".ci/", "debian/"))} | {
            "kvmexit-0.1.0/PKG-INFO"} | {"kvmexit-0.1.0/src/kvmexit/bpf/" + o for o in OBJECTS}
        for o in OBJECTS:
            assert t.extractfile("kvmexit-0.1.0/src/kvmexit/bpf/" + o).read() == \
                (REPO / "src/kvmexit/bpf" / o).read_bytes()
        t.extractall(tmp_path, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tmp_path)
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(tmp_path / "out"),
                        str(tmp_path / "kvmexit-0.1.0")], capture_output=True, text=True, timeout=300,
                       env={"PATH": str(clean_bin), "LANG": "C.UTF-8"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "out" / "kvmexit-0.1.0-py3-none-any.whl") as z:
        for o in OBJECTS:
            assert z.read("kvmexit/bpf/" + o) == (REPO / "src/kvmexit/bpf" / o).read_bytes()


def _run(argv, path, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={"PATH": path, "LANG": "C.UTF-8"}, **kw)


def _check_runs(cmd, path):
    r = _run(cmd + ["--version"], path)
    assert (r.returncode, r.stdout) == (0, "kvmexit, version 0.1.0\n"), r.stderr
    r = _run(cmd + ["--help"], path)
    assert r.returncode == 0 and r.stdout.startswith("Usage: kvmexit [OPTIONS] [DURATION]")
    if os.geteuid() == 0 and os.path.exists("/dev/kvm"):
        r = _run(cmd + ["selftest"], path)
        assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("PASS: all "), r.stdout + r.stderr


def test_wheel_in_a_fresh_venv_without_clang(dist, clean_bin, tmp_path):
    wheel, _ = dist
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    r = subprocess.run([str(env_dir / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    _check_runs([str(env_dir / "bin/kvmexit")], "%s:%s" % (env_dir / "bin", clean_bin))


def test_zipapp_with_only_python3(dist, clean_bin):
    _, pyz = dist
    assert pyz.stat().st_size < 1 << 20
    _check_runs([str(pyz)], str(clean_bin))


def test_zipapp_carries_its_bytecode(dist, clean_bin):
    """zipimport compiles what has no .pyc on every start (it cannot write
    one): the zipapp's modules come from the bytecode it carries, compiled
    under the name kvmexit.pyz/..., where a module compiled from its source
    would be named by the file's own path."""
    _, pyz = dist
    with zipfile.ZipFile(pyz) as z:
        names = set(z.namelist())
    sources = {n for n in names if n.endswith(".py") and n != "__main__.py"}
    assert sources and {n + "c" for n in sources} <= names
    r = _run(["python3", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import kvmexit.cli, click.core; "
              "print(kvmexit.cli.main.__code__.co_filename, click.core.Command.main.__code__.co_filename)", str(pyz)],
             str(clean_bin))
    assert r.stdout.split() == ["kvmexit.pyz/kvmexit/cli.py", "kvmexit.pyz/click/core.py"], r.stderr


def test_make_install(tmp_path):
    r = make("install", "PREFIX=/usr", "DESTDIR=%s" % tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "usr"
    assert (root / "share/man/man8/kvmexit.8").read_bytes() == (REPO / "man/kvmexit.8").read_bytes()
    for o in OBJECTS:
        assert (root / "lib/kvmexit/kvmexit/bpf" / o).read_bytes() == (REPO / "src/kvmexit/bpf" / o).read_bytes()
    launcher = root / "sbin/kvmexit"
    assert os.access(launcher, os.X_OK) and 'sys.path.insert(0, "/usr/lib/kvmexit")' in launcher.read_text()
    # compiled at install (checked before any run here writes bytecode): a user
    # who cannot write there never compiles a module again; -v names the
    # bytecode that matched each source, -B writes none
    pkg = root / "lib/kvmexit/kvmexit"
    r = _run(["/usr/bin/python3", "-B", "-v", "-c", "import kvmexit.cli"], SYSTEM_PATH, cwd=root / "lib/kvmexit")
    matched = {Path(line.split()[-1]).name for line in r.stderr.splitlines()
               if line.startswith("# %s/__pycache__/" % pkg) and " matches " in line}
    imported = {m.split("'")[1].split(".")[-1] + ".py" for m in r.stderr.splitlines()
                if m.startswith("import 'kvmexit")}
    assert "cli.py" in imported and imported - {"kvmexit.py"} <= matched, r.stderr[-2000:]
    r = _run(["/usr/bin/python3", "-m", "kvmexit", "--version"], SYSTEM_PATH, cwd=root / "lib/kvmexit")
    assert (r.returncode, r.stdout) == (0, "kvmexit, version 0.1.0\n"), r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dpkg-buildpackage"),
                    reason="needs root and dpkg-buildpackage (make setup installs it)")
def test_deb_builds_installs_runs_and_purges(tmp_path):
    copy = tree_copy(tmp_path / "kvmexit")
    apt = {"DEBIAN_FRONTEND": "noninteractive", "PATH": SYSTEM_PATH}
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=copy, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, PATH=SYSTEM_PATH))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the same files on amd64 and arm64 (both architectures' objects): Architecture: all
    deb = tmp_path / "kvmexit_0.1.0_all.deb"
    # the object the package ships is the one this tree builds
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    assert "./usr/sbin/kvmexit" in listing and "./usr/share/man/man8/kvmexit.8.gz" in listing
    try:
        r = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", str(deb)], capture_output=True, text=True,
                           timeout=300, env=apt)
        assert r.returncode == 0, r.stderr
        assert _run(["man", "-w", "8", "kvmexit"], SYSTEM_PATH).stdout == "/usr/share/man/man8/kvmexit.8.gz\n"
        for o in OBJECTS:
            installed = Path("/usr/lib/python3/dist-packages/kvmexit/bpf", o).read_bytes()
            assert installed == (REPO / "src/kvmexit/bpf" / o).read_bytes(), o
        # the exporter's unit, as shipped, and its system user, created (not its service started)
        assert Path("/usr/lib/systemd/system/kvmexit-exporter.service").read_text() == \
            (REPO / "contrib/kvmexit-exporter.service").read_text()
        user = subprocess.run(["getent", "passwd", "kvmexit"], capture_output=True, text=True).stdout.split(":")
        assert (user[0], user[5], user[6].strip()) == ("kvmexit", "/nonexistent", "/usr/sbin/nologin")
        _check_runs(["/usr/sbin/kvmexit"], SYSTEM_PATH)
    finally:
        r = subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", "purge", "-y", "-qq", "kvmexit"], capture_output=True, text=True,
                           timeout=300, env=apt)
    assert r.returncode == 0, r.stderr
    assert not Path("/usr/sbin/kvmexit").exists()
    assert not Path("/usr/lib/python3/dist-packages/kvmexit").exists()
    assert _run(["dpkg-query", "-W", "kvmexit"], SYSTEM_PATH).returncode != 0


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/kvm"), reason="needs root and /dev/kvm")
def test_make_run_on_a_fresh_clone(tmp_path):
    """The README's main command, from a clone of the committed tree: set-up, a traced guest, the verdict."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    r = subprocess.run(["make", "run"], cwd=clone, capture_output=True, text=True, timeout=900,
                       env=dict(env, PATH=SYSTEM_PATH))   # as typed at a shell, not under make test
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert "== kvmexit selftest (this host)" in out
    assert out[-1].startswith("PASS: ")
    # the demo: the guest's two vCPU threads, per thread, every exit its program causes
    # (kernels/inside.py DEMO_PROGRAMS), real ones: here, or in the SVM machine
    head = out.index("TID      KVM_EXIT_REASON                     COUNT")
    table = {}
    for line in out[head + 1:out.index("== kvmexit selftest (this host)")]:
        tid, name, count = line.split()
        table[(int(tid), name)] = int(count)
    t0, t1 = sorted({tid for tid, _ in table})
    if os.path.exists("/sys/module/kvm_pvm"):
        assert any(l.startswith("This host's KVM (kvm_pvm) never emits kvm:kvm_exit: booting svm-6.1") for l in out)
        want = {(t0, "IOIO"): 301, (t0, "CPUID"): 20, (t0, "MSR"): 11, (t0, "HLT"): 3,
                (t1, "IOIO"): 401, (t1, "CPUID"): 10, (t1, "HLT"): 2}
        assert {k: v for k, v in table.items() if k[1] != "INTR"} == want
    else:
        assert {(t0, "HLT"), (t1, "HLT"), (t0, "CPUID"), (t1, "CPUID")} <= set(table)


def _oldest_python():
    """A Python 3.9 on this machine (the oldest kvmexit supports), if there is one."""
    import glob
    for cand in ["/usr/bin/python3.9", "/usr/local/bin/python3.9"] + sorted(
            glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))):
        if os.access(cand, os.X_OK):
            return cand
    return None


def test_zipapp_on_python_3_9(dist, tmp_path):
    """The zipapp bundles a click that still runs on 3.9 (click 8.2+ needs 3.10)."""
    py = _oldest_python()
    if py is None:
        pytest.skip("no Python 3.9 on this machine")
    _, pyz = dist
    d = tmp_path / "bin"
    d.mkdir()
    os.symlink(py, d / "python3")
    os.symlink(shutil.which("mount", path=SYSTEM_PATH), d / "mount")
    r = _run([str(d / "python3"), "-c", "import sys; print(sys.version_info[:2])"], str(d))
    assert r.stdout == "(3, 9)\n"
    _check_runs([str(pyz)], str(d))
