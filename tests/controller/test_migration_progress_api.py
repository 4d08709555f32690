"""A migration through the API where no guest is needed, with a real hostd on
libvirt's test driver (nothing boots: a started VM stays POWERING_UP, and
takes no real migration): the host's migration events, fed to its monitor
as its event stream would, shown in the operation by GetOperation; and
ExplainPlacement for a migration. The records and their coalescing:
tests/controller/test_migration_progress.py; real migrations:
tests/e2e/test_controller_migration.py."""

from __future__ import annotations

import uuid

import grpc
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import operation_pb2, vm_pb2
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import operations
from controller.lifecycle import verbs
from controller.requests import Call
from db import repositories as repo
from tests.support.controller_rig import Rig, error, spec
from tests.support.db_rig import host_row
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until

Pb = agent_pb2.MigrationProgress
Transfer = operation_pb2.MigrationTransfer


async def _powering_up_on(rig: Rig, hostd: Served, boot: vm_pb2.BootSource) -> tuple[str, str]:
    """A VM started on the test host h1 and a host h2 (a row only) with
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


async def test_the_sources_migration_events_show_in_the_operation(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name, host_id = await _powering_up_on(rig, test_hostd, boot)

    def begin(s: Session) -> tuple[str, str]:
        vm = repo.find_vm(s, name)
        assert vm is not None
        return vm.id, operations.begin(s, verbs.MIGRATE.kind, vm, Call("MigrateVm"),
                                       host_id="id-h2").id  # fmt: skip

    vm_id, op_id = rig.controller.db.transaction(begin)
    monitor = rig.controller.hosts.monitor(host_id)

    async def event(phase: int, remaining: int, **fields: int) -> None:
        progress = Pb(
            vm_id=vm_id,
            direction=Pb.DIRECTION_OUTGOING,
            phase=phase,  # type: ignore[arg-type]
            data_total_bytes=1000,
            data_remaining_bytes=remaining,
            **fields,  # type: ignore[arg-type]
        )
        async with monitor._lock:
            await monitor._apply(agent_pb2.HostEvent(migration=progress))

    async def operation() -> operation_pb2.Operation:
        return (await rig.ops.GetOperation(op_api.GetOperationRequest(id=op_id))).operation

    await event(Pb.PHASE_TRANSFERRING, 600, iterations=1, bytes_per_second=500)
    op = await operation()
    assert (op.migration.phase, op.migration.percent) == (Transfer.PHASE_TRANSFERRING, 40)
    assert (op.migration.data_remaining_bytes, op.migration.iterations) == (600, 1)
    assert op.migration.bytes_per_second == 500 and op.phases.HasField("transferring_time")
    await event(Pb.PHASE_TRANSFERRING, 100, iterations=2)  # within the second: waits
    await event(Pb.PHASE_COMPLETED, 0, iterations=3, downtime_ms=12)  # the end: at once
    op = await operation()
    assert (op.migration.phase, op.migration.percent) == (Transfer.PHASE_SWITCHED_OVER, 100)
    assert (op.migration.iterations, op.migration.downtime_ms) == (3, 12)
    assert op.phases.HasField("switched_over_time")
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_explain_placement_for_a_migration_refuses_the_source(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name, host_id = await _powering_up_on(rig, test_hostd, boot)
    request = vm_api.ExplainPlacementRequest(vm=name, for_migration=True)
    explained = await rig.vms.ExplainPlacement(request)
    assert (explained.chosen_host_id, explained.chosen_host_name) == ("id-h2", "h2")
    verdicts = {h.host_name: h for h in explained.hosts}
    assert set(verdicts) == {"h1", "h2"}
    refused = [f for f in verdicts["h1"].filters if not f.passed]
    assert [(f.filter, f.reason) for f in refused] == [
        ("source", "the VM runs there (the migration's source)")
    ]
    assert all(f.passed for f in verdicts["h2"].filters)
    # A start's placement does not judge the source so.
    start = await rig.vms.ExplainPlacement(vm_api.ExplainPlacementRequest(vm=name))
    h1 = next(h for h in start.hosts if h.host_id == host_id)
    assert [f.passed for f in h1.filters if f.filter == "source"] == [True]

    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
    await until(
        lambda: rig.vms.GetVm(vm_api.GetVmRequest(vm=name)),
        lambda r: r.vm.status.state == vm_pb2.Vm.STATE_DOWN,
    )
    code, why = await error(rig.vms.ExplainPlacement(request))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert why == f"cannot migrate VM {name!r}: it is DOWN; migrate needs it on a host"
