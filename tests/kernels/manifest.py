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

# arm64 (KVM built in, no kvm module): bullseye-security's arm64 pool answered
# 404 for its newest 5.10 images when this was written, so 5.10 comes from
# bullseye itself
ARM64_SERIES = {s.name: s for s in (
    Series("arm64-5.10", "bullseye", r"linux-image-(5\.10\.0-\d+-arm64)-unsigned", arch="arm64"),
    Series("arm64-6.1", "bookworm-security", r"linux-image-(6\.1\.0-\d+-arm64)-unsigned", arch="arm64"),
    Series("arm64-6.12", "trixie-security", r"linux-image-(6\.12\.\d+\+deb13-arm64)-unsigned", arch="arm64"),
    Series("arm64-newest", "trixie-backports", r"linux-binary-unsigned-(\d+\.\d+\.\d+\+deb13-arm64)",
           modules="linux-modules-{release}", arch="arm64"),
)}
# what the machines boot: SERIES (x86, also the BTF corpus of the vendor layouts) and arm64's
ALL_SERIES = {**SERIES, **ARM64_SERIES}
