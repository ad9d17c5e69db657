# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KVMEXIT = [sys.executable, "-m", "kvmexit"]


def corpus_path():
    """The Debian kernel BTF corpus: $KVMEXIT_BTF_CORPUS, else ../shared/btf beside the clone."""
    return Path(os.environ.get("KVMEXIT_BTF_CORPUS", REPO.parent / "shared" / "btf"))


def _bpf_ready():
    if os.geteuid() != 0:
        return "needs root for BPF"
    from kvmexit import kernel
    from kvmexit.errors import KvmexitError
    try:
        kernel.event_format("kvm", "kvm_exit")
    except KvmexitError as e:
        return str(e)
    return None


def _kvm_ready():
    if os.geteuid() != 0:
        return "needs root for /dev/kvm"
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm on this machine"
    return None


def pytest_runtest_setup(item):
    for marker, check in (("bpf", _bpf_ready), ("kvm", _kvm_ready)):
        if item.get_closest_marker(marker):
            why = check()
            if why:
                pytest.skip(why)


@pytest.fixture(scope="session")
def corpus():
    path = corpus_path()
    if not (path / "debian-6.12-amd64" / "vmlinux.btf").exists():
        pytest.skip("Debian BTF corpus not found at %s (set KVMEXIT_BTF_CORPUS)" % path)
    return path


def run_kvmexit(*args, timeout=60, **kw):
    """Run the real CLI in a subprocess; return CompletedProcess (text)."""
    return subprocess.run(KVMEXIT + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def bpf_ids(what):
    """ids of the kernel's BPF programs or links (bpftool)."""
    out = subprocess.run(["bpftool", what, "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[0] for line in out.splitlines() if line[:1].isdigit()}
