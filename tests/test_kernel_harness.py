# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The kernel matrix's own parts that need no emulator: the Debian version
order, a series resolving to its newest package, the initramfs archive."""
import gzip
import shutil
import subprocess

import pytest

from kernels import expect, fetch, image
from kernels.manifest import SERIES


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
