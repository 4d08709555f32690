"""request_id on the API's mutations: a repeat returns the first result
without acting again (also after a controller restart), concurrent repeats
act once, and a reused id with another request is refused. On each engine,
through gRPC, with a real hostd on libvirt's test driver."""

from __future__ import annotations

import asyncio

import grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import WAIT, Rig, close_rig, config, error, open_rig, spec
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from tests.support.waiting import until
from virtplane_client import VmState

# Raw stubs for the mutations: this module is about request_id as sent, or left out, on the wire.

S = vm_pb2.Vm


async def test_a_repeated_create_returns_the_first_vm(rig: Rig, boot: vm_pb2.BootSource) -> None:
    request = vm_api.CreateVmRequest(name="a", spec=spec(boot), request_id="create-a")
    first = await rig.vms.CreateVm(request)
    again = await rig.vms.CreateVm(request)
    assert again.vm.id == first.vm.id
    listed = await rig.vms.ListVms(vm_api.ListVmsRequest())
    assert [vm.name for vm in listed.vms] == ["a"]
    # Without the key, the same create is refused as usual.
    code, _ = await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot))))
    assert code is grpc.StatusCode.ALREADY_EXISTS


async def test_a_reused_request_id_with_another_request_is_refused(
    rig: Rig, boot: vm_pb2.BootSource
) -> None:
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot), request_id="k1"))
    code, why = await error(
        rig.vms.CreateVm(vm_api.CreateVmRequest(name="b", spec=spec(boot), request_id="k1"))
    )
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert "request_id 'k1' was already used for a different CreateVm request" in why
    code, why = await error(rig.vms.StartVm(vm_api.StartVmRequest(vm="a", request_id="k1")))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert "CreateVm" in why
    code, why = await error(rig.vms.GetVm(vm_api.GetVmRequest(vm="b")))
    assert code is grpc.StatusCode.NOT_FOUND


async def test_a_request_id_is_checked(rig: Rig, boot: vm_pb2.BootSource) -> None:
    code, why = await error(
        rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot), request_id="x" * 129))
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert why.startswith("request_id:")


async def test_concurrent_starts_with_one_request_id_start_once(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    vm = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="once", spec=spec(boot)))).vm
    request = vm_api.StartVmRequest(vm="once", request_id="start-once")
    replies = await asyncio.gather(*[rig.vms.StartVm(request) for _ in range(20)])
    assert len({r.operation.id for r in replies}) == 1
    assert all(r.vm.id == vm.id for r in replies)
    # Acted once: one operation, one request in the audit log.
    ops = await rig.ops.ListOperations(op_api.ListOperationsRequest(vm="once"))
    assert [op.id for op in ops.operations] == [replies[0].operation.id]
    events = await rig.ops.ListEvents(op_api.ListEventsRequest(vm_id=vm.id, page_size=1000))
    asked = [e for e in events.events if e.kind == "REQUEST" and e.message.startswith("StartVm")]
    assert len(asked) == 1 and asked[0].request_id == "start-once"
    # Another key is another start: refused, as the VM runs.
    code, why = await error(rig.vms.StartVm(vm_api.StartVmRequest(vm="once", request_id="other")))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "it is" in why
    await rig.vms.StopVm(vm_api.StopVmRequest(vm="once"))


async def test_a_repeat_after_a_controller_restart_returns_the_first_result(
    database_url: str, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    first = await open_rig(config(database_url))
    try:
        await add_test_host(first, "h1", test_hostd)
        await first.vms.CreateVm(vm_api.CreateVmRequest(name="r", spec=spec(boot)))
        started = await first.vms.StartVm(vm_api.StartVmRequest(vm="r", request_id="start-r"))
    finally:
        await close_rig(first)
    second = await open_rig(config(database_url))
    try:
        again = await second.vms.StartVm(vm_api.StartVmRequest(vm="r", request_id="start-r"))
        assert again.operation.id == started.operation.id
        assert again.operation.phases.create_time == started.operation.phases.create_time
        stop = vm_api.StopVmRequest(vm="r", request_id="stop-r")
        stopped = await second.vms.StopVm(stop)
        assert stopped.vm.status.state == S.STATE_DOWN
        assert (await second.vms.StopVm(stop)).operation.id == stopped.operation.id
        delete = vm_api.DeleteVmRequest(vm="r", request_id="delete-r")
        await second.vms.DeleteVm(delete)
        await second.vms.DeleteVm(delete)  # a repeat, not NOT_FOUND
    finally:
        await close_rig(second)


async def test_host_verbs_repeat_their_first_result(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    first = await add_test_host(rig, "h1", test_hostd, request_id="add-h1")
    add = host_api.AddHostRequest(name="h1", address=test_hostd.address, request_id="add-h1")
    again = await rig.hosts.AddHost(add)
    assert again.host.id == first.id
    listed = await rig.hosts.ListHosts(host_api.ListHostsRequest())
    assert [h.name for h in listed.hosts] == ["h1"]
    maintain = host_api.SetHostMaintenanceRequest(host="h1", request_id="m1")
    assert (await rig.hosts.SetHostMaintenance(maintain)).host.id == first.id
    assert (await rig.hosts.SetHostMaintenance(maintain)).host.id == first.id  # not refused
    activate = host_api.ActivateHostRequest(host="h1", request_id="a1")
    await rig.hosts.ActivateHost(activate)
    await rig.hosts.ActivateHost(activate)
    await until(
        lambda: rig.hosts.GetHost(host_api.GetHostRequest(host="h1")),
        lambda r: r.host.status.state == r.host.State.STATE_UP,
    )
    remove = host_api.RemoveHostRequest(host="h1", request_id="r1")
    await rig.hosts.RemoveHost(remove)
    await rig.hosts.RemoveHost(remove)
    code, _ = await error(rig.hosts.GetHost(host_api.GetHostRequest(host="h1")))
    assert code is grpc.StatusCode.NOT_FOUND


async def test_a_repeated_shutdown_is_one_shutdown(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="sd", spec=spec(boot)))
    await rig.vms.StartVm(vm_api.StartVmRequest(vm="sd"))
    await rig.client.vms.wait_for("sd", VmState.POWERING_UP, timeout=WAIT)
    request = vm_api.ShutdownVmRequest(vm="sd", timeout_seconds=5, request_id="sd-1")
    first = await rig.vms.ShutdownVm(request)
    assert first.operation.kind == first.operation.KIND_SHUTDOWN_VM
    again = await rig.vms.ShutdownVm(request)
    assert again.operation.id == first.operation.id
    done = await rig.ops.WaitOperation(op_api.WaitOperationRequest(id=first.operation.id))
    assert done.operation.state == done.operation.STATE_SUCCEEDED, done.operation.error
    vm = await rig.client.vms.get("sd")
    assert vm.status.state == VmState.DOWN
    # The log says which host the VM left, and why.
    events = (await rig.ops.ListEvents(op_api.ListEventsRequest(vm_id=vm.id))).events
    down = [e for e in events if e.kind == "VM_STATE" and "→ DOWN" in e.message]
    assert len(down) == 1 and down[0].host_id == host_id
    assert "→ DOWN (GUEST_SHUTDOWN" in down[0].message  # from whichever state it was seen in


async def test_the_audit_log_records_mutations_and_state_changes(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    host_id = (await add_test_host(rig, "h1", test_hostd, request_id="")).id
    vm = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="logged", spec=spec(boot)))).vm
    await rig.hosts.SetHostMaintenance(
        host_api.SetHostMaintenanceRequest(host="h1", request_id="m-1")
    )
    await rig.vms.DeleteVm(vm_api.DeleteVmRequest(vm="logged", request_id="del-1"))
    events = (await rig.ops.ListEvents(op_api.ListEventsRequest(page_size=1000))).events
    assert [e.id for e in events] == sorted(e.id for e in events)
    kinds = [(e.kind, e.vm_id or e.host_id, e.request_id) for e in events]
    assert ("HOST_ADDED", host_id, "") in kinds
    assert ("VM_CREATED", vm.id, "") in kinds
    assert ("HOST_STATE", host_id, "m-1") in kinds
    assert ("REQUEST", host_id, "m-1") in kinds
    assert ("VM_DELETED", vm.id, "del-1") in kinds
    state = next(e for e in events if e.kind == "HOST_STATE")
    assert state.message == "UP → MAINTENANCE (in maintenance)"
    only_vm = (await rig.ops.ListEvents(op_api.ListEventsRequest(vm_id=vm.id))).events
    assert {e.vm_id for e in only_vm} == {vm.id}
    later = await rig.ops.ListEvents(op_api.ListEventsRequest(after_id=events[-2].id))
    assert [e.id for e in later.events] == [events[-1].id]
