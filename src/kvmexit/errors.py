# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""kvmexit's exceptions.  Library code raises them; only cli.py prints."""
import os


class KvmexitError(Exception):
    """A runtime problem with a one-line message that names the fix."""


class LibbpfError(KvmexitError):
    """A libbpf call failed.

    Attributes:
        errno: the positive errno (or libbpf's 4000+ LIBBPF_ERRNO__* code).
        op: the libbpf function or step that failed.
    """

    def __init__(self, errno, op, message=None):
        self.errno = errno
        self.op = op
        if message is None:
            message = "%s: %s" % (op, os.strerror(errno) if errno < 4000 else "libbpf error %d" % errno)
        super().__init__(message)
