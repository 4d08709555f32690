"""hostd's configuration: one frozen value built by main() and passed down."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

VirtTypeSetting = Literal["auto", "kvm", "qemu"]
"""How the domain type is chosen: detected ("auto") or forced."""

VIRT_TYPE_SETTINGS: tuple[VirtTypeSetting, ...] = ("auto", "kvm", "qemu")

DEFAULT_IMAGE_ROOTS = (Path("/var/lib/virtplane/images"),)
DEFAULT_PEER_HYPERVISOR_URI = "qemu+tls://{address_host}/system"
DEFAULT_QEMU_TLS_DIR = Path("/etc/pki/libvirt-migrate")
"""What hostd/host-setup.sh names in libvirtd's qemu.conf (migrate_tls_x509_cert_dir)."""


@dataclass(frozen=True)
class ChannelLimits:
    """Bounds on what one guest channel may cost hostd; the guest is untrusted."""

    max_payload: int = 256 * 1024
    """Largest frame payload accepted; larger frames are skipped. guestd keeps a
    full report (its application list included) below this."""
    max_bytes_per_second: float = 256 * 1024
    """Bytes read from one channel per second, on average: past it hostd stops
    reading for a while, so the guest's writes block and hostd holds no more."""
    max_bytes_burst: float = 1024 * 1024
    max_messages_per_second: float = 20.0
    """Messages handled per second, on average; the excess is dropped."""
    max_messages_burst: float = 100.0
    calm_seconds: float = 10.0
    """How long a throttled channel must keep within its budgets to be OK again."""
    missed_heartbeats: int = 3
    """Heartbeats missed before the agent counts as not responding."""
    agent_start_seconds: float = 300.0
    """How long after its channel opens an agent seen in the VM before
    (VmConfig.guest_agent_version) may take to speak before it counts as not
    responding: a slow boot, plus the agent's own start."""
    default_heartbeat_seconds: float = 5.0
    """Assumed when the agent does not say how often it beats."""
    min_heartbeat_seconds: float = 0.05
    max_heartbeat_seconds: float = 300.0
    max_string: int = 256
    """Longest string kept from a guest, in characters."""
    max_interfaces: int = 32
    max_addresses: int = 32
    """Per interface and address family."""
    max_applications: int = 4096
    max_users: int = 256
    max_filesystems: int = 256
    max_guest_info_bytes: int = 256 * 1024
    """Largest merged GuestInfo kept for one VM, serialised: what is over it is
    dropped from the end of its lists (applications first), and counted."""
    max_clock_skew_seconds: float = 300.0
    """A guest timestamp further than this from hostd's clock is not believed."""
    connect_timeout_seconds: float = 10.0
    """How long to keep trying to reach the channel's socket after the domain starts."""
    connect_retry_seconds: float = 0.1
    write_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class EnrollmentConfig:
    """How hostd gets its identity from the controller (hostd.enrollment)."""

    controller: str = ""
    """The controller's host:port."""
    controller_ca: Path | None = None
    """The CA certificate the controller's certificate is checked against."""
    token: str = field(default="", repr=False)
    """A one-time enrollment token; empty: keep the identity on disk."""
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class MigrationConfig:
    """Live migration, both as its source and as its destination."""

    max_outgoing: int = 2
    """Outgoing migrations at once; MigrateVm beyond it is RESOURCE_EXHAUSTED."""
    address: str = "127.0.0.1"
    """The address this host receives migrated memory on (sources connect to it)."""
    peer_hypervisor_uri: str = DEFAULT_PEER_HYPERVISOR_URI
    """How this host's libvirt reaches a destination's, as a template with
    the placeholders {host_id} (MigrateVm's destination_host_id) and
    {address_host} (the host part of its destination_address). Derived here,
    never taken from the destination's answer."""
    require_peer_id: bool = True
    """MigrateVm must name the destination's host id (its certificate is
    checked against it); only plaintext development does without."""
    own_address: str = ""
    """This hostd's gRPC address as destinations are told it (for their messages)."""
    progress_interval_seconds: float = 1.0
    """How often an outgoing migration's progress is read and published."""
    incoming_timeout_seconds: float = 60.0
    """How long a prepared incoming VM waits for its migration to begin (then
    it is dropped: DOWN, MIGRATION_FAILED)."""
    max_incoming_pending: int = 8
    """Prepared incoming VMs whose migration has not ended; another
    PrepareIncomingMigration beyond it is RESOURCE_EXHAUSTED."""
    tls: bool = True
    """The memory goes over QEMU's native TLS (VIR_MIGRATE_TLS), the destination's
    certificate checked for its host id's DNS name; off only in development."""
    qemu_tls_dir: Path = DEFAULT_QEMU_TLS_DIR
    """Where QEMU reads this host's pair for TLS migration (hostd.qemu_tls): the
    folder libvirtd's qemu.conf names as migrate_tls_x509_cert_dir."""


@dataclass(frozen=True)
class HostdConfig:
    listen: str = "127.0.0.1:7070"
    """host:port the gRPC server binds."""
    libvirt_uri: str = "qemu:///system"
    state_dir: Path = Path("/var/lib/virtplane/hostd")
    """Holds the guest channel sockets and console logs; QEMU must reach it."""
    virt_type: VirtTypeSetting = "auto"
    journal_size: int = 10_000
    """Events kept for WatchEvents resumption."""
    journal_max_bytes: int = 64 * 1024 * 1024
    """The most those events may weigh, serialised: older ones go first."""
    list_guest_budget_bytes: int = 2 * 1024 * 1024
    """The most the guest facts of one ListVms or snapshot may weigh (hostd.listing)."""
    event_queue_size: int = 1_024
    """Hypervisor events buffered between libvirt's callback and hostd."""
    shutdown_grace_seconds: float = 5.0
    hooks_dir: Path | None = None
    """The hooks folder: one sub-folder of executable scripts per hook point
    (hostd.hooks). None: no hooks."""
    hook_timeout_seconds: float = 30.0
    """How long one hook script may run before it is killed."""
    reconnect_max_seconds: float = 5.0
    """The longest wait between two attempts to reach libvirtd again."""
    libvirt_threads: int = 8
    """Threads blocking libvirt calls run on (hostd.libvirt_driver.calls)."""
    libvirt_call_timeout_seconds: float = 60.0
    """How long one libvirt call may take before it fails UNAVAILABLE (not
    migrate, save and restore: they run as long as their job)."""
    channel: ChannelLimits = field(default_factory=ChannelLimits)
    migration: MigrationConfig = field(default_factory=MigrationConfig)
    insecure_plaintext_dev: bool = False
    """Serve plaintext and dial peers in plaintext, checking nobody: for
    development only (a loud warning at start). Otherwise hostd serves mutual
    TLS with its identity in state_dir/tls (hostd.identity)."""
    enrollment: EnrollmentConfig = field(default_factory=EnrollmentConfig)
    # What hostd accepts in a VM's configuration, whoever asks (hostd.validation).
    image_roots: tuple[Path, ...] = DEFAULT_IMAGE_ROOTS
    """Kernel, initrd and disk images must be regular files under one of these."""
    vm_properties: Mapping[str, str] = field(default_factory=dict)
    """The custom properties allowed: key -> regex its value must fully match
    (virtplane_common.properties). Empty: none."""
    metrics_listen: str = ""
    """Prometheus metrics over plain HTTP (GET /metrics) on host:port; "": none
    (hostd.metrics)."""
