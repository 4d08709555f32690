"""Checks a VmConfig before hostd accepts it; each failure names the field at fault.

Runs before defaults are filled in (hostd.defaults): an optional field may be
unset, and is checked only when it is set. An enum value the API does not
define never gets this far: hostd.convert refuses it, naming its field.

What hostd accepts is its own configuration's to say (Admission), whoever
asks, the controller included:

- kernel, initrd and disk paths only for regular files under the image roots
  (HostdConfig.image_roots), symlinks followed, and with no `..` in the path
  as given. A path outside the roots, a symlink escaping them, a `..` and a
  missing file all get one and the same message, so that the answer never
  tells whether a file exists;
- custom properties only with keys and values its allowlist allows
  (HostdConfig.vm_properties; virtplane_common.properties).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hostd.config import DEFAULT_IMAGE_ROOTS, HostdConfig
from hostd.model import BootSource, Disk, Nic, NicKind, VmConfig
from virtplane_common.errors import InvalidArgument
from virtplane_common.properties import NONE_ALLOWED, AllowedProperties, check_properties
from virtplane_common.validation import (
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
    check_unique_macs,
    check_vcpus,
)

NOT_AN_IMAGE = "is not an image file under hostd's image roots"
"""The one answer for a path outside the roots, escaping them, or missing."""


@dataclass(frozen=True)
class Admission:
    """What this host accepts in a VM's configuration, from its own settings."""

    image_roots: tuple[Path, ...] = DEFAULT_IMAGE_ROOTS
    """Resolved (symlinks followed) once, when the Admission is made."""
    properties: AllowedProperties = NONE_ALLOWED

    def __post_init__(self) -> None:
        resolved = tuple(Path(os.path.realpath(root)) for root in self.image_roots)
        object.__setattr__(self, "image_roots", resolved)

    @classmethod
    def of(cls, config: HostdConfig) -> Admission:
        """From hostd's settings; raises BadPropertyRule for a bad allowlist entry."""
        return cls(config.image_roots, AllowedProperties.compile(config.vm_properties))


def validate_config(config: VmConfig, admits: Admission) -> None:
    """Raises InvalidArgument for the first field of config that is missing or wrong."""
    validate_vm_id(config.vm_id)
    check_name("config.name", config.name)
    spec = config.spec
    check_vcpus("config.spec.vcpus", spec.vcpus)  # 0: the default
    check_memory("config.spec.memory_mib", spec.memory_mib)
    _boot(spec.boot, admits.image_roots)
    check_nic_count("config.spec.nics", len(spec.nics))
    for index, nic in enumerate(spec.nics):
        _nic(f"config.spec.nics[{index}]", nic)
    check_unique_macs("config.spec.nics", (nic.mac_address.lower() for nic in spec.nics))
    _disks(spec.disks, admits.image_roots)
    check_properties("config.custom_properties", config.custom_properties, admits.properties)
    # config.guest_agent_version is the guest's own word, echoed back: never
    # checked here, cleaned where it is read (hostd.convert).


def validate_vm_id(vm_id: str) -> None:
    """A VM id must be a UUID in canonical form: it names files and domains."""
    if not vm_id:
        raise InvalidArgument("config.vm_id", "is required")
    try:
        canonical = str(uuid.UUID(vm_id))
    except ValueError:
        canonical = ""
    if canonical != vm_id:
        raise InvalidArgument(
            "config.vm_id", f"must be a UUID in lowercase canonical form (got {vm_id!r})"
        )


def _boot(boot: BootSource, roots: Sequence[Path]) -> None:
    _image_file("config.spec.boot.kernel_path", boot.kernel_path, roots, required=True)
    _image_file("config.spec.boot.initrd_path", boot.initrd_path, roots, required=False)
    check_cmdline("config.spec.boot.cmdline", boot.cmdline)


def _image_file(field: str, path: str, roots: Sequence[Path], *, required: bool) -> str:
    """The file path names, resolved; raises InvalidArgument unless it is a
    regular file under one of roots (NOT_AN_IMAGE, whatever the reason)."""
    if not check_path(field, path, required=required):
        return ""
    resolved = Path(os.path.realpath(path))
    if (
        ".." in PurePosixPath(path).parts
        or not any(root in resolved.parents for root in roots)
        or not resolved.is_file()
    ):
        raise InvalidArgument(field, NOT_AN_IMAGE)
    return str(resolved)


def _nic(field: str, nic: Nic) -> None:
    if nic.name:
        check_nic_name(f"{field}.name", nic.name)
    if nic.kind == NicKind.NETWORK or nic.network:
        check_network(f"{field}.network", nic.network)
    if nic.kind not in (NicKind.NETWORK, NicKind.USER):
        raise InvalidArgument(f"{field}.kind", "must be KIND_USER or KIND_NETWORK")
    if nic.mac_address:
        check_mac(f"{field}.mac_address", nic.mac_address)


def _disks(disks: Sequence[Disk], roots: Sequence[Path]) -> None:
    check_disk_count("config.spec.disks", len(disks))
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for index, disk in enumerate(disks):
        field = f"config.spec.disks[{index}]"
        check_disk_name(f"{field}.name", disk.name)
        if disk.name in names:
            raise InvalidArgument(
                f"{field}.name", f"{disk.name!r} is also the name of disks[{names[disk.name]}]"
            )
        names[disk.name] = index
        resolved = _image_file(f"{field}.path", disk.path, roots, required=True)
        # One image under two disks: QEMU's image locking refuses the second
        # writer, and two caches of one file would corrupt it anyway.
        same = paths.get(resolved)
        if same is not None:
            raise InvalidArgument(f"{field}.path", f"{disk.path} is already disks[{same}]")
        paths[resolved] = index
