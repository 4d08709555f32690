from __future__ import annotations

from pathlib import Path

import pytest

from guestd import tz
from tests.guestd.fakeroot import FakeRoot

PARIS_RULE = "CET-1CEST,M3.5.0,M10.5.0/3"


def tzif(rule: str | None, version: bytes = b"2") -> bytes:
    """A TZif file, enough for the footer: header, no transitions, then the rule."""
    body = b"TZif" + version + bytes(15) + bytes(24)
    return body + (f"\n{rule}\n".encode() if rule is not None else b"")


@pytest.fixture
def root(tmp_path: Path) -> FakeRoot:
    return FakeRoot(tmp_path)


def test_localtime_symlink(root: FakeRoot):
    (root.path / "etc").mkdir()
    (root.path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    root.write("etc/timezone", "Asia/Tokyo\n")  # stale: timedatectl changes only the link
    assert tz.timezone(root.path) == "Europe/Paris"


def test_relative_and_chained_links(root: FakeRoot):
    root.write_bytes("usr/share/zoneinfo/America/New_York", tzif("EST5EDT,M3.2.0,M11.1.0"))
    (root.path / "etc").mkdir()
    (root.path / "etc/tz-link").symlink_to("../usr/share/zoneinfo/America/New_York")
    (root.path / "etc/localtime").symlink_to("tz-link")
    assert tz.timezone(root.path) == "America/New_York"


@pytest.mark.parametrize(
    ("target", "name"),
    [
        ("/usr/share/zoneinfo/Etc/UTC", "UTC"),
        ("/usr/share/zoneinfo/posix/Asia/Kolkata", "Asia/Kolkata"),
        ("/usr/share/zoneinfo/right/Zulu", "UTC"),
        ("/var/db/timezone/zoneinfo/Africa/Abidjan", "Africa/Abidjan"),
    ],
)
def test_link_names(root: FakeRoot, target: str, name: str):
    (root.path / "etc").mkdir()
    (root.path / "etc/localtime").symlink_to(target)
    assert tz.timezone(root.path) == name


def test_etc_timezone_when_localtime_is_a_copy(root: FakeRoot):
    root.write_bytes("etc/localtime", tzif(PARIS_RULE))
    root.write("etc/timezone", "Europe/Paris\n")
    assert tz.timezone(root.path) == "Europe/Paris"


def test_copied_localtime_gives_its_rule(root: FakeRoot):
    root.write_bytes("etc/localtime", tzif(PARIS_RULE))
    assert tz.timezone(root.path) == PARIS_RULE


@pytest.mark.parametrize("rule", ["UTC0", "GMT0", "<UTC>0"])
def test_copied_utc_is_utc(root: FakeRoot, rule: str):
    root.write_bytes("etc/localtime", tzif(rule))
    assert tz.timezone(root.path) == "UTC"


@pytest.mark.parametrize("data", [tzif(None, b"\0"), tzif(PARIS_RULE, b"\0"), b"not tzif\n"])
def test_unknown_zone_is_empty_not_utc(root: FakeRoot, data: bytes):
    root.write_bytes("etc/localtime", data)
    assert tz.timezone(root.path) == ""


def test_no_localtime_is_utc(root: FakeRoot):
    assert tz.timezone(root.path) == "UTC"


def test_real_zone_file_if_present(root: FakeRoot):
    paris = Path("/usr/share/zoneinfo/Europe/Paris")
    if not paris.is_file():
        pytest.skip("no tzdata on this machine")
    root.write_bytes("etc/localtime", paris.read_bytes())
    assert tz.timezone(root.path) == PARIS_RULE


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("", "UTC"),
        ("UTC0", "UTC"),
        ("Asia/Tokyo", "Asia/Tokyo"),  # a file in the fake zoneinfo
        (":Asia/Tokyo", "Asia/Tokyo"),
        (":/usr/share/zoneinfo/Europe/Berlin", "Europe/Berlin"),
        ("/somewhere/else", ""),
        (PARIS_RULE, PARIS_RULE),
        ("Etc/UTC", "UTC"),
    ],
)
def test_tz_variable(root: FakeRoot, value: str, name: str):
    root.write_bytes("usr/share/zoneinfo/Asia/Tokyo", tzif("JST-9"))
    root.write_bytes("usr/share/zoneinfo/Etc/UTC", tzif("UTC0"))
    (root.path / "etc").mkdir()
    (root.path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert tz.timezone(root.path, {"TZ": value}) == name


def test_tz_pointing_at_localtime_follows_it(root: FakeRoot):
    (root.path / "etc").mkdir()
    (root.path / "etc/localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert tz.timezone(root.path, {"TZ": ":/etc/localtime"}) == "Europe/Paris"
    assert tz.timezone(root.path, {}) == "Europe/Paris"


def test_real_root_does_not_fail():
    assert isinstance(tz.timezone(Path("/")), str)
