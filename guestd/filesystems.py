"""Mounted filesystems and their usage, from /proc/mounts and statvfs(2).

Kept: filesystems that hold data. Left out:

- kernel and pseudo filesystems (proc, sysfs, cgroup, devpts, ...), and
  squashfs and overlay, whose usage tells nothing (snap packages, container
  layers) — except at the root, which is always kept, whatever its type
  (the test guest's root is the initramfs's rootfs);
- tmpfs at or below /dev, /run, /sys and /proc;
- network and FUSE filesystems (NFS, CIFS, Ceph, sshfs, ...): statvfs on
  one whose server or daemon hangs would hang the agent, and their usage is
  a server's, not the guest's; ``fuseblk`` (a local disk, e.g. NTFS) stays;
- a mount hidden by a later one on the same mount point.

Sizes are rounded to whole MiB, so that a byte written does not change the
report; ``significantly_changed`` then tells whether the usage moved enough
(1 % of the filesystem or 64 MiB) since the values last sent.

Runs inside guests: standard library only, Python >= 3.9.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from guestd.facts import read_text

log = logging.getLogger(__name__)

MIB = 1 << 20
MAX_FILESYSTEMS = 64
MAX_PATH_TEXT = 512
MAX_USAGE_STEP = 64 * MIB
"""Usage moved by this much (or by 1 % of the filesystem) counts as a change."""

PSEUDO_TYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nfsd", "nsfs", "overlay",
        "proc", "pstore", "ramfs", "rootfs", "rpc_pipefs", "securityfs", "selinuxfs",
        "squashfs", "sysfs", "tracefs", "xenfs",
    }
)  # fmt: skip
NETWORK_TYPES = frozenset(
    {
        "afs", "ceph", "cifs", "coda", "davfs", "glusterfs", "lustre", "ncpfs", "nfs", "nfs4",
        "ocfs2", "smb3", "smbfs",
    }
)  # fmt: skip
SYSTEM_TREES = ("/dev", "/run", "/sys", "/proc")
_OCTAL = re.compile(r"\\([0-7]{3})")

StatVfs = Callable[[str], os.statvfs_result]


@dataclass(frozen=True)
class Mount:
    device: str
    mount_point: str
    type: str


@dataclass(frozen=True)
class Usage:
    mount_point: str
    type: str
    device: str
    total_bytes: int
    used_bytes: int


def unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (\\040 for a space...) decoded."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    mounts: list[Mount] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3:
            mounts.append(Mount(unescape(words[0]), unescape(words[1]), words[2]))
    return mounts


def _under(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree + "/")


def wanted(mount: Mount) -> bool:
    """Whether a mount is reported (see the module docstring)."""
    kind, where = mount.type, mount.mount_point
    if where == "/":
        return True
    if kind in PSEUDO_TYPES or kind in NETWORK_TYPES or kind.startswith("nfs"):
        return False
    if kind == "fuse" or kind.startswith("fuse."):
        return False
    return not (kind == "tmpfs" and any(_under(where, t) for t in SYSTEM_TREES))


def round_mib(n: int) -> int:
    return (n + MIB // 2) // MIB * MIB


def filesystems(root: Path, statvfs: StatVfs = os.statvfs) -> list[Usage]:
    """The reported filesystems, sorted by mount point, at most MAX_FILESYSTEMS."""
    visible: dict[str, Mount] = {}
    for mount in parse_mounts(read_text(root / "proc/mounts") or ""):
        if mount.mount_point.startswith("/"):
            visible[mount.mount_point] = mount  # a later mount hides an earlier one
    found: list[Usage] = []
    for where in sorted(visible):
        mount = visible[where]
        if not wanted(mount):
            continue
        if len(found) >= MAX_FILESYSTEMS:
            log.warning("reporting only %d filesystems", MAX_FILESYSTEMS)
            break
        try:
            st = statvfs(str(root / where.lstrip("/")))
        except OSError as exc:
            log.debug("statvfs %s: %s", where, exc)
            continue
        total = round_mib(st.f_blocks * st.f_frsize)
        if total == 0 and where != "/":
            continue  # nothing to tell (and below a MiB, nothing to tell in MiB)
        found.append(
            Usage(
                mount_point=where[:MAX_PATH_TEXT],
                type=mount.type[:MAX_PATH_TEXT],
                device=mount.device[:MAX_PATH_TEXT],
                total_bytes=total,
                used_bytes=round_mib((st.f_blocks - st.f_bfree) * st.f_frsize),
            )
        )
    return found


def usage_step(total_bytes: int) -> int:
    """How far usage must move to count as changed: 1 % of the size, within [1 MiB, 64 MiB]."""
    return min(max(total_bytes // 100, MIB), MAX_USAGE_STEP)


def significantly_changed(old: Sequence[Usage], new: Sequence[Usage]) -> bool:
    """Whether new differs from old by more than usage moving within its step."""
    if len(old) != len(new):
        return True
    for i, a in enumerate(old):
        b = new[i]
        if (a.mount_point, a.type, a.device, a.total_bytes) != (
            b.mount_point,
            b.type,
            b.device,
            b.total_bytes,
        ):
            return True
        if abs(a.used_bytes - b.used_bytes) >= usage_step(b.total_bytes):
            return True
    return False
