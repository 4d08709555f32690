"""The defaults of every optional create and verb parameter: the one place they are filled in.

TABLE is what hostd/README.md shows (a test keeps the two equal). Validation
runs before defaults are filled, so it accepts the unset value of each field
listed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

VCPUS = 1
PERSISTENCE = pb.VmConfig.PERSISTENCE_TRANSIENT
CONSOLE = pb.Console.KIND_SERIAL_FILE
DISK_FORMAT = vm_pb2.Disk.FORMAT_RAW
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
        vm_pb2.Disk.Format.Name(DISK_FORMAT),
        "an image is used as it is, never probed: a guest could forge a header",
    ),
    Default(
        "config.persistence",
        pb.VmConfig.Persistence.Name(PERSISTENCE),
        "libvirt keeps nothing once the VM is down",
    ),
    Default(
        "config.console.kind",
        pb.Console.Kind.Name(CONSOLE),
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


def with_defaults(config: pb.VmConfig) -> pb.VmConfig:
    """A copy of a validated config with every optional field filled in."""
    filled = pb.VmConfig()
    filled.CopyFrom(config)
    if not filled.spec.vcpus:
        filled.spec.vcpus = VCPUS
    for index, nic in enumerate(filled.spec.nics):
        nic.name = nic.name or f"nic{index}"
        nic.mac_address = nic.mac_address.lower() or mac_address(filled.vm_id, index)
    for disk in filled.spec.disks:
        if disk.format == vm_pb2.Disk.FORMAT_UNSPECIFIED:
            disk.format = DISK_FORMAT
    if filled.persistence == pb.VmConfig.PERSISTENCE_UNSPECIFIED:
        filled.persistence = PERSISTENCE
    if filled.console.kind == pb.Console.KIND_UNSPECIFIED:
        filled.console.kind = CONSOLE
    return filled


def mac_address(vm_id: str, index: int) -> str:
    """A stable MAC address for a VM's NIC: the same wherever and whenever it starts."""
    digest = hashlib.sha256(f"{vm_id}/{index}".encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in digest[:3])])


def shutdown_timeout(seconds: int) -> float:
    return float(seconds or SHUTDOWN_TIMEOUT_SECONDS)


def reboot_timeout(seconds: int) -> float:
    return float(seconds or REBOOT_TIMEOUT_SECONDS)
