"""Operations (a verb followed to its end) and the audit log's events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from virtplane_client.models.enums import MigrationPhase, OperationKind, OperationState


@dataclass(frozen=True)
class OperationError:
    """Why an operation failed: a gRPC status code name and a message."""

    code: str
    message: str


@dataclass(frozen=True)
class OperationPhases:
    """When each phase was reached; None until it is."""

    create_time: dt.datetime | None = None
    scheduled_time: dt.datetime | None = None
    dispatched_time: dt.datetime | None = None
    accepted_time: dt.datetime | None = None
    powering_up_time: dt.datetime | None = None
    up_time: dt.datetime | None = None
    done_time: dt.datetime | None = None
    # A migration: its transfer reported under way; the VM ran on the destination.
    transferring_time: dt.datetime | None = None
    switched_over_time: dt.datetime | None = None


@dataclass(frozen=True)
class MigrationTransfer:
    """A migration's transfer as its source host last reported it."""

    phase: MigrationPhase
    percent: int = 0  # of the data sent: (total - remaining) / total; 100 once switched over
    data_total_bytes: int = 0
    data_processed_bytes: int = 0
    data_remaining_bytes: int = 0
    bytes_per_second: int = 0
    iterations: int = 0  # passes over the guest's memory
    elapsed_ms: int = 0
    downtime_ms: int = 0  # once SWITCHED_OVER
    message: str = ""  # why it failed or was cancelled
    update_time: dt.datetime | None = None


@dataclass(frozen=True)
class Operation:
    """A long-running verb on a VM: what it is and how far it got."""

    id: str
    kind: OperationKind
    vm_id: str
    state: OperationState
    done: bool = False
    host_id: str = ""
    error: OperationError | None = None  # set when FAILED
    request_id: str = ""
    phases: OperationPhases = field(default_factory=OperationPhases)
    migration: MigrationTransfer | None = None  # a migration's, once its source reported
    # What a running operation waits for ("waiting: host h1 has 2 outgoing").
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.state is OperationState.FAILED


@dataclass(frozen=True)
class Event:
    """One entry of the audit log."""

    id: int
    time: dt.datetime | None
    kind: str
    vm_id: str = ""
    host_id: str = ""
    operation_id: str = ""
    request_id: str = ""
    message: str = ""
