# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Which kernels the matrix boots, and under which emulator."""
from .fetch import Series

SERIES = {s.name: s for s in (
    Series("5.10", "bullseye-security", r"linux-image-(5\.10\.0-\d+-amd64)-unsigned"),
    Series("6.1", "bookworm-security", r"linux-image-(6\.1\.0-\d+-amd64)-unsigned"),
    Series("6.12", "trixie-security", r"linux-image-(6\.12\.\d+\+deb13-amd64)-unsigned"),
    # trixie-backports ships 6.16 signed only
    Series("6.16", "trixie-backports", r"linux-image-(6\.16\.\d+\+deb13-amd64)"),
    # the newest kernel of trixie-backports: 7.x splits image and modules
    Series("newest", "trixie-backports", r"linux-binary-unsigned-(\d+\.\d+\.\d+\+deb13-amd64)",
           modules="linux-modules-{release}"),
)}
