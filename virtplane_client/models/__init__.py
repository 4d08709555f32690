"""The client's typed results: frozen dataclasses and enums of its own, never
protobuf messages (virtplane_client.convert makes them from the protos).

- enums      VmState, HostState, OperationState… (values are the wire numbers)
- vm         Vm, VmSpec, VmStatus, Nic, Disk, BootSource, VmUpdate, VerbResult, VmChange
- guest      GuestInfo and its parts, GuestFact, GuestRawReport, GuestReport
- operation  Operation, its phases, error and migration transfer; Event (the audit log)
- fleet      Host, HostStatus, FencedHost, AffinityGroup, Placement, Balancing
"""

from __future__ import annotations

from virtplane_client.models.enums import (
    AgentState,
    BalancingPolicy,
    ChangeKind,
    ChannelState,
    DiskFormat,
    ExitReason,
    HostState,
    MigrationPhase,
    NicKind,
    OperationKind,
    OperationState,
    Origin,
    Polarity,
    VmState,
)
from virtplane_client.models.fleet import (
    AffinityGroup,
    Balancing,
    BalancingMove,
    FencedHost,
    FilterVerdict,
    Host,
    HostLoad,
    HostPlacement,
    HostStatus,
    Placement,
    WeightScore,
)
from virtplane_client.models.guest import (
    GuestFact,
    GuestFilesystem,
    GuestInfo,
    GuestInterface,
    GuestRawReport,
    GuestReport,
    GuestUser,
)
from virtplane_client.models.operation import (
    Event,
    MigrationTransfer,
    Operation,
    OperationError,
    OperationPhases,
)
from virtplane_client.models.vm import (
    BootSource,
    Disk,
    Nic,
    StartTry,
    VerbResult,
    Vm,
    VmChange,
    VmSpec,
    VmStatus,
    VmUpdate,
)

__all__ = [
    "AffinityGroup",
    "AgentState",
    "Balancing",
    "BalancingMove",
    "BalancingPolicy",
    "BootSource",
    "ChangeKind",
    "ChannelState",
    "Disk",
    "DiskFormat",
    "Event",
    "ExitReason",
    "FencedHost",
    "FilterVerdict",
    "GuestFact",
    "GuestFilesystem",
    "GuestInfo",
    "GuestInterface",
    "GuestRawReport",
    "GuestReport",
    "GuestUser",
    "Host",
    "HostLoad",
    "HostPlacement",
    "HostState",
    "HostStatus",
    "MigrationPhase",
    "MigrationTransfer",
    "Nic",
    "NicKind",
    "Operation",
    "OperationError",
    "OperationKind",
    "OperationPhases",
    "OperationState",
    "Origin",
    "Placement",
    "Polarity",
    "StartTry",
    "VerbResult",
    "Vm",
    "VmChange",
    "VmSpec",
    "VmState",
    "VmStatus",
    "VmUpdate",
    "WeightScore",
]
