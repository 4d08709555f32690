"""hostd's domain types: what it keeps of a VM, as frozen dataclasses and enums.

The gRPC messages are the API's wire form; hostd.convert turns them into
these at the edges (the servicer, the peers, the domain's metadata and the
saved-state files) and back. Everything between (validation, defaults, the
builder, the registry, the verbs, recovery, migration) works on these.

The enums keep the API's numbers (each member is the proto value of the
same name without its prefix; a test checks that they agree), so a number
converts by lookup, and a number the API does not define is refused at the
edge. The guest agent's report (GuestInfo) stays the message the guest
channel merges: it is the guest's wire protocol, passed through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from hostd.hypervisor import JobProgress

if TYPE_CHECKING:
    from virtplane.v1.vm_pb2 import GuestInfo


class ApiEnum(IntEnum):
    """An enum of the API's, by its numbers; api_name is how the API spells a member."""

    @property
    def api_name(self) -> str:
        return _PREFIXES[type(self)] + self.name


class Persistence(ApiEnum):
    """How libvirt keeps the VM's domain."""

    UNSPECIFIED = 0
    TRANSIENT = 1
    """createXML: the domain exists only while it runs."""
    PERSISTENT = 2
    """defineXML, then create; hostd removes the definition when the VM goes DOWN."""


class ConsoleKind(ApiEnum):
    """How the VM's console is reached (hostd.consoles: which this host offers)."""

    UNSPECIFIED = 0
    NONE = 1
    """No serial port, no display."""
    SERIAL_FILE = 2
    """The first serial port, written to a file in hostd's state directory."""
    VNC = 3
    """A VNC display on the host's loopback interface, plus the serial file."""
    SPICE = 4


class DiskFormat(ApiEnum):
    """How a disk's image is read: as said, never probed (a guest could forge a header)."""

    UNSPECIFIED = 0
    RAW = 1
    QCOW2 = 2


class NicKind(ApiEnum):
    """How a NIC is connected."""

    UNSPECIFIED = 0
    USER = 1
    """User-mode networking (slirp): no host set-up, outbound only."""
    NETWORK = 2
    """A libvirt network, named by Nic.network."""


class VmState(ApiEnum):
    """The VM's state on this host (hostd.state_machine moves it)."""

    UNSPECIFIED = 0
    WAIT_FOR_LAUNCH = 1
    """Registered; the domain is not running yet."""
    RUNNING = 2
    PAUSED = 3
    POWERING_DOWN = 4
    DOWN = 5
    """The domain is gone (and hostd forgets the VM)."""
    REBOOT_IN_PROGRESS = 6
    SAVING_STATE = 7
    RESTORING_STATE = 8
    SUSPENDED = 9
    """Hibernated: the saved state is a file on this host; no domain runs."""
    MIGRATING_FROM = 10
    MIGRATING_TO = 11


class ExitReason(ApiEnum):
    """Why the domain stopped."""

    UNSPECIFIED = 0
    DESTROYED = 1
    """Destroyed through hostd."""
    SHUTDOWN = 2
    """The guest powered itself off."""
    CRASHED = 3
    START_FAILED = 4
    MIGRATED = 5
    """The VM now runs on another host."""
    SAVED = 6
    MIGRATION_FAILED = 7
    """It was to arrive from another host, but stays on its source."""


class MigrationDirection(ApiEnum):
    UNSPECIFIED = 0
    OUTGOING = 1
    """This host is the source."""
    INCOMING = 2
    """This host is the destination."""


class MigrationPhase(ApiEnum):
    UNSPECIFIED = 0
    TRANSFERRING = 1
    """The memory is being copied (outgoing), or awaited (incoming)."""
    COMPLETED = 2
    """The VM runs on the destination."""
    FAILED = 3
    CANCELLED = 4


_PREFIXES: dict[type[ApiEnum], str] = {
    Persistence: "PERSISTENCE_",
    ConsoleKind: "KIND_",
    DiskFormat: "FORMAT_",
    NicKind: "KIND_",
    VmState: "STATE_",
    ExitReason: "EXIT_REASON_",
    MigrationDirection: "DIRECTION_",
    MigrationPhase: "PHASE_",
}


@dataclass(frozen=True)
class BootSource:
    """Direct kernel boot."""

    kernel_path: str = ""
    initrd_path: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class Nic:
    name: str = ""
    kind: NicKind = NicKind.UNSPECIFIED
    network: str = ""
    mac_address: str = ""


@dataclass(frozen=True)
class Disk:
    name: str = ""
    path: str = ""
    format: DiskFormat = DiskFormat.UNSPECIFIED
    read_only: bool = False


@dataclass(frozen=True)
class VmSpec:
    """What the user asks for. The last four fields are the controller's: hostd keeps
    them only so that the configuration it stores is the one it was given."""

    vcpus: int = 0
    memory_mib: int = 0
    boot: BootSource = field(default_factory=BootSource)
    nics: tuple[Nic, ...] = ()
    disks: tuple[Disk, ...] = ()
    highly_available: bool = False
    pinned_host: str = ""
    start_paused: bool = False
    custom_properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VmConfig:
    """Everything a host needs to run a VM (optional fields: hostd.defaults)."""

    vm_id: str = ""
    name: str = ""
    spec: VmSpec = field(default_factory=VmSpec)
    persistence: Persistence = Persistence.UNSPECIFIED
    console: ConsoleKind = ConsoleKind.UNSPECIFIED
    custom_properties: Mapping[str, str] = field(default_factory=dict)
    """For the host's hook scripts (hostd.hooks)."""
    guest_agent_version: str = ""
    """The agent version last seen in this VM; empty when none was ever seen."""


@dataclass(frozen=True)
class VmStatus:
    """A VM as its host sees it, at one moment."""

    vm_id: str
    state: VmState = VmState.UNSPECIFIED
    exit_reason: ExitReason = ExitReason.UNSPECIFIED
    message: str = ""
    guest: GuestInfo | None = None
    """In listings only: the guest agent's last report, when it has reported."""


@dataclass(frozen=True)
class PeerHost:
    """Another host, as a migration's source reaches it: its hostd's address
    and the host id its certificate must name (empty only in plaintext dev)."""

    address: str
    host_id: str = ""


@dataclass(frozen=True)
class MigrationDestination:
    """What the source host needs to send a VM to this host. How the source's
    libvirt reaches this host's is the source's to derive, never this reply's
    (MigrationConfig.peer_hypervisor_uri)."""

    migration_uri: str
    channel_socket_path: str
    console_log_path: str
    state_directory: str


@dataclass(frozen=True)
class MigrationProgress:
    """Where a VM's live migration stands, as one of its two hosts sees it."""

    vm_id: str
    direction: MigrationDirection
    phase: MigrationPhase
    peer_address: str
    started_ns: int
    ended_ns: int = 0
    """0 while it runs."""
    job: JobProgress = field(default_factory=JobProgress)
    """The hypervisor's statistics of the transfer."""
    message: str = ""


@dataclass(frozen=True)
class AdoptedVm:
    """A VM hostd took over: a domain it had created, or a saved state."""

    vm_id: str
    state: VmState
    reason: str


@dataclass(frozen=True)
class ExternalDomain:
    """A libvirt domain hostd does not own and leaves alone."""

    uuid: str
    name: str
    reason: str


@dataclass(frozen=True)
class CleanedUp:
    """Something hostd removed: a leftover file or domain definition."""

    vm_id: str
    """The VM it belonged to; empty when unknown."""
    what: str
    """A path, or "domain NAME"."""
    reason: str


@dataclass(frozen=True)
class RecoveryReport:
    """What hostd found when it started, and what it did about it."""

    time_ns: int = 0
    adopted: tuple[AdoptedVm, ...] = ()
    external: tuple[ExternalDomain, ...] = ()
    cleaned_up: tuple[CleanedUp, ...] = ()
