"""Operations: what the verbs return, their phases, their end, and what a
controller restart does to them; StartVm of a PAUSED or SUSPENDED VM. On
each engine, with a real hostd on libvirt's test driver (nothing boots: a
started VM stays POWERING_UP)."""

from __future__ import annotations

# Raw stubs: this module checks the operation messages, pages and status codes as sent.
import uuid

import grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import operation_pb2, vm_pb2
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import operations
from controller.requests import Call
from db import repositories as repo
from db.enums import OperationKind
from tests.support.controller_rig import WAIT, Rig, close_rig, config, error, open_rig, spec
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until
from virtplane_client import VmState

S = vm_pb2.Vm
Op = operation_pb2.Operation


def _name() -> str:
    # Unique: the test driver's domains outlive a test's database.
    return f"v-{uuid.uuid4().hex[:8]}"


async def _op(rig: Rig, op_id: str) -> operation_pb2.Operation:
    return (await rig.ops.GetOperation(op_api.GetOperationRequest(id=op_id))).operation


async def test_start_returns_an_operation_that_follows_the_vm(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = _name()
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    started = await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    op = started.operation
    assert op.kind == Op.KIND_START_VM and op.vm_id == started.vm.id and op.host_id == host_id
    phases = op.phases
    for phase in ("create_time", "scheduled_time", "dispatched_time", "accepted_time"):
        assert phases.HasField(phase), phase
    assert phases.create_time.ToDatetime() <= phases.dispatched_time.ToDatetime()
    assert phases.dispatched_time.ToDatetime() <= phases.accepted_time.ToDatetime()
    # The domain runs (the test driver boots nothing, so the VM stays POWERING_UP).
    op = await until(lambda: _op(rig, op.id), lambda o: o.phases.HasField("powering_up_time"))
    assert op.state == Op.STATE_RUNNING and not op.done and not op.phases.HasField("up_time")
    waited = await rig.ops.WaitOperation(op_api.WaitOperationRequest(id=op.id, timeout_seconds=1))
    assert not waited.operation.done  # the wait timed out

    stopped = await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
    assert stopped.operation.kind == Op.KIND_STOP_VM
    assert stopped.operation.state == Op.STATE_SUCCEEDED
    start = (await rig.ops.WaitOperation(op_api.WaitOperationRequest(id=op.id))).operation
    assert start.state == Op.STATE_FAILED and start.done
    assert start.error.code == "ABORTED"
    assert "the VM went DOWN (USER_STOP)" in start.error.message

    listed = await rig.ops.ListOperations(op_api.ListOperationsRequest(vm=name, page_size=1))
    assert [o.id for o in listed.operations] == [stopped.operation.id]  # newest first
    rest = await rig.ops.ListOperations(
        op_api.ListOperationsRequest(vm=name, page_size=1, page_token=listed.next_page_token)
    )
    assert [o.id for o in rest.operations] == [op.id] and not rest.next_page_token
    failed = await rig.ops.ListOperations(op_api.ListOperationsRequest(states=[Op.STATE_FAILED]))
    assert [o.id for o in failed.operations] == [op.id]


async def test_an_unknown_operation_is_not_found(rig: Rig) -> None:
    code, why = await error(rig.ops.GetOperation(op_api.GetOperationRequest(id="nope")))
    assert code is grpc.StatusCode.NOT_FOUND and "nope" in why
    code, why = await error(rig.ops.WaitOperation(op_api.WaitOperationRequest()))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and why.startswith("id:")


async def test_an_instant_verb_succeeds_and_a_refused_one_leaves_no_operation(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = _name()
    await add_test_host(rig, "h1", test_hostd)
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)
    pause = vm_api.PauseVmRequest(vm=name, request_id=f"pause-{name}")
    paused = await rig.vms.PauseVm(pause)
    assert paused.operation.state == Op.STATE_SUCCEEDED
    # A repeat is the same pause, not a refusal of a second one (the VM is PAUSED now).
    assert (await rig.vms.PauseVm(pause)).operation.id == paused.operation.id
    code, _ = await error(rig.vms.RebootVm(vm_api.RebootVmRequest(vm=name)))
    assert code is grpc.StatusCode.FAILED_PRECONDITION  # refused by the controller: no operation
    ops = await rig.ops.ListOperations(op_api.ListOperationsRequest(vm=name))
    assert [o.kind for o in ops.operations] == [Op.KIND_PAUSE_VM, Op.KIND_START_VM]
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_start_of_a_paused_vm_resumes_it_in_place(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = _name()
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)
    await rig.vms.PauseVm(vm_api.PauseVmRequest(vm=name))
    resumed = await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    assert resumed.vm.status.state == S.STATE_POWERING_UP  # running again, where it was
    assert resumed.vm.status.host_id == host_id == resumed.operation.host_id
    assert resumed.operation.phases.HasField("accepted_time")
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_hibernate_then_start_restores_on_the_same_host(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = _name()
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    first = (await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))).operation
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)
    saving = await rig.vms.HibernateVm(vm_api.HibernateVmRequest(vm=name))
    assert saving.operation.kind == Op.KIND_HIBERNATE_VM
    op = (
        await rig.ops.WaitOperation(op_api.WaitOperationRequest(id=saving.operation.id))
    ).operation
    assert op.state == Op.STATE_SUCCEEDED, op.error.message
    vm = await rig.client.vms.get(name)
    assert vm.status.state == VmState.SUSPENDED
    assert vm.status.host_id == host_id  # the host that holds the saved state
    # The start it interrupted (the guest never reported) will not reach UP.
    interrupted = await _op(rig, first.id)
    assert interrupted.state == Op.STATE_FAILED
    assert "the VM went SUSPENDED" in interrupted.error.message
    # While another VM takes the host's memory, there is no room to restore it.
    free = (await rig.hosts.GetHost(host_api.GetHostRequest(host="h1"))).host.status
    big = f"{name}-big"
    await rig.vms.CreateVm(
        vm_api.CreateVmRequest(name=big, spec=spec(boot, memory_mib=free.memory_free_mib - 64))
    )
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=big))
    code, why = await error(rig.vms.StartVm(vm_api.StartVmRequest(vm=name)))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"cannot restore VM {name!r} on host 'h1'" in why
    assert (await rig.client.vms.get(name)).status.state == VmState.SUSPENDED
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=big))
    restored = await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    assert restored.vm.status.host_id == host_id
    assert not restored.operation.phases.HasField("scheduled_time")  # no scheduling
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)
    # Stopping a hibernated VM drops its saved state: DOWN, off its host.
    again = await rig.vms.HibernateVm(vm_api.HibernateVmRequest(vm=name))
    await rig.ops.WaitOperation(op_api.WaitOperationRequest(id=again.operation.id))
    stopped = await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
    assert stopped.vm.status.state == S.STATE_DOWN and not stopped.vm.status.host_id
    assert stopped.operation.state == Op.STATE_SUCCEEDED


async def test_after_a_restart_accepted_operations_resume_and_others_fail(
    database_url: str, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    name = _name()
    first = await open_rig(config(database_url))
    try:
        await add_test_host(first, "h1", test_hostd)
        await first.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
        started = (await first.vms.StartVm(vm_api.StartVmRequest(vm=name))).operation

        def unsent(session):  # a verb the controller died before sending
            vm = repo.find_vm(session, name)
            assert vm is not None
            return operations.begin(session, OperationKind.STOP_VM, vm, Call("StopVm")).id

        lost = await first.controller.db.run(unsent)
    finally:
        await close_rig(first)
    second = await open_rig(config(database_url))
    try:
        op = await _op(second, lost)
        assert op.state == Op.STATE_FAILED
        assert op.error.message == operations.RESTARTED
        resumed = await _op(second, started.id)
        assert resumed.state == Op.STATE_RUNNING
        # The new controller follows it to its end.
        await second.vms.StopVm(vm_api.StopVmRequest(vm=name))
        ended = await second.ops.WaitOperation(op_api.WaitOperationRequest(id=started.id))
        assert ended.operation.state == Op.STATE_FAILED
        assert "went DOWN" in ended.operation.error.message
    finally:
        await close_rig(second)
