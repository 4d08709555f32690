"""Operations and hibernation on real guests: a StartVm's operation goes
through every phase to the guest's first report, across a controller
killed and restarted mid-start; a hibernated VM restores on its host with
its guest still running (its uptime goes on)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import operation_pb2, vm_pb2
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import operation_service_pb2_grpc as op_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.guests import WAIT, Api, reported, vm_spec
from tests.support.real import GuestImage
from tests.support.stack import Stack, start_controller
from tests.support.virt import domain_exists
from virtplane_client.cli import format as fmt

S = vm_pb2.Vm
Op = operation_pb2.Operation
pytestmark = pytest.mark.guest
PHASES = [field for _label, field in fmt.PHASES]


async def _wait(ops: op_grpc.OperationServiceAsyncStub, op_id: str) -> operation_pb2.Operation:
    request = op_api.WaitOperationRequest(id=op_id, timeout_seconds=int(WAIT))
    return (await ops.WaitOperation(request, timeout=WAIT + 10)).operation


async def test_start_phases_reach_up_across_a_controller_restart(
    stack: Stack, guest_image: GuestImage, system_libvirt: str, tmp_path: Path
) -> None:
    # A controller of this test's own, on the shared hostd, so that it can be killed.
    workdir = tmp_path / "ctl"
    workdir.mkdir()
    controller = start_controller(workdir)
    vm_id = ""
    try:
        async with grpc.aio.insecure_channel(controller.address) as channel:
            hosts = host_grpc.HostServiceStub(channel)
            await hosts.AddHost(host_api.AddHostRequest(name="h", address=stack.hostd.address))
            vms = vm_grpc.VmServiceStub(channel)
            created = await vms.CreateVm(
                vm_api.CreateVmRequest(name=f"phases-{os.getpid()}", spec=vm_spec(guest_image))
            )
            vm_id = created.vm.id
            started = await vms.StartVm(vm_api.StartVmRequest(vm=vm_id, request_id="start-1"))
        assert started.operation.state == Op.STATE_RUNNING
        assert started.operation.phases.HasField("accepted_time")
        controller.kill()  # mid-start: the guest has not reported yet

        controller = start_controller(workdir)
        async with grpc.aio.insecure_channel(controller.address) as channel:
            ops = op_grpc.OperationServiceStub(channel)
            vms = vm_grpc.VmServiceStub(channel)
            op = await _wait(ops, started.operation.id)
            assert op.state == Op.STATE_SUCCEEDED, op.error.message
            times = [getattr(op.phases, p).ToDatetime() for p in PHASES]
            assert all(op.phases.HasField(p) for p in PHASES), op.phases
            assert times == sorted(times)
            vm = (await vms.GetVm(vm_api.GetVmRequest(vm=vm_id))).vm
            assert vm.status.state == S.STATE_UP
            # The same request after the restart is the same operation, not a second start.
            again = await vms.StartVm(vm_api.StartVmRequest(vm=vm_id, request_id="start-1"))
            assert again.operation.id == op.id
            await vms.StopVm(vm_api.StopVmRequest(vm=vm_id))
            await vms.DeleteVm(vm_api.DeleteVmRequest(vm=vm_id))
    finally:
        controller.stop()
    assert not domain_exists(system_libvirt, vm_id)


async def test_hibernate_then_start_restores_the_guest_on_its_host(
    api: Api, up_vm: vm_pb2.Vm, system_libvirt: str
) -> None:
    ops = op_grpc.OperationServiceStub(api.channel)
    before = (await api.vms.GetVm(vm_api.GetVmRequest(vm=up_vm.id))).vm
    uptime = before.status.guest.uptime_seconds
    assert uptime > 0

    saving = await api.vms.HibernateVm(vm_api.HibernateVmRequest(vm=up_vm.id))
    assert saving.vm.status.state == S.STATE_SAVING_STATE
    op = await _wait(ops, saving.operation.id)
    assert op.state == Op.STATE_SUCCEEDED, op.error.message
    suspended = (await api.vms.GetVm(vm_api.GetVmRequest(vm=up_vm.id))).vm
    assert suspended.status.state == S.STATE_SUSPENDED
    assert suspended.status.host_id == up_vm.status.host_id  # it holds the saved state
    assert not domain_exists(system_libvirt, up_vm.id)

    try:
        restoring = await api.vms.StartVm(vm_api.StartVmRequest(vm=up_vm.id))
        assert restoring.vm.status.host_id == up_vm.status.host_id
        op = await _wait(ops, restoring.operation.id)
        assert op.state == Op.STATE_SUCCEEDED, op.error.message
        assert op.phases.HasField("up_time")
        up = await api.watch.wait_for(
            up_vm.id,
            lambda v: (
                v.status.state == S.STATE_UP
                and v.status.revision > restoring.vm.status.revision
                and reported(v)
            ),
        )
        # The guest went on where it was: its uptime continues, not from zero.
        assert up.status.guest.uptime_seconds >= uptime
        assert domain_exists(system_libvirt, up_vm.id)
    except BaseException:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await api.vms.StopVm(vm_api.StopVmRequest(vm=up_vm.id))
        raise


async def test_a_vm_started_paused_comes_up_paused_then_runs_on_a_second_start(
    api: Api, guest_image: GuestImage, system_libvirt: str
) -> None:
    ops = op_grpc.OperationServiceStub(api.channel)
    spec = vm_spec(guest_image)
    spec.start_paused = True
    vm_id = (
        await api.vms.CreateVm(vm_api.CreateVmRequest(name=f"paused-{os.getpid()}", spec=spec))
    ).vm.id
    try:
        started = await api.vms.StartVm(vm_api.StartVmRequest(vm=vm_id))
        op = await _wait(ops, started.operation.id)
        assert op.state == Op.STATE_SUCCEEDED, op.error.message
        paused = (await api.vms.GetVm(vm_api.GetVmRequest(vm=vm_id))).vm
        assert paused.status.state == S.STATE_PAUSED
        assert _libvirt_state(system_libvirt, vm_id) == libvirt.VIR_DOMAIN_PAUSED

        resumed = await api.vms.StartVm(vm_api.StartVmRequest(vm=vm_id))
        op = await _wait(ops, resumed.operation.id)
        assert op.state == Op.STATE_SUCCEEDED, op.error.message
        assert _libvirt_state(system_libvirt, vm_id) == libvirt.VIR_DOMAIN_RUNNING
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await api.vms.StopVm(vm_api.StopVmRequest(vm=vm_id))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await api.vms.DeleteVm(vm_api.DeleteVmRequest(vm=vm_id))
    assert not domain_exists(system_libvirt, vm_id)


def _libvirt_state(uri: str, vm_id: str) -> int:
    conn = libvirt.open(uri)
    try:
        return int(conn.lookupByUUIDString(vm_id).state()[0])
    finally:
        conn.close()
