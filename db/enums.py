"""The states stored in the database, named as in the public API."""

from __future__ import annotations

import enum


class VmState(enum.Enum):
    DOWN = "DOWN"
    WAIT_FOR_LAUNCH = "WAIT_FOR_LAUNCH"
    POWERING_UP = "POWERING_UP"
    UP = "UP"
    PAUSED = "PAUSED"
    POWERING_DOWN = "POWERING_DOWN"
    REBOOT_IN_PROGRESS = "REBOOT_IN_PROGRESS"
    SAVING_STATE = "SAVING_STATE"
    RESTORING_STATE = "RESTORING_STATE"
    SUSPENDED = "SUSPENDED"
    MIGRATING_FROM = "MIGRATING_FROM"
    MIGRATING_TO = "MIGRATING_TO"
    NOT_RESPONDING = "NOT_RESPONDING"
    UNKNOWN = "UNKNOWN"


class ExitReason(enum.Enum):
    NONE = "NONE"
    USER_STOP = "USER_STOP"
    GUEST_SHUTDOWN = "GUEST_SHUTDOWN"
    CRASHED = "CRASHED"
    START_FAILED = "START_FAILED"
    MIGRATED = "MIGRATED"
    SAVED_TO_FILE = "SAVED_TO_FILE"
    LOST = "LOST"
    HOST_FENCED = "HOST_FENCED"


class HostState(enum.Enum):
    CONNECTING = "CONNECTING"
    UP = "UP"
    MAINTENANCE = "MAINTENANCE"
    PREPARING_FOR_MAINTENANCE = "PREPARING_FOR_MAINTENANCE"
    NON_RESPONSIVE = "NON_RESPONSIVE"
    NON_OPERATIONAL = "NON_OPERATIONAL"
    DOWN = "DOWN"


class NicKind(enum.Enum):
    USER = "USER"
    NETWORK = "NETWORK"


class DiskFormat(enum.Enum):
    RAW = "RAW"
    QCOW2 = "QCOW2"


class OperationKind(enum.Enum):
    START_VM = "START_VM"
    STOP_VM = "STOP_VM"
    SHUTDOWN_VM = "SHUTDOWN_VM"
    REBOOT_VM = "REBOOT_VM"
    RESET_VM = "RESET_VM"
    PAUSE_VM = "PAUSE_VM"
    RESUME_VM = "RESUME_VM"
    HIBERNATE_VM = "HIBERNATE_VM"
    MIGRATE_VM = "MIGRATE_VM"


class OperationState(enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class MigrationPhase(enum.Enum):
    """Where a migration's transfer stands, as its source host reports it."""

    TRANSFERRING = "TRANSFERRING"
    SWITCHED_OVER = "SWITCHED_OVER"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class VmOrigin(enum.Enum):
    # Created through the API.
    MANAGED = "MANAGED"
    # Found running on a host without a record: recorded, never killed.
    EXTERNAL = "EXTERNAL"


# VM states in which the VM holds resources on its host.
ACTIVE_VM_STATES = frozenset(set(VmState) - {VmState.DOWN, VmState.SUSPENDED})

# VM states in which the VM is booked on its host but does not run yet: its
# resources are pending there.
PENDING_VM_STATES = frozenset({VmState.WAIT_FOR_LAUNCH, VmState.RESTORING_STATE})
