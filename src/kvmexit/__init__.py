# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit: count KVM exits by reason, per VM process, vCPU thread and vCPU."""
__version__ = "0.1.0"
