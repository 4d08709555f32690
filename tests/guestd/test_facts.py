from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from guestd import facts
from tests.guestd.fakeroot import DPKG_STATUS, FakeRoot


def test_hostname(fake_root: FakeRoot):
    assert facts.hostname(fake_root.path) == "guest-1"


def test_hostname_falls_back_to_the_running_system(tmp_path: Path):
    assert facts.hostname(tmp_path) == socket.gethostname()


def test_os_info(fake_root: FakeRoot):
    info = facts.os_info(fake_root.path)
    assert (info.name, info.version, info.id) == ("Debian GNU/Linux", "12", "debian")
    assert info.kernel_release == os.uname().release
    assert info.architecture == os.uname().machine


def test_os_info_falls_back_to_usr_lib(tmp_path: Path):
    FakeRoot(tmp_path).write("usr/lib/os-release", "NAME=Alpine\nID=alpine\n")
    info = facts.os_info(tmp_path)
    assert (info.name, info.version, info.id) == ("Alpine", "", "alpine")


def test_os_info_without_os_release(tmp_path: Path):
    info = facts.os_info(tmp_path)
    assert (info.name, info.version, info.id) == ("", "", "")


def test_parse_os_release_quoting():
    text = 'A=\'single quoted\'\nB="with \\"escape\\""\nC=bare\nbroken line\nD="unterminated\n'
    assert facts.parse_os_release(text) == {
        "A": "single quoted",
        "B": 'with "escape"',
        "C": "bare",
        "D": '"unterminated',
    }


def test_uptime(fake_root: FakeRoot, tmp_path: Path):
    assert facts.uptime_seconds(fake_root.path) == pytest.approx(123.45)
    assert facts.uptime_seconds(tmp_path) == 0.0
    FakeRoot(tmp_path).write("proc/uptime", "garbage\n")
    assert facts.uptime_seconds(tmp_path) == 0.0


def test_cpus():
    assert facts.cpu_count() == (os.cpu_count() or 0)


def test_free_memory(fake_root: FakeRoot, tmp_path: Path):
    assert facts.free_memory_kib(fake_root.path) == 180000
    FakeRoot(tmp_path).write("proc/meminfo", "MemTotal: 2000 kB\nMemFree: 700 kB\n")
    assert facts.free_memory_kib(tmp_path) == 700
    assert facts.free_memory_kib(tmp_path / "nothing") == 0


def test_applications_from_dpkg(fake_root: FakeRoot):
    # Only "install ok installed"; deinstalled, not-installed and half-configured are left out,
    # and a continuation line that looks like a field does not count.
    assert facts.applications(fake_root.path) == ["bash 5.2.15-2+b2", "python3 3.11.2-1+b1"]


def test_applications_without_trailing_blank_line(tmp_path: Path):
    FakeRoot(tmp_path).write(
        "var/lib/dpkg/status", "Package: a\nStatus: install ok installed\nVersion: 1"
    )
    assert facts.applications(tmp_path) == ["a 1"]


def _fake_rpm(bin_dir: Path, output: str) -> None:
    bin_dir.mkdir()
    script = bin_dir / "rpm"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_applications_from_rpm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _fake_rpm(tmp_path / "bin", "zsh 5.9-1.fc39\\nbash 5.2-1.fc39\\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert facts.applications(tmp_path / "root") == ["bash 5.2-1.fc39", "zsh 5.9-1.fc39"]


def test_applications_when_rpm_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rpm").write_text("#!/bin/sh\nexit 3\n")
    (bin_dir / "rpm").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert facts.applications(tmp_path / "root") == []


def test_applications_without_any_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert facts.applications(tmp_path) == []


def test_applications_are_capped(tmp_path: Path):
    stanzas = "".join(
        f"Package: pkg{i:05}\nStatus: install ok installed\nVersion: {'1' * 300}\n\n"
        for i in range(facts.MAX_APPLICATIONS + 10)
    )
    FakeRoot(tmp_path).write("var/lib/dpkg/status", stanzas)
    apps = facts.applications(tmp_path)
    assert 0 < len(apps) <= facts.MAX_APPLICATIONS
    assert all(len(a) <= facts.MAX_APPLICATION_TEXT for a in apps)
    assert sum(len(a) for a in apps) <= facts.APPLICATIONS_BUDGET
    assert apps == sorted(apps)


def test_cap_entries_sorts_dedupes_and_counts():
    entries = [f"p{i:05} 1" for i in range(facts.MAX_APPLICATIONS + 5)] * 2
    capped = facts.cap_entries(list(reversed(entries)))
    assert capped == sorted(set(entries))[: facts.MAX_APPLICATIONS]


def test_package_db_stamp_follows_the_dpkg_status(fake_root: FakeRoot, tmp_path: Path):
    first = facts.package_db_stamp(fake_root.path)
    assert first is not None and first[0] == facts.DPKG_STATUS
    fake_root.write("var/lib/dpkg/status", DPKG_STATUS + "\nPackage: new\n")
    assert facts.package_db_stamp(fake_root.path) != first
    assert facts.package_db_stamp(tmp_path / "empty") is None


def test_package_db_stamp_finds_rpm(tmp_path: Path):
    FakeRoot(tmp_path).write("var/lib/rpm/rpmdb.sqlite", "db")
    stamp = facts.package_db_stamp(tmp_path)
    assert stamp is not None and stamp[0] == "var/lib/rpm/rpmdb.sqlite"


def test_memory_total(fake_root: FakeRoot, tmp_path: Path):
    assert facts.memory_total_kib(fake_root.path) == 250000
    assert facts.memory_total_kib(tmp_path) == 0
    assert facts.meminfo(fake_root.path)["Buffers"] == 1000


def test_applications_filtered_by_name_patterns(fake_root: FakeRoot):
    assert facts.applications(fake_root.path, ["bash"]) == ["bash 5.2.15-2+b2"]
    assert facts.applications(fake_root.path, ["py*", "zsh"]) == ["python3 3.11.2-1+b1"]
    assert facts.applications(fake_root.path, ["BASH"]) == []  # names match case-sensitively
    assert facts.applications(fake_root.path, ["nothing-*"]) == []


def test_matching_looks_at_the_name_only():
    entries = ["linux-image-6.1.0-13-amd64 6.1.55-1", "bash 5.2", "cloud-init 22.4"]
    assert facts.matching(entries, ["linux-image-*", "cloud-init"]) == [entries[0], entries[2]]
    assert facts.matching(entries, ["*5.2*"]) == []
