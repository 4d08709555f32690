"""virtplane_common.validation: the checks the controller and hostd share."""

from __future__ import annotations

import pytest
from sqlalchemy import String

from db import models
from virtplane_common import limits
from virtplane_common.errors import InvalidArgument
from virtplane_common.validation import (
    check_address,
    check_cmdline,
    check_mac,
    check_name,
    check_network,
    check_path,
    check_unique_macs,
    clean_agent_version,
)


@pytest.mark.parametrize(
    "name", ["web\n", "web\x00", "we b", "-web", "", "a" * 64, "wéb", "web\r", "web/1"]
)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_name("name", name)
    assert caught.value.field == "name"


@pytest.mark.parametrize("name", ["web", "a" * 63, "db-1.example_2", "0"])
def test_good_names_pass(name: str) -> None:
    assert check_name("name", name) == name


@pytest.mark.parametrize(
    "mac", ["52:54:00:00:00:01\n", "52:54:00:00:00", "01:00:5e:00:00:01", "52-54-00-00-00-01"]
)
def test_bad_macs_are_refused(mac: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^nic\.mac_address: "):
        check_mac("nic.mac_address", mac)


def test_a_mac_comes_back_in_lower_case() -> None:
    assert check_mac("mac", "52:54:00:AB:CD:EF") == "52:54:00:ab:cd:ef"


def test_one_mac_on_two_nics_names_the_second() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_unique_macs("spec.nics", ["52:54:00:00:00:01", "", "52:54:00:00:00:01"])
    assert caught.value.field == "spec.nics[2].mac_address"
    assert "spec.nics[0]" in str(caught.value)
    check_unique_macs("spec.nics", ["", "", "52:54:00:00:00:01"])  # unset ones never clash


@pytest.mark.parametrize("network", ["default\n", "n" * 65, "a b", "", "net\x00"])
def test_bad_network_names_are_refused(network: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^n\.network: "):
        check_network("n.network", network)


@pytest.mark.parametrize("cmdline", ["quiet\x00", "quiet\n", "x" * (limits.MAX_CMDLINE + 1)])
def test_bad_cmdlines_are_refused(cmdline: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^boot\.cmdline: "):
        check_cmdline("boot.cmdline", cmdline)


@pytest.mark.parametrize("path", ["/boot/vm\x00linux", "/boot/\n", "boot/vmlinux", "/" * 4097])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^boot\.kernel_path: "):
        check_path("boot.kernel_path", path, required=True)


def test_an_optional_path_may_be_unset() -> None:
    assert check_path("boot.initrd_path", "", required=False) == ""
    with pytest.raises(InvalidArgument, match="is required"):
        check_path("boot.kernel_path", "", required=True)


@pytest.mark.parametrize(
    "address", ["h1:7070", "10.0.0.1:1", "[::1]:7070", "host-1.example.com:65535"]
)
def test_good_addresses_pass(address: str) -> None:
    assert check_address("address", address) == address


@pytest.mark.parametrize(
    "address",
    [
        "h1:7070\n",
        "h1\x00:7070",
        "h1",
        ":7070",
        "h1:0",
        "h1:65536",
        "h1:٣٣",  # digits, but not ASCII ones
        "h 1:7070",
        "a" * 250 + ".com:7070",  # longer than its column
        "",
    ],
)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^address: "):
        check_address("address", address)


@pytest.mark.parametrize(
    "sent", ["1" * 10_000, "1.0\n", "\x001.0\x1b", "\u00a01.0\u2028", "\U0001f600" * 300]
)
def test_an_agent_version_is_cleaned_to_fit_its_column(sent: str) -> None:
    kept = clean_agent_version(sent)
    assert kept.isprintable() and len(kept) <= limits.AGENT_VERSION_COLUMN
    assert clean_agent_version(kept) == kept  # one rule: what it keeps, it keeps


def test_the_limits_fit_the_columns_they_are_stored_in() -> None:
    columns = {
        (models.Vm, "name"): limits.MAX_NAME,
        (models.Host, "name"): limits.MAX_NAME,
        (models.Host, "address"): limits.MAX_ADDRESS,
        (models.Nic, "name"): limits.MAX_NIC_NAME,
        (models.Nic, "network"): limits.MAX_NETWORK,
        (models.Nic, "mac_address"): 17,
        (models.Disk, "name"): limits.MAX_DISK_NAME,
        (models.Vm, "guest_agent_version"): limits.MAX_AGENT_VERSION,
    }
    for (model, column), longest in columns.items():
        kind = model.__table__.c[column].type
        assert isinstance(kind, String) and kind.length is not None
        assert longest <= kind.length, f"{model.__name__}.{column}"
