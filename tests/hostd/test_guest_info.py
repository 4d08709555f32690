from __future__ import annotations

import math

import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd import guest_info
from hostd.config import ChannelLimits

LIMITS = ChannelLimits(max_string=16, max_interfaces=2, max_addresses=2, max_applications=3)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("debian", "debian"),
        ("  padded\t", "padded"),
        ("bell\x07and\x1b[31mesc", "belland[31mesc"),
        ("nul\x00byte", "nulbyte"),
        ("bidi\u202eevil", "bidievil"),
        ("line\u2028sep", "linesep"),
        ("x" * 100, "x" * 16),
        ("zero\u200bwidth", "zerowidth"),
        ("ünïcödé ok", "ünïcödé ok"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert guest_info.clean_text(raw, 16) == clean


@pytest.mark.parametrize(
    ("value", "expected"),
    [(12.5, 12.5), (0.0, 0.0), (-1.0, None), (math.inf, None), (math.nan, None), (1e12, None)],
)
def test_clean_seconds(value: float, expected: float | None) -> None:
    assert guest_info.clean_seconds(value) == expected


@pytest.mark.parametrize(
    ("value", "version", "expected"),
    [
        ("10.0.2.15", 4, "10.0.2.15"),
        ("10.0.2.15/24", 4, "10.0.2.15/24"),
        (" 10.0.2.15 ", 4, "10.0.2.15"),
        ("fe80::1", 6, "fe80::1"),
        ("FE80:0::1/64", 6, "fe80::1/64"),
        ("10.0.2.15", 6, None),
        ("fe80::1", 4, None),
        ("999.1.1.1", 4, None),
        ("<script>", 4, None),
    ],
)
def test_clean_address(value: str, version: int, expected: str | None) -> None:
    assert guest_info.clean_address(value, version) == expected


def test_clean_mac() -> None:
    assert guest_info.clean_mac("52:54:00:AB:CD:EF") == "52:54:00:ab:cd:ef"
    assert guest_info.clean_mac("not a mac") == ""


def test_observed_time_trusts_a_sane_guest_clock_only() -> None:
    now = 1_700_000_000 * 10**9
    assert guest_info.observed_nanos(now - 10**9, now, 300) == now - 10**9
    assert guest_info.observed_nanos(now + 3600 * 10**9, now, 300) == now
    assert guest_info.observed_nanos(0, now, 300) == now
    assert guest_info.observed_nanos(-5, now, 300) == now


def _full() -> gc.GuestReport:
    return gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname="guest", uptime_seconds=5.0),
        os=gc.OsSection(name="Debian GNU/Linux", version="12", kernel_release="6.1.0"),
        network=gc.NetworkSection(
            interfaces=[
                gc.NetworkInterface(
                    name="eth0", mac_address="52:54:00:12:34:56", ipv4_addresses=["10.0.2.15/24"]
                )
            ]
        ),
        applications=gc.ApplicationsSection(applications=["python3 3.11", "busybox 1.35"]),
    )


def test_a_full_report_replaces_everything_but_the_agent_version() -> None:
    current = vm_pb2.GuestInfo(
        agent_version="1.0", os_name="Old", hostname="old", memory_free_kib=5000
    )
    merged = guest_info.merge_report(current, gc.GuestReport(full=True, os=_full().os), LIMITS)
    assert merged.agent_version == "1.0"
    assert merged.memory_free_kib == 5000  # the last heartbeat's: no report carries it
    assert merged.os_name == "Debian GNU/Linux"
    assert merged.hostname == ""


def test_a_partial_report_replaces_only_its_sections() -> None:
    current = guest_info.merge_report(vm_pb2.GuestInfo(), _full(), LIMITS)
    partial = gc.GuestReport(
        network=gc.NetworkSection(interfaces=[gc.NetworkInterface(name="eth1")])
    )
    merged = guest_info.merge_report(current, partial, LIMITS)
    assert [i.name for i in merged.interfaces] == ["eth1"]
    assert merged.os_name == "Debian GNU/Linux"
    assert merged.hostname == "guest"
    assert merged.application_count == 2


def test_lists_are_capped() -> None:
    report = gc.GuestReport(
        full=True,
        network=gc.NetworkSection(
            interfaces=[
                gc.NetworkInterface(
                    name=f"eth{i}", ipv4_addresses=[f"10.0.0.{j}" for j in range(9)]
                )
                for i in range(5)
            ]
        ),
        applications=gc.ApplicationsSection(applications=[f"app{i}" for i in range(10)]),
    )
    merged = guest_info.merge_report(vm_pb2.GuestInfo(), report, LIMITS)
    assert len(merged.interfaces) == 2
    assert list(merged.interfaces[0].ipv4_addresses) == ["10.0.0.0", "10.0.0.1"]
    assert list(merged.applications) == ["app0", "app1", "app2"]
    assert merged.application_count == 10
