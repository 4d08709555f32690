"""The client's enums, one per API enum.

Each member's value is the API's wire number, so converting is `VmState(number)`
and back `state.value`; a number this client does not know (a newer server)
reads as UNSPECIFIED instead of failing. Names drop the proto prefix
(`Vm.STATE_UP` is `VmState.UP`).
"""

from __future__ import annotations

import enum


class ProtoEnum(enum.Enum):
    """An API enum: UNSPECIFIED (0) stands for any number not listed."""

    @classmethod
    def _missing_(cls, value: object) -> ProtoEnum:
        return cls(0)


class VmState(ProtoEnum):
    """The lifecycle of a VM (vm.proto, Vm.State)."""

    UNSPECIFIED = 0
    DOWN = 1
    WAIT_FOR_LAUNCH = 2
    POWERING_UP = 3
    UP = 4
    PAUSED = 5
    POWERING_DOWN = 6
    REBOOT_IN_PROGRESS = 7
    SAVING_STATE = 8
    RESTORING_STATE = 9
    SUSPENDED = 10
    MIGRATING_FROM = 11
    MIGRATING_TO = 12
    NOT_RESPONDING = 13
    UNKNOWN = 14


class ExitReason(ProtoEnum):
    """Why a VM went DOWN; UNSPECIFIED while it did not."""

    UNSPECIFIED = 0
    USER_STOP = 1
    GUEST_SHUTDOWN = 2
    CRASHED = 3
    START_FAILED = 4
    MIGRATED = 5
    SAVED_TO_FILE = 6
    LOST = 7
    HOST_FENCED = 8


class Origin(ProtoEnum):
    """Where a VM's record came from: the API, or found on its host."""

    UNSPECIFIED = 0
    MANAGED = 1
    EXTERNAL = 2


class DiskFormat(ProtoEnum):
    """A disk image's format; UNSPECIFIED is raw."""

    UNSPECIFIED = 0
    RAW = 1
    QCOW2 = 2


class NicKind(ProtoEnum):
    """How a NIC is connected: user-mode networking or a libvirt network."""

    UNSPECIFIED = 0
    USER = 1
    NETWORK = 2


class AgentState(ProtoEnum):
    """Whether the guest agent is talking."""

    UNSPECIFIED = 0
    RESPONDING = 1
    NOT_RESPONDING = 2


class ChannelState(ProtoEnum):
    """How the host treats the guest agent's channel."""

    UNSPECIFIED = 0
    OK = 1
    THROTTLED = 2


class HostState(ProtoEnum):
    """The lifecycle of a host (host.proto, Host.State)."""

    UNSPECIFIED = 0
    CONNECTING = 1
    UP = 2
    MAINTENANCE = 3
    PREPARING_FOR_MAINTENANCE = 4
    NON_RESPONSIVE = 5
    NON_OPERATIONAL = 6
    DOWN = 7


class OperationKind(ProtoEnum):
    """The verb an operation follows."""

    UNSPECIFIED = 0
    START_VM = 1
    STOP_VM = 2
    SHUTDOWN_VM = 3
    REBOOT_VM = 4
    RESET_VM = 5
    PAUSE_VM = 6
    RESUME_VM = 7
    HIBERNATE_VM = 8
    MIGRATE_VM = 9


class OperationState(ProtoEnum):
    """Under way, or how an operation ended."""

    UNSPECIFIED = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3


class MigrationPhase(ProtoEnum):
    """Where a migration's transfer stands (MigrationTransfer.Phase)."""

    UNSPECIFIED = 0
    TRANSFERRING = 1
    SWITCHED_OVER = 2
    FAILED = 3
    CANCELLED = 4


class Polarity(ProtoEnum):
    """Whether an affinity group's VMs run together (POSITIVE) or apart."""

    UNSPECIFIED = 0
    POSITIVE = 1
    NEGATIVE = 2


class BalancingPolicy(ProtoEnum):
    """The cluster's balancing policy (ExplainBalancing)."""

    UNSPECIFIED = 0
    OFF = 1
    EVENLY_DISTRIBUTED = 2


class ChangeKind(ProtoEnum):
    """What a watch message says (WatchVmsResponse.Kind)."""

    UNSPECIFIED = 0
    SNAPSHOT = 1
    SNAPSHOT_COMPLETE = 2
    CHANGED = 3
    DELETED = 4
