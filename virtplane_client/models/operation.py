"""Operations (a verb followed to its end) and the audit log's events."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from virtplane_client.models.enums import OperationKind, OperationState


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
