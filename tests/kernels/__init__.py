# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""The kernel matrix: stock Debian kernels booted under emulation (QEMU TCG
for AMD SVM, Bochs for Intel VMX), where the real kvm_amd / kvm_intel
modules emit real kvm_exit events for the built-in guest."""
