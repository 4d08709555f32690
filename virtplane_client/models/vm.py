"""A VM as the client sees it: what is asked (VmSpec) apart from what is
observed (VmStatus), the changes UpdateVm takes (VmUpdate), what a verb
returns (VerbResult) and what a watch streams (VmChange)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from virtplane_client.models.enums import (
    ChangeKind,
    DiskFormat,
    ExitReason,
    NicKind,
    Origin,
    VmState,
)
from virtplane_client.models.guest import GuestInfo
from virtplane_client.models.operation import Operation


@dataclass(frozen=True)
class BootSource:
    """A kernel, initrd and command line on the host, booted directly."""

    kernel_path: str = ""
    initrd_path: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class Nic:
    """A network interface: user-mode networking, or a libvirt network."""

    name: str
    kind: NicKind = NicKind.USER
    network: str = ""
    mac_address: str = ""  # the controller chooses one when empty


@dataclass(frozen=True)
class Disk:
    """A disk backed by an image file on the host."""

    path: str
    name: str = ""
    format: DiskFormat = DiskFormat.UNSPECIFIED
    read_only: bool = False


@dataclass(frozen=True)
class VmSpec:
    """What the user asks for."""

    vcpus: int
    memory_mib: int
    boot: BootSource
    nics: tuple[Nic, ...] = ()
    disks: tuple[Disk, ...] = ()
    highly_available: bool = False
    pinned_host: str = ""
    start_paused: bool = False
    custom_properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StartTry:
    """One host a start tried, and why the VM did not start there."""

    host_id: str
    host_name: str
    error: str


@dataclass(frozen=True)
class VmStatus:
    """What is observed about a VM."""

    state: VmState
    host_id: str = ""
    exit_reason: ExitReason = ExitReason.UNSPECIFIED
    message: str = ""
    guest: GuestInfo | None = None  # None until the guest agent reported
    revision: int = 0
    state_changed_time: dt.datetime | None = None
    pending_restart: tuple[str, ...] = ()
    origin: Origin = Origin.UNSPECIFIED
    start_tries: tuple[StartTry, ...] = ()
    ha_restart_time: dt.datetime | None = None
    ha_restart_count: int = 0


@dataclass(frozen=True)
class Vm:
    """A virtual machine as the controller knows it."""

    id: str
    name: str
    spec: VmSpec
    status: VmStatus
    cluster_id: str = ""
    spec_version: int = 0
    next_run_spec: VmSpec | None = None  # set while changes wait for the next start


@dataclass(frozen=True)
class VmUpdate:
    """The changes UpdateVm makes: every field left None stays as it is.

    What needs a restart (the spec, but highly_available, pinned_host and
    start_paused) waits for the VM's next start when it runs; a name applies
    at once."""

    name: str | None = None
    vcpus: int | None = None
    memory_mib: int | None = None
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    highly_available: bool | None = None
    pinned_host: str | None = None
    start_paused: bool | None = None
    nics: tuple[Nic, ...] | None = None
    disks: tuple[Disk, ...] | None = None
    custom_properties: Mapping[str, str] | None = None


@dataclass(frozen=True)
class VerbResult:
    """What a VM verb returns: the VM as the verb left it, and the operation
    that follows the verb to its end (await it with operations.result)."""

    vm: Vm
    operation: Operation


@dataclass(frozen=True)
class VmChange:
    """One message of a watch: a VM of the snapshot, a change or a deletion
    (vm is its new or last state), or SNAPSHOT_COMPLETE (vm is None), after
    which changes follow. resumed and reason are SNAPSHOT_COMPLETE's: whether
    what came before it are the changes since a revision (True) or a fresh
    snapshot, and why a resume got a snapshot."""

    kind: ChangeKind
    vm: Vm | None
    revision: int
    resumed: bool = False
    reason: str = ""
