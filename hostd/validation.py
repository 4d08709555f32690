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
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hostd.config import DEFAULT_IMAGE_ROOTS, HostdConfig
from hostd.model import BootSource, Disk, Nic, NicKind, VmConfig
from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import MAX_AGENT_VERSION, MAX_CMDLINE, MAX_NICS, MAX_PATH, NAME
from virtplane_common.properties import NONE_ALLOWED, AllowedProperties, check_properties
from virtplane_common.spec_checks import check_disk_count, check_mac, check_memory, check_vcpus

_NETWORK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_DISK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
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
    if not NAME.fullmatch(config.name):
        raise InvalidArgument(
            "config.name",
            "must be 1-63 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (got {config.name!r})",
        )
    spec = config.spec
    check_vcpus("config.spec.vcpus", spec.vcpus)  # 0: the default
    check_memory("config.spec.memory_mib", spec.memory_mib)
    _boot(spec.boot, admits.image_roots)
    if len(spec.nics) > MAX_NICS:
        raise InvalidArgument("config.spec.nics", f"at most {MAX_NICS} NICs (got {len(spec.nics)})")
    for index, nic in enumerate(spec.nics):
        _nic(f"config.spec.nics[{index}]", nic)
    _disks(spec.disks, admits.image_roots)
    check_properties("config.custom_properties", config.custom_properties, admits.properties)
    agent = config.guest_agent_version
    if len(agent) > MAX_AGENT_VERSION or not agent.isprintable():
        raise InvalidArgument(
            "config.guest_agent_version",
            f"must be at most {MAX_AGENT_VERSION} printable characters",
        )


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
    if len(boot.cmdline) > MAX_CMDLINE:
        raise InvalidArgument("config.spec.boot.cmdline", f"longer than {MAX_CMDLINE} characters")
    if not boot.cmdline.isprintable():
        raise InvalidArgument("config.spec.boot.cmdline", "contains control characters")


def _image_file(field: str, path: str, roots: Sequence[Path], *, required: bool) -> str:
    """The file path names, resolved; raises InvalidArgument unless it is a
    regular file under one of roots (NOT_AN_IMAGE, whatever the reason)."""
    if not path:
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if len(path) > MAX_PATH or not path.isprintable():
        raise InvalidArgument(field, "is not a usable path")
    if not Path(path).is_absolute():
        raise InvalidArgument(field, f"must be an absolute path (got {path!r})")
    resolved = Path(os.path.realpath(path))
    if (
        ".." in PurePosixPath(path).parts
        or not any(root in resolved.parents for root in roots)
        or not resolved.is_file()
    ):
        raise InvalidArgument(field, NOT_AN_IMAGE)
    return str(resolved)


def _nic(field: str, nic: Nic) -> None:
    if nic.name and not _NIC_NAME.fullmatch(nic.name):
        raise InvalidArgument(
            f"{field}.name", f"must be 1-32 letters, digits, '.', '_' or '-' (got {nic.name!r})"
        )
    if nic.kind == NicKind.NETWORK:
        if not _NETWORK.fullmatch(nic.network):
            raise InvalidArgument(
                f"{field}.network", f"must name a libvirt network (got {nic.network!r})"
            )
    elif nic.kind != NicKind.USER:
        raise InvalidArgument(f"{field}.kind", "must be KIND_USER or KIND_NETWORK")
    if nic.mac_address:
        mac = check_mac(f"{field}.mac_address", nic.mac_address)
        if int(mac[:2], 16) & 1:
            raise InvalidArgument(f"{field}.mac_address", "must be a unicast address")


def _disks(disks: Sequence[Disk], roots: Sequence[Path]) -> None:
    check_disk_count("config.spec.disks", len(disks))
    names: dict[str, int] = {}
    paths: dict[str, int] = {}
    for index, disk in enumerate(disks):
        field = f"config.spec.disks[{index}]"
        if not disk.name:
            raise InvalidArgument(f"{field}.name", "is required")
        if not _DISK_NAME.fullmatch(disk.name):
            raise InvalidArgument(
                f"{field}.name",
                f"must be 1-63 letters, digits, '.', '_' or '-' (got {disk.name!r})",
            )
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
