"""The narrow interface hostd needs from a hypervisor, and the plain values it speaks.

hostd.libvirt_driver implements it with libvirt; tests/hostd/fakes.py keeps
an in-memory one, and tests/hostd run one contract suite against every
implementation. Errors are hostd.errors. Thirteen methods::

    start, act, save, restore, read_saved      run and stop domains
    migrate, job_progress                      move a running domain to another host
    domain_xml, domain_stats, list_domains,    look
    host_info
    events, close

(A migration is cancelled with act(uuid, DomainAction.ABORT_JOB), and switched
to post-copy with act(uuid, DomainAction.START_POST_COPY).)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import Enum, auto
from typing import Protocol

from hostd.domxml import HostdMetadata


class DomainState(Enum):
    RUNNING = auto()
    PAUSED = auto()
    SHUTTING_DOWN = auto()
    SHUT_OFF = auto()
    CRASHED = auto()
    OTHER = auto()
    """No state, blocked in the hypervisor, or suspended to RAM."""


class DomainAction(Enum):
    """What act() does to a domain."""

    SHUTDOWN = auto()
    """Asks the guest to power off (ACPI power button); returns at once."""
    REBOOT = auto()
    """Asks the guest to reboot; returns at once. The domain keeps running."""
    RESET = auto()
    """Resets the virtual hardware, like a reset button."""
    PAUSE = auto()
    RESUME = auto()
    DESTROY = auto()
    """Powers the domain off at once."""
    UNDEFINE = auto()
    """Removes a persistent domain's definition; a running domain becomes transient."""
    ABORT_JOB = auto()
    """Cancels the domain's running job (a migration); DomainStateConflict when none runs."""
    START_POST_COPY = auto()
    """Switches the domain's migration (begun with MigrationTarget.post_copy) to
    post-copy: it runs on the destination at once, which pulls the memory left."""


class LifecycleKind(Enum):
    STARTED = auto()
    RESUMED = auto()
    SUSPENDED = auto()
    SHUTDOWN = auto()
    """The guest is shutting down, or has finished doing so."""
    STOPPED = auto()
    CRASHED = auto()
    REBOOTED = auto()
    """The guest was reset (it rebooted, or was reset): it boots again. One reboot
    may bring several in a burst, as the firmware resets too."""
    OTHER = auto()
    """Defined, undefined, suspended to RAM: nothing hostd tracks."""


class StopReason(Enum):
    """Why a domain stopped (detail of STOPPED; CRASHED events carry CRASHED)."""

    SHUTDOWN = auto()
    DESTROYED = auto()
    CRASHED = auto()
    MIGRATED = auto()
    SAVED = auto()
    FAILED = auto()
    """The emulator failed."""
    OTHER = auto()


@dataclass(frozen=True)
class LifecycleEvent:
    uuid: str
    kind: LifecycleKind
    reason: StopReason | None = None
    """Set for STOPPED and CRASHED."""


@dataclass(frozen=True)
class EventsLost:
    """Events were dropped (the queue overflowed): whoever tracks state must resync."""

    dropped: int


@dataclass(frozen=True)
class ConnectionLost:
    """The hypervisor cannot be reached (libvirtd went away): calls fail with
    HypervisorUnavailable, and no events come, until Reconnected."""

    reason: str


@dataclass(frozen=True)
class Reconnected:
    """The hypervisor is reached again, its events followed again; events of the
    time between were lost: whoever tracks state must resync."""

    after_seconds: float


HypervisorEvent = LifecycleEvent | EventsLost | ConnectionLost | Reconnected


@dataclass(frozen=True)
class DomainInfo:
    """One domain as list_domains() sees it."""

    uuid: str
    name: str
    state: DomainState
    active: bool
    persistent: bool
    metadata: HostdMetadata | None
    """hostd's metadata; None for a domain hostd did not make."""
    saving: bool = False
    """Paused because a save to file is in progress."""
    starting: bool = False
    """Paused because its start is not finished: the emulator runs, the CPUs not yet."""
    stop_reason: StopReason | None = None
    """Why a defined domain that does not run stopped; None: it never ran, or nobody knows."""


@dataclass(frozen=True)
class DiskCounters:
    name: str
    """The guest's device name, e.g. vda."""
    path: str = ""
    """The image on the host."""
    read_requests: int = 0
    read_bytes: int = 0
    write_requests: int = 0
    write_bytes: int = 0


@dataclass(frozen=True)
class NicCounters:
    name: str
    rx_bytes: int = 0
    rx_packets: int = 0
    rx_errors: int = 0
    rx_drops: int = 0
    tx_bytes: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_drops: int = 0


@dataclass(frozen=True)
class DomainStats:
    state: DomainState
    state_name: str
    """The hypervisor's own words, lowercase: "running", "paused"..."""
    state_reason: str
    """Why it is in that state, lowercase: "booted", "user", "save"..."""
    cpu_time_ns: int = 0
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    vcpus: int = 0
    memory_current_kib: int = 0
    memory_maximum_kib: int = 0
    memory_rss_kib: int = 0
    disks: tuple[DiskCounters, ...] = ()
    nics: tuple[NicCounters, ...] = ()


@dataclass(frozen=True)
class HostInfo:
    hostname: str
    cpus: int
    memory_total_mib: int
    memory_free_mib: int
    domains_active: int
    """Active domains, hostd's or not."""
    graphics: frozenset[str] = frozenset()
    """Display types the hypervisor offers, e.g. "vnc", "spice"."""


@dataclass(frozen=True)
class MigrationTarget:
    """Where migrate() sends a domain, and what changes on the way."""

    hypervisor_uri: str
    """How this host's hypervisor reaches the destination's."""
    migration_uri: str
    """Where the memory goes: tcp://ADDRESS:PORT."""
    channel_socket: str
    """The guest channel's socket on the destination."""
    console_log: str
    """The serial console's file on the destination."""
    state_dir: str
    """The destination hostd's state directory, which marks the domain as its own."""
    persistent: bool = False
    """Define the domain on the destination (and undefine it here)."""
    max_bandwidth_mib: int = 0
    """MiB/s at most; 0: no limit."""
    tls_destination: str = ""
    """The DNS name the destination's certificate must carry: the memory goes
    over QEMU's native TLS, both QEMUs checking each other's certificate
    against the CA. Empty: in clear (development only)."""
    max_downtime_ms: int = 0
    """The longest the guest may be stopped at the switch-over; 0: the hypervisor's default."""
    auto_converge: bool = False
    """Throttle the guest's vCPUs while the transfer does not converge."""
    post_copy: bool = False
    """Allow act(START_POST_COPY) during the migration."""


@dataclass(frozen=True)
class JobProgress:
    """The hypervisor's statistics of a domain's job (a migration)."""

    elapsed_ms: int = 0
    data_total: int = 0
    data_processed: int = 0
    data_remaining: int = 0
    bytes_per_second: int = 0
    dirty_pages_per_second: int = 0
    iterations: int = 0
    downtime_ms: int = 0
    """How long the guest was stopped at the switch-over (a completed migration)."""


class Hypervisor(Protocol):
    async def start(self, xml: str, *, persistent: bool, paused: bool) -> str:
        """Starts a domain, transient or defined first; returns its UUID.

        A persistent domain whose start fails is undefined again.
        """
        ...

    async def act(self, uuid: str, action: DomainAction) -> None:
        """Does action to the domain; DomainStateConflict when its state forbids it."""
        ...

    async def save(self, uuid: str, path: str) -> None:
        """Saves the domain's memory to path (mode 0600) and stops the domain."""
        ...

    async def restore(self, path: str, *, paused: bool, persistent: bool) -> str:
        """Starts the domain saved at path, where it left off; returns its UUID.

        The file is left in place. persistent defines the restored domain too.
        """
        ...

    async def read_saved(self, path: str) -> HostdMetadata | None:
        """hostd's metadata in a complete saved image; None for an image that is
        incomplete, unreadable or not hostd's."""
        ...

    async def domain_xml(self, uuid: str) -> str:
        """The domain's XML as the hypervisor has it (the running domain's, when it runs)."""
        ...

    async def migrate(self, uuid: str, target: MigrationTarget) -> JobProgress:
        """Moves the running domain live to target; returns once it runs there,
        with the completed job's statistics.

        JobAborted when act(ABORT_JOB) cancelled it, OperationUnsupported where
        the hypervisor cannot migrate; after any error the domain runs here still.
        """
        ...

    async def job_progress(self, uuid: str, *, completed: bool = False) -> JobProgress | None:
        """The domain's running job, or with completed its last completed one
        (kept where the domain now runs); None when there is none."""
        ...

    async def domain_stats(self, uuid: str) -> DomainStats: ...

    async def list_domains(self) -> list[DomainInfo]:
        """Every domain, active or only defined, hostd's or not."""
        ...

    async def host_info(self) -> HostInfo: ...

    def events(self) -> AsyncIterator[HypervisorEvent]:
        """Lifecycle events of every domain, in the order the hypervisor sent them.

        One consumer at a time; events arriving while nobody iterates are buffered
        up to a bound, past which they are dropped and an EventsLost follows.
        A lost connection is ConnectionLost, and Reconnected once it is back.
        """
        ...

    async def close(self) -> None: ...
