"""The defaults of every optional create and verb parameter: the one place they are filled in.

TABLE is what hostd/README.md shows (a test keeps the two equal). Validation
runs before defaults are filled, so it accepts the unset value of each field
listed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from hostd.model import ConsoleKind, DiskFormat, Persistence, VmConfig

VCPUS = 1
PERSISTENCE = Persistence.TRANSIENT
CONSOLE = ConsoleKind.SERIAL_FILE
DISK_FORMAT = DiskFormat.RAW
SHUTDOWN_TIMEOUT_SECONDS = 60
REBOOT_TIMEOUT_SECONDS = 60
MAC_PREFIX = "52:54:00"
"""QEMU's locally administered prefix."""


@dataclass(frozen=True)
class Default:
    field: str
    value: str
    why: str


TABLE: tuple[Default, ...] = (
    Default("config.spec.vcpus", str(VCPUS), "the smallest VM"),
    Default("config.spec.nics[i].name", "nic<i>", "names follow the order of the NICs"),
    Default(
        "config.spec.nics[i].mac_address",
        f"{MAC_PREFIX}:xx:xx:xx, from the VM id and i",
        "the same on every start, restore and host",
    ),
    Default(
        "config.spec.disks[i].format",
        DISK_FORMAT.api_name,
        "an image is used as it is, never probed: a guest could forge a header",
    ),
    Default(
        "config.persistence",
        PERSISTENCE.api_name,
        "libvirt keeps nothing once the VM is down",
    ),
    Default(
        "config.console.kind",
        CONSOLE.api_name,
        "a boot log to read, no display to secure",
    ),
    Default("CreateVm start_paused", "false", "VMs are started to run"),
    Default(
        "ShutdownVm timeout_seconds",
        str(SHUTDOWN_TIMEOUT_SECONDS),
        "then the domain is destroyed",
    ),
    Default(
        "RebootVm timeout_seconds",
        str(REBOOT_TIMEOUT_SECONDS),
        "then the domain is reset",
    ),
)


def with_defaults(config: VmConfig) -> VmConfig:
    """A copy of a validated config with every optional field filled in."""
    spec = config.spec
    nics = tuple(
        replace(
            nic,
            name=nic.name or f"nic{index}",
            mac_address=nic.mac_address.lower() or mac_address(config.vm_id, index),
        )
        for index, nic in enumerate(spec.nics)
    )
    disks = tuple(replace(disk, format=disk.format or DISK_FORMAT) for disk in spec.disks)
    return replace(
        config,
        spec=replace(spec, vcpus=spec.vcpus or VCPUS, nics=nics, disks=disks),
        persistence=config.persistence or PERSISTENCE,
        console=config.console or CONSOLE,
    )


def mac_address(vm_id: str, index: int) -> str:
    """A stable MAC address for a VM's NIC: the same wherever and whenever it starts."""
    digest = hashlib.sha256(f"{vm_id}/{index}".encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in digest[:3])])


def shutdown_timeout(seconds: int) -> float:
    return float(seconds or SHUTDOWN_TIMEOUT_SECONDS)


def reboot_timeout(seconds: int) -> float:
    return float(seconds or REBOOT_TIMEOUT_SECONDS)
