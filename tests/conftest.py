# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Markers that skip with a reason where root, BPF, /dev/kvm or the
emulators are missing; the BTF corpus and the kernel matrix as fixtures.
Shared helpers live in helpers.py (processes) and testrun.py (BPF_PROG_TEST_RUN)."""
import os
import time

import pytest

from helpers import reap


@pytest.fixture(autouse=True)
def _end_what_the_test_started():
    """Processes a test started (helpers.spawn) end with it, on failure too."""
    yield
    reap()


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


def _matrix_ready():
    import shutil
    if os.geteuid() != 0:
        return "needs root (the machines share this machine's root read-only)"
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("qemu-system-aarch64", "qemu-system-arm"),
                      ("bochs", "bochs"), ("xorriso", "xorriso"),
                      ("busybox", "busybox-static"), ("mke2fs", "e2fsprogs"), ("perf", "linux-perf")):
        if shutil.which(tool) is None:
            return "%s not found: apt-get install %s (make test installs it)" % (tool, pkg)
    return None


def pytest_collection_modifyitems(session, config, items):
    """The kernel matrix last: its machines keep both cores busy, and no
    other test should run beside them."""
    matrix = [i for i in items if i.get_closest_marker("matrix")]
    items[:] = [i for i in items if not i.get_closest_marker("matrix")] + matrix


def pytest_runtest_setup(item):
    for marker, check in (("bpf", _bpf_ready), ("kvm", _kvm_ready), ("matrix", _matrix_ready)):
        if item.get_closest_marker(marker):
            why = check()
            if why:
                pytest.skip(why)


@pytest.fixture(scope="session")
def matrix(request, tmp_path_factory):
    """The kernel matrix's machines, all started at the first use, two at a time."""
    from kernels.matrix import Matrix, jobs
    lines = []
    names = sorted({i.callspec.params["run"] for i in request.session.items       # those selected
                    if i.get_closest_marker("matrix") and hasattr(i, "callspec")})
    m = Matrix(names, tmp_path_factory.mktemp("matrix"), jobs(), log=lines.append)
    request.config.kvmexit_matrix = (m, lines)
    yield m
    m.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """What the matrix ran: each machine's kernel packages (name, version,
    sha256 as checked against the archive's signed index) and its times."""
    m, lines = getattr(config, "kvmexit_matrix", (None, None))
    if m is None:
        return
    terminalreporter.section("kernel matrix")
    for line in lines:
        terminalreporter.write_line(line)
    for name, f in m.futures.items():
        if f.done() and not f.cancelled():
            if f.exception() is None:
                for line in f.result().summary():
                    terminalreporter.write_line(line)
            else:
                terminalreporter.write_line("%s: %s" % (name, str(f.exception()).splitlines()[0]))
    terminalreporter.write_line("matrix: %.0f s in all" % (time.monotonic() - m.started))


@pytest.fixture(scope="session")
def corpus():
    """folder(series) of the BTF corpus, built from the matrix's Debian packages on first use."""
    from kernels import corpus
    return corpus.folder
