"""Request ids through the client: every mutation carries one, fresh unless
the caller gives it; repeated with the same one, a call acts once (each
engine, a hostd on libvirt's test driver)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.support.controller_rig import Rig
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from virtplane_client import AsyncClient, Client, VmSpec, VmState, VmUpdate, errors

WAIT = 30.0


async def test_a_mutation_gets_a_fresh_request_id_unless_given_one(
    rig: Rig, client: AsyncClient, test_hostd: Served, vm_spec: VmSpec, name: str
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    vm = await client.vms.create(name, vm_spec)
    first = await client.vms.start(name)
    await client.vms.wait_for(name, VmState.POWERING_UP, WAIT)
    second = await client.vms.pause(name)
    keys = [first.operation.request_id, second.operation.request_id]
    assert len(set(keys)) == 2 and all(uuid.UUID(k) for k in keys)
    created = [e for e in await client.operations.events(vm_id=vm.id) if e.kind == "VM_CREATED"]
    assert [bool(uuid.UUID(e.request_id)) for e in created] == [True]

    resumed = await client.vms.resume(name, request_id="resume-1")
    assert resumed.operation.request_id == "resume-1"
    await client.vms.stop(name, request_id="")  # explicitly none
    assert (await client.operations.list(vm=name, limit=1))[0].request_id == ""


async def test_a_repeat_with_the_same_request_id_acts_once(
    rig: Rig, client: AsyncClient, test_hostd: Served, vm_spec: VmSpec, name: str
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    vm = await client.vms.create(name, vm_spec, request_id=f"create-{name}")
    assert (await client.vms.create(name, vm_spec, request_id=f"create-{name}")).id == vm.id
    with pytest.raises(errors.AlreadyExists) as reused:  # the same key, another request
        await client.vms.create(f"{name}-2", vm_spec, request_id=f"create-{name}")
    assert "request_id" in reused.value.message

    start = await client.vms.start(name, request_id=f"start-{name}")
    again = await client.vms.start(name, request_id=f"start-{name}")
    assert again.operation.id == start.operation.id
    update = VmUpdate(cmdline="once")
    one = await client.vms.update(name, update, request_id=f"update-{name}")
    two = await client.vms.update(name, update, request_id=f"update-{name}")
    assert one.spec_version == two.spec_version == vm.spec_version + 1
    await client.vms.stop(name)


async def test_the_blocking_client_repeats_with_its_key(
    rig: Rig, vm_spec: VmSpec, name: str
) -> None:
    def run() -> tuple[str, str, str]:
        with Client(rig.address, credentials=rig.credentials) as client:
            a = client.vms.create(name, vm_spec, request_id="k")
            b = client.vms.create(name, vm_spec, request_id="k")
            try:
                client.vms.create(name, vm_spec)  # a fresh key: a second create
            except errors.AlreadyExists as exc:
                return a.id, b.id, exc.message
        raise AssertionError("created twice")

    a, b, refused = await asyncio.wait_for(asyncio.to_thread(run), WAIT)
    assert a == b and "exists already" in refused
