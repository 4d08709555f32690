"""HostTarget: the host a verb calls about a VM, and what it sends there."""

from __future__ import annotations

from dataclasses import dataclass, field

from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller.lifecycle.migration_policy import MigrationPolicy
from db.enums import VmState
from db.models import Host, Vm


@dataclass(frozen=True)
class Queued:
    """A verb that waits its turn instead of calling the host now (a
    migration over the migration limits): what it waits for, the host asked
    for, and who asked ("maintenance": a host's evacuation), and the
    convergence policy it starts with."""

    message: str
    destination_ref: str = ""
    cause: str = ""
    convergence: MigrationPolicy = field(default_factory=MigrationPolicy)


@dataclass(frozen=True)
class HostTarget:
    """A VM and the host to call about it."""

    vm_id: str
    vm_name: str
    host_id: str
    host_name: str
    address: str
    # What CreateVm sends: a start placed on the host, or a restore.
    config: agent_pb2.VmConfig | None = None
    # The idempotency key of a placed start's CreateVm.
    request_id: str = ""
    # Booked on the host by placement (controller.lifecycle.placement),
    # rather than found on its own host.
    placed: bool = False
    # The VM's state before the verb, put back when the host refuses (stop).
    previous: VmState | None = None
    # A migration's destination, which the host is asked to send the VM to.
    destination_id: str = ""
    destination_address: str = ""
    # Set when the verb waits its turn: the runner begins its operation,
    # waiting, and does not call the host.
    queued: Queued | None = None
    # Who asked, if not a client: "maintenance", "balancing"; the operation
    # records it (Operation.cause).
    cause: str = ""

    @classmethod
    def of(
        cls,
        vm: Vm,
        host: Host,
        *,
        config: agent_pb2.VmConfig | None = None,
        placed: bool = False,
        previous: VmState | None = None,
    ) -> HostTarget:
        request_id = (vm.start_request_id or "") if placed else ""
        return cls(
            vm.id, vm.name, host.id, host.name, host.address, config, request_id, placed, previous
        )
