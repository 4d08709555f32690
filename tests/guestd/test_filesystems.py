from __future__ import annotations

import os
from pathlib import Path

import pytest

from guestd import filesystems
from guestd.filesystems import MIB, Mount, Usage
from tests.guestd.fakeroot import FakeRoot

GIB = 1024 * MIB

MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=4010000k 0 0
devpts /dev/pts devpts rw,nosuid,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=803000k 0 0
/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
tmpfs /run/user/1000 tmpfs rw,nosuid,nodev,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
/dev/vda15 /boot/efi vfat rw,relatime 0 0
/dev/vdb1 /srv/my\\040data xfs rw,relatime 0 0
/dev/loop0 /snap/core20/1234 squashfs ro,nodev,relatime 0 0
nas:/export /mnt/nas nfs4 rw,relatime,vers=4.2 0 0
//server/share /mnt/share cifs rw,relatime 0 0
sshfs#me@host: /mnt/ssh fuse.sshfs rw,nosuid,nodev 0 0
/dev/sdc1 /mnt/windows fuseblk rw,nosuid,nodev,allow_other 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw,relatime 0 0
systemd-1 /proc/sys/fs/binfmt_misc autofs rw,relatime 0 0
/dev/vdc1 /data ext4 rw 0 0
/dev/vdd1 /data ext4 rw 0 0
"""


def fake_statvfs(sizes: dict[str, tuple[int, int]]) -> filesystems.StatVfs:
    """statvfs answering (total, free) bytes per path, in 4 KiB blocks."""

    def statvfs(path: str) -> os.statvfs_result:
        if path not in sizes:
            raise FileNotFoundError(path)
        total, free = sizes[path]
        blocks, bfree = total // 4096, free // 4096
        return os.statvfs_result((4096, 4096, blocks, bfree, bfree, 100, 50, 50, 0, 255))

    return statvfs


def test_parse_mounts_decodes_escapes():
    mounts = filesystems.parse_mounts("/dev/vdb1 /srv/my\\040data\\011x xfs rw 0 0\nshort\n")
    assert mounts == [Mount("/dev/vdb1", "/srv/my data\tx", "xfs")]


@pytest.mark.parametrize(
    ("mount", "kept"),
    [
        (Mount("rootfs", "/", "rootfs"), True),
        (Mount("none", "/", "tmpfs"), True),
        (Mount("overlay", "/", "overlay"), True),
        (Mount("tmpfs", "/tmp", "tmpfs"), True),
        (Mount("tmpfs", "/run", "tmpfs"), False),
        (Mount("tmpfs", "/run/user/0", "tmpfs"), False),
        (Mount("tmpfs", "/dev/shm", "tmpfs"), False),
        (Mount("tmpfs", "/runner", "tmpfs"), True),
        (Mount("proc", "/proc", "proc"), False),
        (Mount("nas:/x", "/mnt", "nfs"), False),
        (Mount("nas:/x", "/mnt", "nfs4"), False),
        (Mount("a", "/mnt", "fuse.sshfs"), False),
        (Mount("a", "/mnt", "fuse"), False),
        (Mount("/dev/sdc1", "/mnt", "fuseblk"), True),
        (Mount("/dev/vda2", "/home", "btrfs"), True),
    ],
)
def test_wanted(mount: Mount, kept: bool):
    assert filesystems.wanted(mount) is kept


def test_filesystems_of_a_typical_guest(tmp_path: Path):
    FakeRoot(tmp_path).write("proc/mounts", MOUNTS)
    sizes = {
        f"{tmp_path}": (20 * GIB, 15 * GIB + 300 * 1024),
        f"{tmp_path}/tmp": (2 * GIB, 2 * GIB),
        f"{tmp_path}/boot/efi": (512 * MIB, 500 * MIB),
        f"{tmp_path}/srv/my data": (100 * GIB, 40 * GIB),
        f"{tmp_path}/mnt/windows": (64 * GIB, 1 * GIB),
        f"{tmp_path}/data": (8 * GIB, 6 * GIB),
    }
    found = filesystems.filesystems(tmp_path, fake_statvfs(sizes))
    assert found == [
        Usage("/", "ext4", "/dev/vda1", 20 * GIB, 5 * GIB),  # the 300 KiB round away
        Usage("/boot/efi", "vfat", "/dev/vda15", 512 * MIB, 12 * MIB),
        Usage("/data", "ext4", "/dev/vdd1", 8 * GIB, 2 * GIB),  # the later of two mounts
        Usage("/mnt/windows", "fuseblk", "/dev/sdc1", 64 * GIB, 63 * GIB),
        Usage("/srv/my data", "xfs", "/dev/vdb1", 100 * GIB, 60 * GIB),
        Usage("/tmp", "tmpfs", "tmpfs", 2 * GIB, 0),
    ]


def test_an_initramfs_root_is_kept_even_when_empty(tmp_path: Path):
    FakeRoot(tmp_path).write("proc/mounts", "rootfs / rootfs rw 0 0\nnone /x ext4 rw 0 0\n")
    sizes = {f"{tmp_path}": (0, 0), f"{tmp_path}/x": (100 * 1024, 0)}
    assert filesystems.filesystems(tmp_path, fake_statvfs(sizes)) == [
        Usage("/", "rootfs", "rootfs", 0, 0)
    ]


def test_unreachable_mount_points_are_skipped(tmp_path: Path):
    FakeRoot(tmp_path).write("proc/mounts", "/dev/vda1 / ext4 rw 0 0\n/dev/vdb /gone ext4 rw 0 0\n")
    found = filesystems.filesystems(tmp_path, fake_statvfs({f"{tmp_path}": (GIB, 0)}))
    assert [f.mount_point for f in found] == ["/"]


def test_count_is_capped(tmp_path: Path):
    lines = "".join(f"/dev/d{i} /m{i:03} ext4 rw 0 0\n" for i in range(100))
    FakeRoot(tmp_path).write("proc/mounts", lines)
    sizes = {f"{tmp_path}/m{i:03}": (GIB, 0) for i in range(100)}
    assert len(filesystems.filesystems(tmp_path, fake_statvfs(sizes))) == (
        filesystems.MAX_FILESYSTEMS
    )


def test_no_proc(tmp_path: Path):
    assert filesystems.filesystems(tmp_path) == []


def test_rounding_to_mib():
    assert filesystems.round_mib(MIB // 2 - 1) == 0
    assert filesystems.round_mib(MIB // 2) == MIB
    assert filesystems.round_mib(5 * MIB + 1) == 5 * MIB


@pytest.mark.parametrize(
    ("total", "step"),
    [(50 * MIB, MIB), (GIB, GIB // 100), (1024 * GIB, 64 * MIB)],
)
def test_usage_step(total: int, step: int):
    assert filesystems.usage_step(total) == step


def _fs(used: int, total: int = 10 * GIB, where: str = "/") -> Usage:
    return Usage(where, "ext4", "/dev/vda1", total, used)


def test_significant_change_of_usage():
    # 1 % of 10 GiB is about 102 MiB, above the 64 MiB cap: 64 MiB it is.
    assert not filesystems.significantly_changed([_fs(GIB)], [_fs(GIB + 63 * MIB)])
    assert filesystems.significantly_changed([_fs(GIB)], [_fs(GIB + 64 * MIB)])
    assert filesystems.significantly_changed([_fs(GIB)], [_fs(GIB - 64 * MIB)])
    small = 500 * MIB  # 1 % is 5 MiB
    assert not filesystems.significantly_changed([_fs(0, small)], [_fs(4 * MIB, small)])
    assert filesystems.significantly_changed([_fs(0, small)], [_fs(5 * MIB, small)])


def test_any_other_difference_is_significant():
    assert filesystems.significantly_changed([_fs(GIB)], [_fs(GIB), _fs(0, where="/x")])
    assert filesystems.significantly_changed([_fs(GIB)], [_fs(GIB, total=11 * GIB)])
    assert filesystems.significantly_changed([_fs(GIB)], [_fs(GIB, where="/y")])
    assert not filesystems.significantly_changed([], [])


def test_real_root_has_a_root():
    found = filesystems.filesystems(Path("/"))
    assert found and found[0].mount_point == "/"
    assert all(f.used_bytes % MIB == 0 and f.total_bytes % MIB == 0 for f in found)
