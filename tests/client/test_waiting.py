"""Waiting through the client: wait_for a VM's state (on WatchVms), and the
operation a verb returns awaited to its end. A real hostd on libvirt's test
driver, where a started VM stays POWERING_UP (each engine)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.controller_rig import Rig
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from virtplane_client import (
    AsyncClient,
    Client,
    OperationKind,
    OperationState,
    VmSpec,
    VmState,
    errors,
)

WAIT = 30.0


async def test_wait_for_returns_the_vm_once_it_is_in_the_state(
    rig: Rig, client: AsyncClient, test_hostd: Served, vm_spec: VmSpec, name: str
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    await client.vms.create(name, vm_spec)
    waiting = asyncio.create_task(client.vms.wait_for(name, VmState.POWERING_UP, WAIT))
    await asyncio.sleep(0.1)
    assert not waiting.done()  # DOWN: not yet
    started = await client.vms.start(name)
    vm = await waiting
    assert vm.status.state is VmState.POWERING_UP and vm.id == started.vm.id
    # Already there: at once, from the watch's snapshot.
    again = await client.vms.wait_for(vm.id, {VmState.UP, VmState.POWERING_UP}, WAIT)
    assert again.status.state is VmState.POWERING_UP
    with pytest.raises(errors.WaitTimeout):  # the test driver never reports a guest
        await client.vms.wait_for(name, VmState.UP, timeout=0.3)
    await client.vms.stop(name)


async def test_wait_for_a_deleted_vm_is_not_found(
    client: AsyncClient, vm_spec: VmSpec, name: str
) -> None:
    vm = await client.vms.create(name, vm_spec)
    waiting = asyncio.create_task(client.vms.wait_for(name, VmState.UP, WAIT))
    await asyncio.sleep(0.1)
    await client.vms.delete(vm.id)
    with pytest.raises(errors.NotFound) as err:
        await waiting
    assert (err.value.kind, err.value.name) == ("VM", name)
    with pytest.raises(errors.NotFound):
        await client.vms.wait_for("nope", VmState.UP, WAIT)


async def test_an_operation_is_awaited_to_its_end(
    rig: Rig, client: AsyncClient, test_hostd: Served, vm_spec: VmSpec, name: str
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    await client.vms.create(name, vm_spec)
    started = await client.vms.start(name)
    assert started.operation.kind is OperationKind.START_VM
    assert started.operation.state is OperationState.RUNNING
    assert not (await client.operations.wait(started.operation, timeout=0.5)).done
    with pytest.raises(errors.WaitTimeout):
        await client.operations.result(started.operation, timeout=0.5)
    await client.vms.wait_for(name, VmState.POWERING_UP, WAIT)

    hibernated = await client.vms.hibernate(name)  # SAVING_STATE, then SUSPENDED
    done = await asyncio.wait_for(client.operations.result(hibernated.operation), WAIT)
    assert done.state is OperationState.SUCCEEDED and done.done
    assert done.phases.done_time is not None
    assert (await client.vms.get(name)).status.state is VmState.SUSPENDED
    # The start that never saw its guest: failed when the VM went down.
    with pytest.raises(errors.OperationFailed) as err:
        await client.operations.result(started.operation.id, WAIT)
    failed = err.value.operation
    assert failed.state is OperationState.FAILED and failed.error is not None
    assert failed.error.code == "ABORTED"
    listed = await client.operations.list(vm=name)
    assert [o.id for o in listed] == [hibernated.operation.id, started.operation.id]
    assert [o.id for o in await client.operations.list(vm=name, limit=1)] == [done.id]
    await client.vms.stop(name)


async def test_the_blocking_client_awaits_an_operation(
    rig: Rig, test_hostd: Served, vm_spec: VmSpec, name: str
) -> None:
    await add_test_host(rig, "h1", test_hostd)

    def run() -> tuple[VmState, OperationState]:
        with Client(rig.address, credentials=rig.credentials) as client:
            client.vms.create(name, vm_spec)
            client.vms.start(name)
            vm = client.vms.wait_for(name, VmState.POWERING_UP, WAIT)
            stopped = client.vms.stop(name)
            return vm.status.state, client.operations.result(stopped.operation, WAIT).state

    assert await asyncio.wait_for(asyncio.to_thread(run), WAIT) == (
        VmState.POWERING_UP,
        OperationState.SUCCEEDED,
    )
