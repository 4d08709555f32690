from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

import guestd.report as report_module
from guestd import filesystems
from guestd.fqdn import ResolverLookup
from guestd.report import SECTIONS, Reporter, Sources, changed, content_hash
from tests.guestd.fakeroot import DPKG_STATUS, FakeRoot

MIB = filesystems.MIB
GIB = 1024 * MIB


def _sections(report: gc.GuestReport) -> set[str]:
    return {f.name for f, _ in report.ListFields() if f.name != "full"}


def test_sections_match_the_report_message():
    fields = {f.name for f in gc.GuestReport.DESCRIPTOR.fields if f.name != "full"}
    assert set(SECTIONS) == fields


def test_full_report_has_every_section(fake_root: FakeRoot):
    report = Reporter(fake_root.path).full()
    assert report.full
    assert _sections(report) == set(SECTIONS)
    assert report.system.hostname == "guest-1"
    assert report.system.uptime_seconds == 123.45
    assert report.os.id == "debian"
    assert [i.name for i in report.network.interfaces] == ["eth0", "eth1"]
    assert list(report.applications.applications) == ["bash 5.2.15-2+b2", "python3 3.11.2-1+b1"]


def test_nothing_changed_means_no_delta(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    fake_root.write("proc/uptime", "999.0 1.0\n")
    assert reporter.delta() is None


def test_delta_holds_only_changed_sections(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    fake_root.set_ipv4({"eth0": "10.0.2.15"})
    fake_root.write("proc/sys/kernel/hostname", "renamed\n")
    delta = reporter.delta()
    assert delta is not None and not delta.full
    assert _sections(delta) == {"network", "system"}
    assert list(delta.network.interfaces[0].ipv4_addresses) == ["10.0.2.15"]
    assert delta.system.hostname == "renamed"


def test_a_delta_not_marked_sent_comes_again(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    fake_root.write("etc/os-release", "NAME=Other\n")
    assert reporter.delta() is not None
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == {"os"}
    reporter.mark_sent(delta)
    assert reporter.delta() is None


def test_applications_are_reread_only_when_the_database_changes(fake_root: FakeRoot, monkeypatch):
    reads: list[object] = []
    real = report_module.applications_section

    def counting(root, patterns=()):
        reads.append(root)
        return real(root, patterns)

    monkeypatch.setattr(report_module, "applications_section", counting)
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    reporter.delta()
    reporter.full()
    assert len(reads) == 1
    fake_root.write(
        "var/lib/dpkg/status",
        DPKG_STATUS + "\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1.2\n",
    )
    delta = reporter.delta()
    assert len(reads) == 2
    assert delta is not None and _sections(delta) == {"applications"}
    assert "zlib1g 1.2" in delta.applications.applications


def test_forget_sent_makes_every_section_new(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    reporter.forget_sent()
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == set(SECTIONS)


def test_content_hash_leaves_out_uptime_and_itself():
    a = gc.SystemSection(hostname="h", uptime_seconds=1.0, cpus=2)
    b = gc.SystemSection(hostname="h", uptime_seconds=2.0, cpus=2, content_hash="stale")
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(gc.SystemSection(hostname="h", cpus=4))
    assert b.uptime_seconds == 2.0 and b.content_hash == "stale"  # the section is left alone


def test_content_hash_is_a_fixed_function_of_the_content():
    # Hosts may compare hashes across guests and agent versions: the scheme must not drift.
    section = gc.OsSection(name="Debian GNU/Linux", version="12", id="debian")
    wire = b"\n\x10Debian GNU/Linux" + b"\x12\x0212" + b"\x1a\x06debian"
    assert content_hash(section) == hashlib.sha256(wire).hexdigest()[:16]
    assert len(content_hash(gc.UsersSection())) == report_module.HASH_DIGITS


def test_every_section_carries_its_hash(fake_root: FakeRoot):
    report = Reporter(fake_root.path).full()
    for name in SECTIONS:
        section = getattr(report, name)
        assert section.content_hash == content_hash(section), name


def test_a_section_that_became_empty_is_still_present(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    reporter.mark_sent(reporter.full())
    for name in ("eth0", "eth1"):
        for f in (fake_root.path / "sys/class/net" / name).iterdir():
            f.unlink()
        (fake_root.path / "sys/class/net" / name).rmdir()
    delta = reporter.delta()
    assert delta is not None
    wire = gc.GuestReport.FromString(delta.SerializeToString())
    assert wire.HasField("network") and not wire.network.interfaces
    assert not wire.HasField("os")


def test_new_system_facts(fake_root: FakeRoot):
    system = Reporter(fake_root.path).full().system
    assert system.fqdn == "guest-1.example.org"
    assert system.timezone == "Europe/Paris"
    assert system.memory_total_kib == 250000


def test_sources_for_the_real_root_only(tmp_path: Path):
    real = Sources.for_root(Path("/"))
    assert isinstance(real.resolver, ResolverLookup) and real.environ is os.environ
    fake = Sources.for_root(tmp_path)
    assert fake.resolver is None and fake.environ is None


def test_users_section_and_its_delta(fake_root: FakeRoot):
    reporter = Reporter(fake_root.path)
    full = reporter.full()
    assert full.HasField("users") and not full.users.users
    reporter.mark_sent(full)
    fake_root.set_logins([(4242, "pts/0", "alice", "10.0.0.7", 1_700_000_000)])
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == {"users"}
    [user] = delta.users.users
    assert (user.name, user.terminal, user.host, user.login_unix_seconds) == (
        "alice",
        "pts/0",
        "10.0.0.7",
        1_700_000_000,
    )


def test_applications_filter(fake_root: FakeRoot):
    report = Reporter(fake_root.path, applications_filter=("py*", "linux-image-*")).full()
    assert list(report.applications.applications) == ["python3 3.11.2-1+b1"]


class Disks:
    """A statvfs whose answers the test changes: (total, used) bytes per mount point."""

    def __init__(self, root: FakeRoot, sizes: dict[str, tuple[int, int]]) -> None:
        self.root = root
        self.sizes = sizes
        self.remount()

    def remount(self) -> None:
        lines = "".join(f"/dev/vd{i} {m} ext4 rw 0 0\n" for i, m in enumerate(self.sizes))
        self.root.write("proc/mounts", lines)

    def __call__(self, path: str) -> os.statvfs_result:
        where = "/" + os.path.relpath(path, self.root.path).replace(".", "")
        total, used = self.sizes[where.rstrip("/") or "/"]
        free = (total - used) // 4096
        return os.statvfs_result((4096, 4096, total // 4096, free, free, 0, 0, 0, 0, 255))


def _fs_reporter(fake_root: FakeRoot, disks: Disks) -> Reporter:
    reporter = Reporter(fake_root.path, sources=Sources(statvfs=disks))
    reporter.mark_sent(reporter.full())
    return reporter


def test_filesystem_usage_must_move_enough_to_be_sent(fake_root: FakeRoot):
    disks = Disks(fake_root, {"/": (10 * GIB, 2 * GIB), "/small": (200 * MIB, 10 * MIB)})
    reporter = _fs_reporter(fake_root, disks)
    disks.sizes["/"] = (10 * GIB, 2 * GIB + 40 * MIB)  # below 64 MiB
    disks.sizes["/small"] = (200 * MIB, 11 * MIB)  # below 1 % (2 MiB)
    assert reporter.delta() is None
    disks.sizes["/"] = (10 * GIB, 2 * GIB + 63 * MIB)  # still within the step of the last sent
    assert reporter.delta() is None
    disks.sizes["/small"] = (200 * MIB, 12 * MIB)
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == {"filesystems"}
    # Sent with every filesystem's current values, and the new hash.
    used = {f.mount_point: f.used_bytes for f in delta.filesystems.filesystems}
    assert used == {"/": 2 * GIB + 63 * MIB, "/small": 12 * MIB}
    assert delta.filesystems.content_hash == content_hash(delta.filesystems)
    reporter.mark_sent(delta)
    assert reporter.delta() is None


def test_a_new_filesystem_is_sent_at_once(fake_root: FakeRoot):
    disks = Disks(fake_root, {"/": (10 * GIB, 2 * GIB)})
    reporter = _fs_reporter(fake_root, disks)
    disks.sizes["/srv"] = (GIB, 0)
    disks.remount()
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == {"filesystems"}
    assert [f.mount_point for f in delta.filesystems.filesystems] == ["/", "/srv"]


def test_changed_compares_hashes():
    a = report_module.hashed(gc.OsSection(name="a"))
    b = report_module.hashed(gc.OsSection(name="b"))
    assert changed(None, a)
    assert not changed(a, report_module.hashed(gc.OsSection(name="a")))
    assert changed(a, b)


@pytest.mark.parametrize("name", SECTIONS)
def test_forgetting_makes_each_section_come_again(fake_root: FakeRoot, name: str):
    reporter = Reporter(fake_root.path)
    full = reporter.full()
    reporter.mark_sent(full)
    partial = gc.GuestReport()
    getattr(partial, name).CopyFrom(getattr(full, name))
    reporter.forget_sent()
    reporter.mark_sent(partial)
    delta = reporter.delta()
    assert delta is not None and _sections(delta) == set(SECTIONS) - {name}
