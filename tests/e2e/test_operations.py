"""Operations and hibernation on real guests: a StartVm's operation goes
through every phase to the guest's first report, across a controller
killed and restarted mid-start; a hibernated VM restores on its host with
its guest still running (its uptime goes on)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from pathlib import Path

import libvirt
import pytest

import virtplane_client as vp
from tests.support.guests import WAIT, Api, guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.stack import Daemon, Stack, start_controller, start_host
from tests.support.virt import domain_exists
from virtplane_client.cli import format as fmt

S = vp.VmState
Op = vp.OperationState
pytestmark = pytest.mark.guest
MIGRATION_ONLY = ("transferring_time", "switched_over_time")
START_PHASES = [field for _label, field in fmt.PHASES if field not in MIGRATION_ONLY]
"""Every phase a StartVm goes through, in order (the CLI's timeline's)."""


async def test_start_phases_reach_up_across_a_controller_restart(
    stack: Stack, guest_image: GuestImage, system_libvirt: str, short_tmp: Path
) -> None:
    # A controller of this test's own, so that it can be killed, with a hostd
    # of its own (a hostd's identity names the host id of one controller);
    # a short folder, for hostd's unix sockets.
    workdir = short_tmp
    controller = start_controller(workdir, plaintext_hosts=False)
    hostd: Daemon | None = None
    vm_id = ""
    try:
        hostd = await asyncio.to_thread(start_host, controller, workdir, "h", system_libvirt)
        async with controller.client() as client:
            created = await client.vms.create(f"phases-{os.getpid()}", guest_spec(guest_image))
            vm_id = created.id
            started = await client.vms.start(vm_id, request_id="start-1")
        assert started.operation.state == Op.RUNNING
        assert started.operation.phases.accepted_time is not None
        controller.kill()  # mid-start: the guest has not reported yet

        controller = start_controller(workdir, plaintext_hosts=False)
        async with controller.client() as client:
            op = await client.operations.result(started.operation, WAIT)
            assert op.state == Op.SUCCEEDED, op.error
            times = [getattr(op.phases, p) for p in START_PHASES]
            assert None not in times, op.phases
            assert times == sorted(times)
            vm = await client.vms.get(vm_id)
            assert vm.status.state == S.UP
            # The same request after the restart is the same operation, not a second start.
            again = await client.vms.start(vm_id, request_id="start-1")
            assert again.operation.id == op.id
            await client.vms.stop(vm_id)
            await client.vms.delete(vm_id)
    finally:
        controller.stop()
        if hostd is not None:
            hostd.stop()
    assert not domain_exists(system_libvirt, vm_id)


async def test_hibernate_then_start_restores_the_guest_on_its_host(
    api: Api, up_vm: vp.Vm, system_libvirt: str
) -> None:
    vms, ops = api.client.vms, api.client.operations
    before = (await vms.get(up_vm.id)).status.guest
    assert before is not None
    uptime = before.uptime_seconds
    assert uptime > 0

    saving = await vms.hibernate(up_vm.id)
    assert saving.vm.status.state == S.SAVING_STATE
    op = await ops.result(saving.operation, WAIT)
    assert op.state == Op.SUCCEEDED, op.error
    suspended = await vms.get(up_vm.id)
    assert suspended.status.state == S.SUSPENDED
    assert suspended.status.host_id == up_vm.status.host_id  # it holds the saved state
    assert not domain_exists(system_libvirt, up_vm.id)

    try:
        restoring = await vms.start(up_vm.id)
        assert restoring.vm.status.host_id == up_vm.status.host_id
        op = await ops.result(restoring.operation, WAIT)
        assert op.state == Op.SUCCEEDED, op.error
        assert op.phases.up_time is not None
        up = await api.watch.wait_for(
            up_vm.id,
            lambda v: (
                v.status.state == S.UP
                and v.status.revision > restoring.vm.status.revision
                and guest_reported(v)
            ),
        )
        # The guest went on where it was: its uptime continues, not from zero.
        assert up.status.guest is not None
        assert up.status.guest.uptime_seconds >= uptime
        assert domain_exists(system_libvirt, up_vm.id)
    except BaseException:
        with contextlib.suppress(vp.ClientError):
            await vms.stop(up_vm.id)
        raise


async def test_a_vm_started_paused_comes_up_paused_then_runs_on_a_second_start(
    api: Api, guest_image: GuestImage, system_libvirt: str
) -> None:
    vms, ops = api.client.vms, api.client.operations
    spec = dataclasses.replace(guest_spec(guest_image), start_paused=True)
    vm_id = (await vms.create(f"paused-{os.getpid()}", spec)).id
    try:
        started = await vms.start(vm_id)
        op = await ops.result(started.operation, WAIT)
        assert op.state == Op.SUCCEEDED, op.error
        paused = await vms.get(vm_id)
        assert paused.status.state == S.PAUSED
        assert _libvirt_state(system_libvirt, vm_id) == libvirt.VIR_DOMAIN_PAUSED

        resumed = await vms.start(vm_id)
        op = await ops.result(resumed.operation, WAIT)
        assert op.state == Op.SUCCEEDED, op.error
        assert _libvirt_state(system_libvirt, vm_id) == libvirt.VIR_DOMAIN_RUNNING
    finally:
        with contextlib.suppress(vp.ClientError):
            await vms.stop(vm_id)
        with contextlib.suppress(vp.ClientError):
            await vms.delete(vm_id)
    assert not domain_exists(system_libvirt, vm_id)


def _libvirt_state(uri: str, vm_id: str) -> int:
    conn = libvirt.open(uri)
    try:
        return int(conn.lookupByUUIDString(vm_id).state()[0])
    finally:
        conn.close()
