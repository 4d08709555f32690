"""A migration's operation on the controller rig where nothing migrates (a
hostd on libvirt's test driver): a VM started on a test host, a second host
as a row only, the VM's MIGRATE_VM operation begun as MigrateVm begins it,
and the source's migration events fed to its monitor as its event stream
would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import operations
from controller.lifecycle import verbs
from controller.requests import Call
from db import repositories as repo
from tests.support.controller_rig import Rig, spec
from tests.support.db_rig import host_row
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until

Pb = agent_pb2.MigrationProgress
DESTINATION = "id-h2"
"""The id of the second host, h2 (a row: no hostd behind it)."""


async def powering_up_on(rig: Rig, hostd: Served, boot: vm_pb2.BootSource) -> tuple[str, str]:
    """A VM started on the test host h1 (POWERING_UP), and a host h2 with
    room; the VM's name and h1's id."""
    host_id = (await add_test_host(rig, "h1", hostd)).id
    name = f"v-{uuid.uuid4().hex[:8]}"  # the test driver's domains outlive a test's database
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await until(
        lambda: rig.vms.GetVm(vm_api.GetVmRequest(vm=name)),
        lambda r: r.vm.status.state == vm_pb2.Vm.STATE_POWERING_UP,
    )
    rig.controller.db.transaction(lambda s: s.add(host_row("h2", 1 << 20, cpus=64)))
    return name, host_id


@dataclass(frozen=True)
class Migrating:
    """A VM's migration from host_id to h2, as far as the rows go."""

    rig: Rig
    name: str
    vm_id: str
    host_id: str
    op_id: str

    async def report(self, phase: int, remaining: int, message: str = "", **fields: int) -> None:
        """The source's migration event (data_total_bytes 1000), applied by
        its monitor."""
        progress = Pb(
            vm_id=self.vm_id,
            direction=Pb.DIRECTION_OUTGOING,
            phase=phase,  # type: ignore[arg-type]
            data_total_bytes=1000,
            data_remaining_bytes=remaining,
            message=message,
            **fields,  # type: ignore[arg-type]
        )
        monitor = self.rig.controller.hosts.monitor(self.host_id)
        async with monitor._lock:
            await monitor._apply(agent_pb2.HostEvent(migration=progress))


async def migrating(rig: Rig, hostd: Served, boot: vm_pb2.BootSource) -> Migrating:
    """A VM on h1 whose MIGRATE_VM operation to h2 runs (nothing moves)."""
    name, host_id = await powering_up_on(rig, hostd, boot)

    def begin(s: Session) -> tuple[str, str]:
        vm = repo.find_vm(s, name)
        assert vm is not None
        op = operations.begin(s, verbs.MIGRATE.kind, vm, Call("MigrateVm"), host_id=DESTINATION)
        return vm.id, op.id

    vm_id, op_id = rig.controller.db.transaction(begin)
    return Migrating(rig, name, vm_id, host_id, op_id)
