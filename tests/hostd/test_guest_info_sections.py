"""The report sections beyond the basics: users, filesystems, system details."""

from __future__ import annotations

from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.guest_info import merge_report

LIMITS = ChannelLimits(max_users=2, max_filesystems=2)


def test_users_filesystems_and_system_details_are_merged_cleaned_and_capped() -> None:
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(
            hostname="h", fqdn="h.example\x07.org", timezone="Europe/Paris", cpus=4,
            memory_total_kib=1 << 20,
        ),
        os=gc.OsSection(name="Debian", architecture="x86_64"),
        users=gc.UsersSection(
            users=[
                gc.LoggedInUser(name="root\x1b[31m", login_unix_seconds=1_700_000_000),
                gc.LoggedInUser(name="eve", host="10.0.0.9", login_unix_seconds=-5),
                gc.LoggedInUser(name="third"),
            ]
        ),
        filesystems=gc.FilesystemsSection(
            filesystems=[
                gc.Filesystem(mount_point="/", type="ext4", total_bytes=100, used_bytes=500),
                gc.Filesystem(mount_point="/boot", type="vfat", total_bytes=10, used_bytes=1),
                gc.Filesystem(mount_point="/x"),
            ]
        ),
    )  # fmt: skip
    info = merge_report(vm_pb2.GuestInfo(), report, LIMITS)
    assert (info.fqdn, info.timezone, info.cpus, info.architecture) == (
        "h.example.org", "Europe/Paris", 4, "x86_64",
    )  # fmt: skip
    assert [u.name for u in info.users] == ["root[31m", "eve"]
    assert info.users[0].login_time.seconds == 1_700_000_000
    assert not info.users[1].HasField("login_time")  # a negative time is not believed
    assert [(f.mount_point, f.used_bytes) for f in info.filesystems] == [("/", 100), ("/boot", 1)]


def test_a_partial_report_keeps_the_sections_it_does_not_carry() -> None:
    full = gc.GuestReport(
        full=True,
        users=gc.UsersSection(users=[gc.LoggedInUser(name="root")]),
        filesystems=gc.FilesystemsSection(filesystems=[gc.Filesystem(mount_point="/")]),
    )
    info = merge_report(vm_pb2.GuestInfo(), full, LIMITS)
    partial = gc.GuestReport(users=gc.UsersSection())  # everyone logged out
    info = merge_report(info, partial, LIMITS)
    assert list(info.users) == []
    assert [f.mount_point for f in info.filesystems] == ["/"]
