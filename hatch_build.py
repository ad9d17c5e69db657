# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Build hook: the BPF objects are build output (git-ignored) shipped as
package data.  Built with `make -C bpf` when missing, or always with
KVMEXIT_BUILD_BPF=1 (what a distro build does); an sdist carries them, so
installing one needs no clang."""
import os
import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

OBJECTS = ("kvm_exit.bpf.o", "kvm_exit_direct.bpf.o", "kvm_exit_legacy.bpf.o", "kvm_exit_arm64.bpf.o")


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version, build_data):
        root = Path(self.root)
        objs = [root / "src" / "kvmexit" / "bpf" / o for o in OBJECTS]
        if os.environ.get("KVMEXIT_BUILD_BPF") == "1" or not all(o.exists() for o in objs):
            if not (root / "bpf" / "Makefile").exists():
                raise RuntimeError("BPF objects missing and no bpf/ sources to build them from")
            if shutil.which(os.environ.get("CLANG", "clang")) is None:
                raise RuntimeError("clang not found: install clang and llvm to build the BPF objects "
                                   "(apt-get install clang llvm libbpf-dev)")
            subprocess.run(["make", "-C", str(root / "bpf")], check=True)
        build_data["artifacts"].extend(str(o.relative_to(root)) for o in objs)
