# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""Run a command under the file-system and memory restrictions of a systemd
unit where no systemd runs (tests): in a private mount namespace (unshare
--mount), ProtectSystem=strict (every mount read-only but /dev, /proc,
/sys), ProtectHome=yes (/home, /root, /run/user empty), PrivateTmp=yes
(/tmp, /var/tmp fresh), MemoryDenyWriteExecute=yes (prctl PR_SET_MDWE,
Linux 6.3+), UMask; then exec the command.

    unshare --mount --propagation private python3 unitns.py BIND UMASK -- CMD...

BIND is bound at /mnt first (read-only with the rest): what the command
runs from, where PrivateTmp does not hide it."""
import ctypes
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
libc = ctypes.CDLL(None, use_errno=True)


def mount(src, target, fstype, flags, data=None):
    if libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(), flags,
                  data and data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "mount %s: %s" % (target, os.strerror(e)))


def mounts():
    """(mount point, its per-mount flags) of this namespace, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].encode().decode("unicode_escape")
            flags = sum(FLAGS.get(o, 0) for o in parts[5].split(","))
            out.append((mp, flags))
    return out


def main(bind, umask, argv):
    mount(bind, "/mnt", None, MS_BIND)
    for d in ("/tmp", "/var/tmp"):                                  # PrivateTmp=yes
        mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for d in ("/home", "/root", "/run/user"):                       # ProtectHome=yes
        if os.path.isdir(d):
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755")
    keep = ("/dev", "/proc", "/sys", "/tmp", "/var/tmp")             # ProtectSystem=strict
    for mp, flags in mounts():
        if not any(mp == k or mp.startswith(k + "/") for k in keep):
            try:
                mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
            except OSError:
                if os.path.exists(mp):          # one hidden by a later mount is no longer reachable
                    pass
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:   # MemoryDenyWriteExecute=yes
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")
    os.umask(int(umask, 8))
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sep = sys.argv.index("--")
    main(sys.argv[1], sys.argv[2], sys.argv[sep + 1:])
