# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The kernel matrix's own parts that need no emulator: the Debian version
order, a series resolving to its newest package, the initramfs archive."""
import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from kernels import expect, fetch, image
from kernels.manifest import SERIES
from kvmexit import output
from kvmexit.counts import Snapshot


@pytest.mark.parametrize("a,b,want", [
    ("6.1.192-3", "6.1.192-2", 1),
    ("6.16.12-1~bpo13+1", "6.16.12-1", -1),        # a backport sorts before the release it backports
    ("7.3.4-1~bpo13+1", "7.2.12-1~bpo13+1", 1),
    ("5.10.262-1", "5.10.262-1", 0),
    ("1:1.1.2-0+deb12u1", "1.5.0-3", 1),            # the epoch wins
    ("6.12.118-1", "6.12.99-1", 1),                 # numbers compare as numbers
    ("2.0~rc1-1", "2.0-1", -1),
])
def test_debian_version_order(a, b, want):
    assert fetch.version_cmp(a, b) == want
    assert fetch.version_cmp(b, a) == -want


def _pkg(name, version):
    return fetch.Package(name, version, "0" * 64, 1)


def test_a_series_resolves_to_its_newest_package():
    index = {n: [_pkg(n, v) for v in vs] for n, vs in {
        "linux-image-6.1.0-56-amd64-unsigned": ["6.1.192-2"],
        "linux-image-6.1.0-57-amd64-unsigned": ["6.1.192-3"],
        "linux-image-6.1.0-57-cloud-amd64-unsigned": ["6.1.192-3"],
        "linux-image-6.1.0-57-amd64": ["6.1.192-3"],                    # the signed twin: another series
        "linux-binary-unsigned-7.2.12+deb13-amd64": ["7.2.12-1~bpo13+1"],
        "linux-binary-unsigned-7.3.4+deb13-amd64": ["7.3.4-1~bpo13+1"],
        "linux-modules-7.3.4+deb13-amd64": ["7.3.4-1~bpo13+1"],
        "linux-modules-7.2.12+deb13-amd64": ["7.2.12-1~bpo13+1"],
    }.items()}
    release, pkgs = fetch.resolve(SERIES["6.1"], index)
    assert (release, [p.name for p in pkgs]) == ("6.1.0-57-amd64", ["linux-image-6.1.0-57-amd64-unsigned"])
    release, pkgs = fetch.resolve(SERIES["newest"], index)
    assert release == "7.3.4+deb13-amd64"
    assert [p.line().split(" sha256")[0] for p in pkgs] == [
        "linux-binary-unsigned-7.3.4+deb13-amd64 7.3.4-1~bpo13+1", "linux-modules-7.3.4+deb13-amd64 7.3.4-1~bpo13+1"]
    del index["linux-modules-7.3.4+deb13-amd64"]
    with pytest.raises(RuntimeError, match="has no linux-modules-7.3.4"):
        fetch.resolve(SERIES["newest"], index)
    with pytest.raises(RuntimeError, match="no package matching"):
        fetch.resolve(SERIES["5.10"], index)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed (make test installs it)")
def test_initramfs_archive_lists_what_was_put_in(tmp_path):
    data = image._cpio([("bin", 0o40755, b""), ("init", 0o100755, b"#!/bin/sh\n"), ("a/odd", 0o100644, b"x" * 5)])
    (tmp_path / "i.cpio").write_bytes(gzip.decompress(gzip.compress(data)))
    out = subprocess.run(["busybox", "cpio", "-t", "-F", str(tmp_path / "i.cpio")], capture_output=True, text=True)
    assert out.stdout.split() == ["bin", "init", "a/odd"]
    d = tmp_path / "x"
    d.mkdir()
    subprocess.run(["busybox", "cpio", "-id", "-F", str(tmp_path / "i.cpio")], cwd=d, check=True,
                   capture_output=True)
    assert (d / "init").read_text() == "#!/bin/sh\n" and (d / "a/odd").read_bytes() == b"xxxxx"


FORMAT = ('print fmt: "vcpu %u reason %s", REC->vcpu_id, (REC->isa == 1) ? __print_symbolic(REC->exit_reason & '
          '0xffff, { 0, "EXCEPTION_NMI" }, { 30, "IO_INSTRUCTION" }) : __print_symbolic(REC->exit_reason, '
          '{ 0x07b, "io" }, { 0x400, "npf" }, { 0x060, "interrupt" }), (REC->isa == 1 && REC->exit_reason & '
          '~0xffff) ? " " : "", (REC->isa == 1) ? __print_flags(REC->exit_reason & ~0xffff, " ", '
          '{ 0x80000000, "FAILED_VMENTRY" }) : ""')


def test_perf_names_from_the_kernels_print_fmt():
    assert expect.kernel_names(FORMAT, expect.VMX) == {"EXCEPTION_NMI": 0, "IO_INSTRUCTION": 30}
    assert expect.kernel_names(FORMAT, expect.SVM) == {"io": 0x7B, "npf": 0x400, "interrupt": 0x60}
    report = ("\n             VM-EXIT    Samples  Samples%     Time%    Min Time    Max Time         Avg time \n\n"
              "                  io        150    88.76%    97.25%    193.89us  32165.07us    788.05us ( +-  31.15% )\n"
              "           interrupt          2     1.18%     0.14%     46.89us    118.15us     82.52us ( +-  43.18% )\n"
              "\nTotal Samples:152, Total events handled time:121551.44us.\n")
    assert expect.perf_report(report) == {"io": 150, "interrupt": 2}


def test_phases_of_a_guest_program():
    prog = "sync,out:0x80:60,cpuid:7,wrmsr:4,sync,out:0x80:40,hlt:2"
    assert [expect.steps_exits(p, expect.VMX) for p in expect.phases(prog)] == [
        {30: 1},                                              # the first sync's out
        {30: 61, 10: 7, 31: 1, 32: 4},                        # wrmsr reads the MSR once first
        {30: 41, 12: 2}]                                      # the program's last out


# -- where the machines see the checkout ---------------------------------------
def _mounts(branch, repo):
    """The mounts INIT makes in the new root for kvmexit.root=branch, in
    order, as (kind, source, target) with $R (the new root) as "" and $repo
    filled in; kind is "bind" or the filesystem type."""
    text = image.INIT.split("\n%s)\n" % branch, 1)[1].split(";;", 1)[0]
    out = []
    for line in text.splitlines():
        for cmd in line.split("&&"):
            words = cmd.split("||")[0].split()
            if not words or words[0] != "mount":
                continue
            kind, rest, i = None, [], 1
            while i < len(words):
                if words[i] in ("-t", "-o"):
                    if words[i] == "-t" or "bind" in words[i + 1].split(","):
                        kind = "bind" if words[i] == "-o" else words[i + 1]
                    i += 2
                    continue
                rest.append(words[i].replace("$repo", repo).replace("$R", ""))
                i += 1
            source, target = rest
            out.append((kind, source, target or "/"))
    return out


def _seen(path, mounts):
    """(device, path on it) that path names in the machine once mounts are made."""
    table = []                                   # (target, device, path of target on device)

    def resolve(p):
        best = None
        for target, dev, base in table:          # a later mount on the same place hides an earlier one
            if p == target or p.startswith(target.rstrip("/") + "/"):
                if best is None or len(target) >= len(best[0]):
                    best = (target, dev, base)
        assert best, "%s is on no mounted filesystem" % p
        target, dev, base = best
        rest = p[len(target):].lstrip("/")
        return dev, (base.rstrip("/") + "/" + rest) if rest else base
    for kind, source, target in mounts:
        table.append((target,) + (resolve(source) if kind == "bind" else (source, "/")))
    return resolve(path)


def test_mount_table_reader():
    mounts = [("ext4", "/dev/sda", "/"), ("tmpfs", "tmp", "/tmp"), ("bind", "/keep/a", "/tmp/a")]
    assert _seen("/tmp/a/b", mounts) == ("/dev/sda", "/keep/a/b")
    assert _seen("/tmp/c", mounts) == ("tmp", "/c")
    assert _seen("/usr/x", mounts) == ("/dev/sda", "/usr/x")
    assert _seen("/tmp/a/b", mounts[:2]) == ("tmp", "/a/b")        # the tmpfs hides it


def _checkout(parent):
    """A small checkout: what the machines run from it, one file each."""
    if not os.access(parent, os.W_OK):
        pytest.skip("%s is not writable here (needs root)" % parent)
    repo = Path(tempfile.mkdtemp(prefix="kvmexit-harness-", dir=parent))
    files = {"tests/kernels/inside.py": "print('inside')\n", "src/kvmexit/__init__.py": "__version__ = '0'\n",
             ".venv/pyvenv.cfg": "home = /usr/bin\n"}
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    return repo, files


@pytest.mark.skipif(shutil.which("mke2fs") is None or shutil.which("debugfs") is None,
                    reason="e2fsprogs not installed (make test installs it)")
@pytest.mark.parametrize("parent", ["/tmp", "/root", "/var/tmp"])
def test_machines_see_the_checkout_wherever_it_is(parent, tmp_path):
    """Bochs: the root image holds the checkout where no tmpfs goes, and
    INIT binds it at its own path; QEMU: the checkout's own 9p share mounts
    there last.  Read from the image, not booted."""
    repo, files = _checkout(parent)
    try:
        img = image.root_image([str(repo / ".venv"), str(repo / "src"), str(repo / "tests/kernels")], (),
                               tmp_path / "root.img", repo=repo)
        for rel, text in files.items():
            dev, path = _seen("%s/%s" % (repo, rel), _mounts("disk", str(repo)))
            assert (dev, path) == ("/dev/sda", "%s/%s" % (image.REPO_IN_IMAGE, rel))
            r = subprocess.run(["debugfs", "-R", "cat %s" % path, str(img)], capture_output=True, text=True)
            assert r.stdout == text, r.stderr
            assert _seen("%s/%s" % (repo, rel), _mounts("9p", str(repo))) == ("repo", "/" + rel)
    finally:
        shutil.rmtree(repo)


# -- the matrix's comparisons allow what the kernel reported skipping, no more --
def test_short_of_allows_only_reported_skips():
    want = {"io": 10, "hlt": 3}
    expect.short_of(dict(want), want, 0)
    expect.short_of({"io": 8, "hlt": 3}, want, 2)              # two skipped, two reported
    expect.short_of({"io": 9, "hlt": 3}, want, 2)              # a skipped host exit is outside want
    for got, skipped in (({"io": 9, "hlt": 3}, 0),             # one missing, none reported
                         ({"io": 7, "hlt": 3}, 2),             # one more missing than reported
                         ({"io": 11, "hlt": 3}, 5),            # over: a skip never adds
                         ({"io": 10, "hlt": 3, "cpuid": 1}, 5)):   # a key want lacks
        with pytest.raises(AssertionError):
            expect.short_of(got, want, skipped)


def test_same_events_differ_by_exactly_the_skips():
    a = {"io": 10, "hlt": 3}
    expect.same_events(a, dict(a), 0, 0)
    expect.same_events({"io": 9, "hlt": 3}, a, 1, 0)
    expect.same_events({"io": 9, "hlt": 3}, {"io": 10, "hlt": 2}, 2, 2)     # each short of the truth by 2 ...
    with pytest.raises(AssertionError):
        expect.same_events({"io": 9, "hlt": 3}, {"io": 10, "hlt": 2}, 2, 1)  # ... not by 2 and 1
    with pytest.raises(AssertionError):
        expect.same_events({"io": 9, "hlt": 3}, a, 0, 0)       # one missing, none reported
    with pytest.raises(AssertionError):
        expect.same_events({"io": 8, "hlt": 3}, a, 1, 0)       # one more missing than reported
    expect.same_events({"io": 9, "hlt": 3}, a, 4, 0, whole=False)   # a filtered part: up to what was skipped
    with pytest.raises(AssertionError):
        expect.same_events({"io": 5, "hlt": 3}, a, 4, 0, whole=False)


def test_tables_footer_of_losses():
    text = ("KVM_EXIT_REASON                     COUNT\nIOIO                                 1510\n"
            "HLT                                     7\n\n" + output.losses_footer(
                Snapshot({}, skipped=3, details_skipped=2), 16384))
    assert expect.parse_table(text, 0) == ([("IOIO", 1510), ("HLT", 7)], {"skipped": 3, "details_skipped": 2})
