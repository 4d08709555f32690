"""MigrateVm and CancelMigration through the controller's API where no guest
is needed: a VM that is not UP is refused, on each engine, with a real hostd
on libvirt's test driver (nothing boots: a started VM stays POWERING_UP).
The refusals of a destination: tests/controller/test_migrate_placement.py;
migrations of real guests: tests/e2e/test_controller_migration.py."""

from __future__ import annotations

import uuid

import grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import Rig, error, spec
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until


async def test_a_vm_that_is_not_up_neither_migrates_nor_cancels(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = f"v-{uuid.uuid4().hex[:8]}"  # the test driver's domains outlive a test's database
    await add_test_host(rig, "h1", test_hostd)
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))

    code, why = await error(rig.vms.MigrateVm(vm_api.MigrateVmRequest(vm=name, request_id="m1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert why == f"cannot migrate VM {name!r}: it is DOWN; migrate needs it UP"

    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await until(
        lambda: rig.vms.GetVm(vm_api.GetVmRequest(vm=name)),
        lambda r: r.vm.status.state == vm_pb2.Vm.STATE_POWERING_UP,
    )
    # The same key again: a refused call is not remembered, so it is judged anew.
    code, why = await error(rig.vms.MigrateVm(vm_api.MigrateVmRequest(vm=name, request_id="m1")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and "it is POWERING_UP" in why
    code, why = await error(rig.vms.CancelMigration(vm_api.CancelMigrationRequest(vm=name)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot cancel the migration of VM" in why and "it is POWERING_UP" in why
    code, _why = await error(rig.vms.MigrateVm(vm_api.MigrateVmRequest(vm="nope")))
    assert code is grpc.StatusCode.NOT_FOUND
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
