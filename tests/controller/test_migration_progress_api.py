"""A migration through the API where no guest is needed, with a real hostd on
libvirt's test driver (nothing boots: a started VM stays POWERING_UP, and
takes no real migration): the host's migration events, fed to its monitor
as its event stream would, shown in the operation by GetOperation; and
ExplainPlacement for a migration. The records and their coalescing:
tests/controller/test_migration_progress.py; real migrations:
tests/e2e/test_controller_migration.py."""

from __future__ import annotations

import grpc
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import operation_pb2, vm_pb2
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import Rig, error
from tests.support.migration_operation import migrating, powering_up_on
from tests.support.served import Served
from tests.support.waiting import until

Pb = agent_pb2.MigrationProgress
Transfer = operation_pb2.MigrationTransfer


async def test_the_sources_migration_events_show_in_the_operation(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    moving = await migrating(rig, test_hostd, boot)

    async def operation() -> operation_pb2.Operation:
        request = op_api.GetOperationRequest(id=moving.op_id)
        return (await rig.ops.GetOperation(request)).operation

    await moving.report(Pb.PHASE_TRANSFERRING, 600, iterations=1, bytes_per_second=500)
    op = await operation()
    assert (op.migration.phase, op.migration.percent) == (Transfer.PHASE_TRANSFERRING, 40)
    assert (op.migration.data_remaining_bytes, op.migration.iterations) == (600, 1)
    assert op.migration.bytes_per_second == 500 and op.phases.HasField("transferring_time")
    await moving.report(Pb.PHASE_TRANSFERRING, 100, iterations=2)  # within the second: waits
    await moving.report(Pb.PHASE_COMPLETED, 0, iterations=3, downtime_ms=12)  # the end: at once
    op = await operation()
    assert (op.migration.phase, op.migration.percent) == (Transfer.PHASE_SWITCHED_OVER, 100)
    assert (op.migration.iterations, op.migration.downtime_ms) == (3, 12)
    assert op.phases.HasField("switched_over_time")
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=moving.name))


async def test_explain_placement_for_a_migration_refuses_the_source(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name, host_id = await powering_up_on(rig, test_hostd, boot)
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
