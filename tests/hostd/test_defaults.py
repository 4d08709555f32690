"""Defaults: filled in one place, documented in one table."""

from __future__ import annotations

from pathlib import Path

from hostd import defaults
from hostd.model import ConsoleKind, Nic, Persistence, VmConfig, VmSpec

README = Path(defaults.__file__).parent / "README.md"


def _documented() -> list[tuple[str, str]]:
    rows = []
    text = README.read_text()
    table = text[text.index("| parameter | default | why |") :].split("\n\n")[0]
    for line in table.splitlines()[2:]:
        field, value, _why = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((field.strip("`"), value))
    return rows


def test_the_readme_table_is_the_code() -> None:
    assert _documented() == [(d.field, d.value) for d in defaults.TABLE]


def test_with_defaults_fills_every_optional_field_and_keeps_what_is_set() -> None:
    config = VmConfig(
        vm_id="6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13",
        spec=VmSpec(nics=(Nic(), Nic(name="uplink", mac_address="52:54:00:AB:CD:EF"))),
    )
    filled = defaults.with_defaults(config)
    assert filled.spec.vcpus == defaults.VCPUS
    assert filled.persistence == Persistence.TRANSIENT
    assert filled.console == ConsoleKind.SERIAL_FILE
    assert [(n.name, n.mac_address) for n in filled.spec.nics] == [
        ("nic0", defaults.mac_address(config.vm_id, 0)),
        ("uplink", "52:54:00:ab:cd:ef"),
    ]
    assert config.spec.vcpus == 0, "the caller's config is left alone"
    set_ = VmConfig(
        spec=VmSpec(vcpus=4), persistence=Persistence.PERSISTENT, console=ConsoleKind.NONE
    )
    assert defaults.with_defaults(set_) == set_


def test_mac_addresses_are_stable_and_distinct() -> None:
    vm_id = "6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13"
    first = defaults.mac_address(vm_id, 0)
    assert first == defaults.mac_address(vm_id, 0)
    assert first.startswith("52:54:00:") and len(first) == 17
    assert first != defaults.mac_address(vm_id, 1)


def test_timeouts() -> None:
    assert defaults.shutdown_timeout(0) == 60.0
    assert defaults.shutdown_timeout(5) == 5.0
    assert defaults.reboot_timeout(0) == 60.0
