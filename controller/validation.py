"""Checking what clients send, before anything is stored or called."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from virtplane.v1 import vm_pb2, vm_service_pb2

from db.enums import DiskFormat, NicKind, VmState
from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import MIN_MEMORY_MIB, NAME_COLUMN
from virtplane_common.properties import AllowedProperties, check_properties
from virtplane_common.validation import (
    check_address,
    check_cmdline,
    check_disk_count,
    check_disk_name,
    check_mac,
    check_memory,
    check_name,
    check_network,
    check_nic_count,
    check_nic_name,
    check_path,
    check_printable,
    check_unique_macs,
    check_vcpus,
)

__all__ = ["check_address", "check_create", "check_list", "check_name", "check_spec"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN = 16384


@dataclass(frozen=True)
class NicSpec:
    name: str
    kind: NicKind
    network: str
    mac_address: str  # empty: the controller picks one


@dataclass(frozen=True)
class DiskSpec:
    name: str
    path: str
    format: DiskFormat
    read_only: bool


@dataclass(frozen=True)
class VmSpec:
    """A validated VM spec."""

    name: str
    vcpus: int
    memory_mib: int
    kernel_path: str
    initrd_path: str
    cmdline: str
    nics: tuple[NicSpec, ...]
    disks: tuple[DiskSpec, ...] = ()
    highly_available: bool = False
    start_paused: bool = False
    custom_properties: tuple[tuple[str, str], ...] = ()
    pinned_host: str = ""  # a host's id or name; empty: any


_NIC_KINDS = {vm_pb2.Nic.KIND_USER: NicKind.USER, vm_pb2.Nic.KIND_NETWORK: NicKind.NETWORK}


def _check_nic(prefix: str, index: int, nic: vm_pb2.Nic) -> NicSpec:
    field = f"{prefix}.nics[{index}]"
    kind = _NIC_KINDS.get(nic.kind)
    if kind is None:
        raise InvalidArgument(f"{field}.kind", "must be KIND_USER or KIND_NETWORK")
    network = ""
    if kind is NicKind.NETWORK or nic.network:
        network = check_network(f"{field}.network", nic.network)
    mac = check_mac(f"{field}.mac_address", nic.mac_address) if nic.mac_address else ""
    name = check_nic_name(f"{field}.name", nic.name or f"nic{index}")
    return NicSpec(name=name, kind=kind, network=network, mac_address=mac)


_DISK_FORMATS = {
    vm_pb2.Disk.FORMAT_UNSPECIFIED: DiskFormat.RAW,
    vm_pb2.Disk.FORMAT_RAW: DiskFormat.RAW,
    vm_pb2.Disk.FORMAT_QCOW2: DiskFormat.QCOW2,
}


def _check_disk(prefix: str, index: int, disk: vm_pb2.Disk) -> DiskSpec:
    field = f"{prefix}.disks[{index}]"
    fmt = _DISK_FORMATS.get(disk.format)
    if fmt is None:
        raise InvalidArgument(f"{field}.format", "must be FORMAT_RAW or FORMAT_QCOW2")
    return DiskSpec(
        name=check_disk_name(f"{field}.name", disk.name or f"disk{index}"),
        path=check_path(f"{field}.path", disk.path, required=True),
        format=fmt,
        read_only=disk.read_only,
    )


def check_spec(name: str, spec: vm_pb2.VmSpec, prefix: str = "spec") -> VmSpec:
    """Validates a VM spec; raises InvalidArgument naming the field under prefix.

    Its custom properties are checked apart, against the allowlist, where a
    client sends them (check_create, check_update_properties)."""
    if spec.vcpus == 0:
        raise InvalidArgument(f"{prefix}.vcpus", "is required (at least 1)")
    check_vcpus(f"{prefix}.vcpus", spec.vcpus)
    if spec.memory_mib == 0:
        raise InvalidArgument(f"{prefix}.memory_mib", f"is required (at least {MIN_MEMORY_MIB})")
    check_memory(f"{prefix}.memory_mib", spec.memory_mib)
    check_nic_count(f"{prefix}.nics", len(spec.nics))
    nics = tuple(_check_nic(prefix, i, nic) for i, nic in enumerate(spec.nics))
    if len({n.name for n in nics}) != len(nics):
        raise InvalidArgument(f"{prefix}.nics", "NIC names must be unique")
    check_unique_macs(f"{prefix}.nics", (n.mac_address for n in nics))
    check_disk_count(f"{prefix}.disks", len(spec.disks))
    disks = tuple(_check_disk(prefix, i, disk) for i, disk in enumerate(spec.disks))
    if len({d.name for d in disks}) != len(disks):
        raise InvalidArgument(f"{prefix}.disks", "disk names must be unique")
    boot = f"{prefix}.boot"
    return VmSpec(
        name=name,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        kernel_path=check_path(f"{boot}.kernel_path", spec.boot.kernel_path, required=True),
        initrd_path=check_path(f"{boot}.initrd_path", spec.boot.initrd_path, required=False),
        cmdline=check_cmdline(f"{boot}.cmdline", spec.boot.cmdline),
        nics=nics,
        disks=disks,
        highly_available=spec.highly_available,
        start_paused=spec.start_paused,
        pinned_host=check_printable(f"{prefix}.pinned_host", spec.pinned_host, NAME_COLUMN),
        custom_properties=tuple(sorted(spec.custom_properties.items())),
    )


def check_create(request: vm_service_pb2.CreateVmRequest, allowed: AllowedProperties) -> VmSpec:
    """Validates a CreateVm request; raises InvalidArgument naming the field."""
    name = check_name("name", request.name)
    if not request.HasField("spec"):
        raise InvalidArgument("spec", "is required")
    spec = check_spec(name, request.spec)
    check_properties("spec.custom_properties", request.spec.custom_properties, allowed)
    return spec


def check_update_properties(
    values: vm_pb2.Vm, paths: Sequence[str], allowed: AllowedProperties
) -> None:
    """Checks the custom properties an UpdateVm sets (when its mask names them)."""
    if "spec" in paths or "spec.custom_properties" in paths:
        properties = values.spec.custom_properties
        check_properties("vm_update.spec.custom_properties", properties, allowed)


@dataclass(frozen=True)
class VmQuery:
    """A validated ListVms request: its filters and where the page starts."""

    states: frozenset[VmState]
    host: str
    name_contains: str
    page_size: int
    after_name: str  # the last name of the previous page; empty: from the start

    def filters(self) -> dict[str, object]:
        return {
            "states": sorted(s.value for s in self.states),
            "host": self.host,
            "name_contains": self.name_contains,
        }

    def next_page_token(self, last_name: str) -> str:
        """The token that asks for the VMs after last_name, with these filters."""
        raw = json.dumps({"after": last_name, "filters": self.filters()}, sort_keys=True)
        return base64.urlsafe_b64encode(raw.encode()).decode()


def check_list(request: vm_service_pb2.ListVmsRequest) -> VmQuery:
    """Validates a ListVms request; raises InvalidArgument naming the field."""
    states: set[VmState] = set()
    for i, state in enumerate(request.states):
        name = vm_pb2.Vm.State.Name(state) if state in vm_pb2.Vm.State.values() else ""
        if not name or state == vm_pb2.Vm.STATE_UNSPECIFIED:
            raise InvalidArgument(f"states[{i}]", f"is not a VM state: {state}")
        states.add(VmState(name.removeprefix("STATE_")))
    if request.page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    query = VmQuery(
        states=frozenset(states),
        host=check_printable("host", request.host, NAME_COLUMN),
        name_contains=check_printable("name_contains", request.name_contains, NAME_COLUMN),
        page_size=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        after_name="",
    )
    if not request.page_token:
        return query
    after, filters = _read_page_token(request.page_token)
    if filters != query.filters():
        raise InvalidArgument("page_token", "was given for other filters; ask with the same ones")
    return VmQuery(
        states=query.states,
        host=query.host,
        name_contains=query.name_contains,
        page_size=query.page_size,
        after_name=after,
    )


def _read_page_token(page_token: str) -> tuple[str, object]:
    """The last name and the filters a ListVms token carries; InvalidArgument
    for anything ListVms did not give (malformed, too deep, too long)."""
    bad = InvalidArgument("page_token", "is not a token ListVms gave")
    if len(page_token) > MAX_PAGE_TOKEN or not page_token.isascii():
        raise bad
    try:
        token = json.loads(base64.urlsafe_b64decode(page_token.encode()))
        after, filters = token["after"], token["filters"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(after, str) or len(after) > NAME_COLUMN or not after.isprintable():
        raise bad
    return after, filters
