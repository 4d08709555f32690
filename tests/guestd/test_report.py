from __future__ import annotations

from virtplane.v1 import guest_channel_pb2 as gc

import guestd.report as report_module
from guestd.report import SECTIONS, Reporter, comparable
from tests.guestd.fakeroot import DPKG_STATUS, FakeRoot


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

    def counting(root):
        reads.append(root)
        return real(root)

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


def test_system_sections_compare_without_uptime():
    a = gc.SystemSection(hostname="h", uptime_seconds=1.0, cpus=2)
    b = gc.SystemSection(hostname="h", uptime_seconds=2.0, cpus=2)
    assert comparable(a) == comparable(b)
    assert comparable(a) != comparable(gc.SystemSection(hostname="h", cpus=4))


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
