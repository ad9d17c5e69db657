# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The exporter where others can reach it: the node_exporter textfile written
safely into a directory another user may write (links planted at every name
it could use touch nothing outside), and --web-config: TLS, client
certificates, bcrypt basic auth, in exporter-toolkit's format."""
import os
import stat
import tempfile

import pytest

from kvmexit import exporter

REGISTRY_TEXT = b"kvmexit_up 1.0\n"


class _Registry:
    """What generate_latest() needs of a registry: one sample."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        g = GaugeMetricFamily("kvmexit_up", "test")
        g.add_metric([], 1)
        yield g


def test_textfile_through_planted_links_touches_nothing_outside(tmp_path, monkeypatch):
    target_dir = tmp_path / "textfiles"
    target_dir.mkdir(mode=0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = target_dir / "kvmexit.prom"
    # the names a writer could use: prometheus_client's own (path.PID.TID), the first names
    # mkstemp tries (made predictable here), and the textfile itself
    import threading
    planted = [target_dir / ("kvmexit.prom.%d.%d" % (os.getpid(), threading.get_ident()))]
    names = iter(["a", "a", "b"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    planted.append(target_dir / ".kvmexit.prom.a.tmp")
    for p in planted:
        p.symlink_to(victim)
    path.symlink_to(victim)
    exporter._write_textfile(str(path), _Registry())
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_bytes().endswith(REGISTRY_TEXT)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()
    # the links are as they were; the one temporary file used went (renamed into place)
    assert all(p.is_symlink() for p in planted)
    assert sorted(p.name for p in target_dir.iterdir()) == sorted([p.name for p in planted] + ["kvmexit.prom"])


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_textfile_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        exporter._write_textfile(str(tmp_path / "k.prom"), _Registry())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.prom").stat().st_mode) == 0o640
