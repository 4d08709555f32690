"""SQLAlchemy 2.0 models of the controller's database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.enums import (
    DiskFormat,
    ExitReason,
    HostState,
    MigrationPhase,
    NicKind,
    OperationKind,
    OperationState,
    VmOrigin,
    VmState,
)
from virtplane_common.limits import (
    ADDRESS_COLUMN,
    AGENT_VERSION_COLUMN,
    DEVICE_NAME_COLUMN,
    MAC_COLUMN,
    NAME_COLUMN,
    NETWORK_COLUMN,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _enum(cls: type[Any]) -> Enum:
    return Enum(cls, native_enum=False, length=32, validate_strings=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


# The cluster every host and VM belongs to unless told otherwise; the
# migration that brought clusters in creates it.
DEFAULT_CLUSTER_ID = "00000000-0000-0000-0000-000000000001"
DEFAULT_CLUSTER_NAME = "default"


class Cluster(Base):
    """A group of hosts that VMs are placed within."""

    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_COLUMN), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def _cluster_column() -> Mapped[str]:
    return mapped_column(
        ForeignKey("clusters.id", ondelete="RESTRICT"),
        index=True,
        default=DEFAULT_CLUSTER_ID,
        server_default=DEFAULT_CLUSTER_ID,
    )


class Host(Base):
    """A hypervisor host and what it last reported."""

    __tablename__ = "hosts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_COLUMN), unique=True)
    address: Mapped[str] = mapped_column(String(ADDRESS_COLUMN))
    state: Mapped[HostState] = mapped_column(_enum(HostState))
    state_message: Mapped[str] = mapped_column(Text, default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    cpus: Mapped[int] = mapped_column(default=0)
    memory_total_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    hypervisor_type: Mapped[str] = mapped_column(String(16), default="")
    cluster_id: Mapped[str] = _cluster_column()
    last_seen_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version_id: Mapped[int] = mapped_column(default=1)
    # The host's identity (controller.enrollment, migration 0007): its
    # certificate's serial (decimal) and dates, and the sha256 (hex) of its
    # key's SubjectPublicKeyInfo, which no other host may hold. None until
    # hostd enrolls.
    cert_serial: Mapped[str | None] = mapped_column(String(64))
    cert_not_before: Mapped[dt.datetime | None]
    cert_not_after: Mapped[dt.datetime | None]
    key_fingerprint: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrolled_at: Mapped[dt.datetime | None]
    # The certificate the last renewal replaced, valid until it expires:
    # removing the host revokes it too.
    previous_cert_serial: Mapped[str | None] = mapped_column(String(64))
    previous_cert_not_after: Mapped[dt.datetime | None]

    __mapper_args__ = {"version_id_col": version_id}


class Vm(Base):
    """A VM: its spec (what was asked) and its status (what is observed)."""

    __tablename__ = "vms"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_COLUMN), unique=True)
    # spec
    vcpus: Mapped[int]
    memory_mib: Mapped[int] = mapped_column(BigInteger)
    kernel_path: Mapped[str] = mapped_column(Text)
    initrd_path: Mapped[str] = mapped_column(Text, default="")
    cmdline: Mapped[str] = mapped_column(Text, default="")
    cluster_id: Mapped[str] = _cluster_column()
    # Counts changes of the spec (UpdateVm's optimistic concurrency); status
    # changes leave it alone.
    spec_version: Mapped[int] = mapped_column(default=1, server_default="1")
    # The spec the next start applies: changes made while the VM ran that
    # need a restart (a VmSpec in protobuf's JSON form); None when none wait.
    next_run_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # status
    state: Mapped[VmState] = mapped_column(_enum(VmState))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("hosts.id", ondelete="RESTRICT"))
    exit_reason: Mapped[ExitReason] = mapped_column(_enum(ExitReason), default=ExitReason.NONE)
    status_message: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(BigInteger, index=True)
    state_changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    version_id: Mapped[int] = mapped_column(default=1)
    # scheduling and high availability (migration 0004)
    highly_available: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Started with its CPUs paused (migration 0005).
    start_paused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The guest agent version last reported by this VM's agent, kept across
    # starts (guest facts are not): its host then awaits an agent.
    guest_agent_version: Mapped[str] = mapped_column(
        String(AGENT_VERSION_COLUMN), default="", server_default=""
    )
    # Settings for the host's hook scripts (VmSpec.custom_properties); None: none.
    custom_properties: Mapped[dict[str, str] | None] = mapped_column(JSON)
    # The host the VM may only run on; None: any host.
    pinned_host_id: Mapped[str | None] = mapped_column(String(36))
    origin: Mapped[VmOrigin] = mapped_column(
        _enum(VmOrigin), default=VmOrigin.MANAGED, server_default=VmOrigin.MANAGED.value
    )
    # The idempotency key of the current start's CreateVm on its host, so
    # that a controller restarted mid-start can repeat it safely.
    start_request_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The hosts the current start tried and why each failed:
    # [{"host_id", "host", "error"}]; None when no start is under way.
    start_tries: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    # When the next automatic restart of a highly available VM is due, and
    # how many were tried since it last ran; None: no restart is pending.
    ha_restart_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    ha_restart_count: Mapped[int] = mapped_column(default=0, server_default="0")

    nics: Mapped[list[Nic]] = relationship(
        back_populates="vm", lazy="selectin", cascade="all, delete-orphan", order_by="Nic.position"
    )
    disks: Mapped[list[Disk]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="Disk.position"
    )
    guest_facts: Mapped[list[GuestFact]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="GuestFact.name"
    )

    __mapper_args__ = {"version_id_col": version_id}


class Nic(Base):
    """A VM's network interface."""

    __tablename__ = "vm_nics"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(DEVICE_NAME_COLUMN))
    kind: Mapped[NicKind] = mapped_column(_enum(NicKind))
    network: Mapped[str] = mapped_column(String(NETWORK_COLUMN), default="")
    mac_address: Mapped[str] = mapped_column(String(MAC_COLUMN), unique=True)

    vm: Mapped[Vm] = relationship(back_populates="nics")


class Disk(Base):
    """A file-backed disk of a VM, beside its boot source (the kernel and
    initrd on the vms row)."""

    __tablename__ = "vm_disks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(DEVICE_NAME_COLUMN))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[DiskFormat] = mapped_column(_enum(DiskFormat))
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)


class GuestFact(Base):
    """One fact the guest agent reported, with when and by whom it was observed."""

    __tablename__ = "guest_facts"

    vm_id: Mapped[str] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32))
    observed_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime]


class RevisionCounter(Base):
    """The one row holding the last revision given to a VM change.

    A transaction takes its revisions with UPDATE … RETURNING on this row, so
    it holds the row's lock until it commits: revisions are unique, and they
    are committed in the order they were given, whatever the engine and the
    number of writers (db.repositories.allocate_revisions).
    """

    __tablename__ = "revision_counter"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)
    # The oldest revision a WatchVms can resume after: deletions before it
    # are not on record (db.repositories.changes_after).
    resume_floor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class Event(Base):
    """One entry of the audit log: a mutation asked through the API, or a
    state change the controller recorded, with the request that caused it."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True
    )
    time: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    vm_id: Mapped[str | None] = mapped_column(String(36), index=True)
    host_id: Mapped[str | None] = mapped_column(String(36), index=True)
    operation_id: Mapped[str | None] = mapped_column(String(36))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # Who asked for a mutation of the API (a principal's name); None for
    # what the controller did on its own.
    principal: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text, default="")
    # For a VM's deletion: the revision it was given, so that a WatchVms
    # resumed from an older revision learns of it.
    revision: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_events_kind_revision", "kind", "revision"),)


class Operation(Base):
    """A long-running verb on a VM and the times of its phases."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[OperationKind] = mapped_column(_enum(OperationKind))
    state: Mapped[OperationState] = mapped_column(_enum(OperationState), index=True)
    vm_id: Mapped[str] = mapped_column(String(36), index=True)
    host_id: Mapped[str | None] = mapped_column(String(36))
    request_id: Mapped[str | None] = mapped_column(String(128))
    error_code: Mapped[str] = mapped_column(String(32), default="")
    error_message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    scheduled_at: Mapped[dt.datetime | None]
    dispatched_at: Mapped[dt.datetime | None]
    accepted_at: Mapped[dt.datetime | None]
    powering_up_at: Mapped[dt.datetime | None]
    up_at: Mapped[dt.datetime | None]
    done_at: Mapped[dt.datetime | None]
    # A migration's transfer, as its source host last reported it
    # (controller.migration_progress); the phase is None until it reports.
    transferring_at: Mapped[dt.datetime | None]
    switched_over_at: Mapped[dt.datetime | None]
    migration_phase: Mapped[MigrationPhase | None] = mapped_column(_enum(MigrationPhase))
    migration_total_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    migration_processed_bytes: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0"
    )
    migration_remaining_bytes: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0"
    )
    migration_bytes_per_second: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0"
    )
    migration_iterations: Mapped[int] = mapped_column(default=0, server_default="0")
    migration_elapsed_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    migration_downtime_ms: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    migration_message: Mapped[str] = mapped_column(Text, default="", server_default="")
    migration_updated_at: Mapped[dt.datetime | None]
    version_id: Mapped[int] = mapped_column(default=1)
    # A migration waiting its turn under the migration limits (migration
    # 0009, controller.lifecycle.migration_queue): no destination is booked
    # yet (host_id None); message says what it waits for; destination_ref is
    # the host asked for ("": the scheduler's pick); cause "maintenance" for
    # an evacuation's migration, which ActivateHost cancels while it waits.
    # migration_policy: the convergence policy the migration was asked
    # with (migration 0010; JSON of controller.lifecycle.migration_policy's
    # fields, "": the cluster's when it starts), which it starts with.
    waiting: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    destination_ref: Mapped[str] = mapped_column(String(NAME_COLUMN), default="", server_default="")
    cause: Mapped[str] = mapped_column(String(32), default="", server_default="")
    migration_policy: Mapped[str] = mapped_column(Text, default="", server_default="")

    __mapper_args__ = {"version_id_col": version_id}


class ApiRequest(Base):
    """A mutation the API carried out under a client's request_id, so that a
    repeat returns the first result instead of acting again."""

    __tablename__ = "api_requests"

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    # sha256 of the request without its request_id.
    fingerprint: Mapped[str] = mapped_column(String(64))
    # What the first execution produced: an operation, VM or host id, and
    # for the calls answered as they were, the serialized response.
    result_id: Mapped[str] = mapped_column(String(36), default="")
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AffinityGroup(Base):
    """VMs that should run together (positive) or apart (negative). An
    enforcing group is a scheduler filter; otherwise it only weighs."""

    __tablename__ = "affinity_groups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_COLUMN), unique=True)
    positive: Mapped[bool] = mapped_column(Boolean)
    enforcing: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    members: Mapped[list[AffinityMember]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="AffinityMember.vm_id"
    )


class AffinityMember(Base):
    """A VM in an affinity group."""

    __tablename__ = "affinity_group_vms"

    group_id: Mapped[str] = mapped_column(
        ForeignKey("affinity_groups.id", ondelete="CASCADE"), primary_key=True
    )
    vm_id: Mapped[str] = mapped_column(
        ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Principal(Base):
    """A user or service account of the API, and its role (controller.auth)."""

    __tablename__ = "principals"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token of a principal: only the SHA-256 of its secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    principal: Mapped[str] = mapped_column(
        ForeignKey("principals.name", ondelete="CASCADE"), index=True
    )
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class EnrollmentToken(Base):
    """A one-time token a host enrolls with: only the SHA-256 of its secret
    is kept (controller.enrollment.tokens)."""

    __tablename__ = "enrollment_tokens"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]


class RevokedCertificate(Base):
    """A certificate the CA revoked (a removed host's): what its CRL lists."""

    __tablename__ = "revoked_certificates"

    # Decimal: serials are up to 159 bits, more than any integer column holds.
    serial: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    not_after: Mapped[dt.datetime]
