"""Hibernate to a file, and restore through CreateVm, on the fake hypervisor."""

from __future__ import annotations

import asyncio

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import VmStateConflict
from hostd.model import ExitReason, VmConfig, VmState
from tests.support.hostd_rig import Rig, with_spec
from virtplane_common.errors import FailedPrecondition


def _files(rig: Rig) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in rig.layout.saved_dir.iterdir()}


async def _hibernated(rig: Rig, config: VmConfig | None = None) -> VmConfig:
    config = await rig.running(config)
    vm = await rig.vms.hibernate(config.vm_id)
    assert (vm.state, vm.message) == (VmState.SAVING_STATE, "saving its memory")
    await rig.wait_for(config.vm_id, VmState.SUSPENDED)
    return config


async def test_hibernate_saves_to_a_file_and_stops_the_domain(rig: Rig) -> None:
    config = await _hibernated(rig)
    vm_id = config.vm_id
    assert rig.state_names(vm_id) == ["WAIT_FOR_LAUNCH", "RUNNING", "SAVING_STATE", "SUSPENDED"]
    suspended = rig.vms.get(vm_id)
    assert suspended.exit_reason == ExitReason.SAVED
    assert suspended.message == f"hibernated to {rig.layout.saved_dir / vm_id}.img"
    assert vm_id not in rig.fake.domains
    assert _files(rig) == {f"{vm_id}.img": 0o600, f"{vm_id}.config": 0o600}
    assert rig.vms.counts() == (0, 1)


async def test_create_restores_with_the_saved_configuration(rig: Rig) -> None:
    config = await _hibernated(rig)
    # the hibernated check comes before validation
    other = with_spec(rig.config(vm_id=config.vm_id), memory_mib=0)
    vm = await rig.vms.create(other, request_id="restore-1")
    assert (vm.state, vm.message) == (VmState.RESTORING_STATE, "restoring its saved state")
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.state_names(config.vm_id)[-2:] == ["RESTORING_STATE", "RUNNING"]
    assert '<memory unit="MiB">64</memory>' in rig.fake.domains[config.vm_id].xml
    assert _files(rig) == {}
    # The restored VM is an ordinary one: the same request finds it.
    assert (await rig.vms.create(other, request_id="restore-1")).state == VmState.RUNNING


async def test_a_restore_can_come_up_paused(rig: Rig) -> None:
    config = await _hibernated(rig)
    await rig.vms.create(config, start_paused=True)
    await rig.wait_for(config.vm_id, VmState.PAUSED)
    assert rig.state_names(config.vm_id)[-2:] == ["RESTORING_STATE", "PAUSED"]


async def test_a_persistent_vm_is_undefined_while_hibernated(rig: Rig) -> None:
    config = await _hibernated(rig, rig.config(persistence=pb.VmConfig.PERSISTENCE_PERSISTENT))
    assert config.vm_id not in rig.fake.domains
    await rig.vms.create(config)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.fake.domains[config.vm_id].persistent
    await rig.vms.destroy(config.vm_id)
    assert config.vm_id not in rig.fake.domains


async def test_a_failed_save_leaves_the_vm_as_it_was(rig: Rig) -> None:
    rig.fake.save_error = "no space left on device"
    config = await rig.running()
    await rig.vms.pause(config.vm_id)
    await rig.vms.hibernate(config.vm_id)
    await rig.wait_for(config.vm_id, VmState.PAUSED)
    last = rig.journal.after(0)[-1].vm_state
    assert last.message == "hibernation failed: no space left on device"
    assert _files(rig) == {}


async def test_destroy_during_a_save_waits_then_deletes_the_saved_state(rig: Rig) -> None:
    rig.fake.save_gate = asyncio.Event()
    config = await rig.running()
    await rig.vms.hibernate(config.vm_id)
    with pytest.raises(VmStateConflict, match="it is SAVING_STATE"):
        await rig.vms.pause(config.vm_id)
    destroying = asyncio.ensure_future(rig.vms.destroy(config.vm_id))
    await asyncio.sleep(0.05)
    assert not destroying.done()
    rig.fake.save_gate.set()
    await asyncio.wait_for(destroying, 60)
    assert rig.state_names(config.vm_id)[-2:] == ["SUSPENDED", "DOWN"]
    last = rig.journal.after(0)[-1].vm_state
    assert (last.exit_reason, last.message) == (
        pb.HostVm.EXIT_REASON_DESTROYED,
        "destroyed; its saved state was deleted",
    )
    assert _files(rig) == {}


async def test_a_restore_that_fails_keeps_the_saved_state(rig: Rig) -> None:
    config = await _hibernated(rig)
    image = rig.layout.saved_dir / f"{config.vm_id}.img"
    image.write_bytes(b"garbage")
    await rig.vms.create(config)
    await rig.wait_for(config.vm_id, VmState.SUSPENDED)
    last = rig.journal.after(0)[-1].vm_state
    assert last.message.startswith("restore failed: ")
    assert image.exists()


async def test_a_suspended_vm_without_its_image_cannot_be_created(rig: Rig) -> None:
    config = await _hibernated(rig)
    (rig.layout.saved_dir / f"{config.vm_id}.img").unlink()
    with pytest.raises(FailedPrecondition, match="SUSPENDED but its saved state cannot be read"):
        await rig.vms.create(config)


async def test_only_running_or_paused_vms_hibernate(rig: Rig) -> None:
    config = await _hibernated(rig)
    with pytest.raises(
        VmStateConflict, match=f"cannot hibernate VM {config.vm_id}: it is SUSPENDED"
    ):
        await rig.vms.hibernate(config.vm_id)


async def test_a_hibernate_waits_for_the_end_of_the_start(rig: Rig) -> None:
    # The boot events make the VM RUNNING while its start job still runs.
    rig.fake.start_gate = asyncio.Event()
    config = rig.config()
    await rig.vms.create(config)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    hibernating = asyncio.ensure_future(rig.vms.hibernate(config.vm_id))
    await asyncio.sleep(0.05)
    assert not hibernating.done()
    rig.fake.start_gate.set()
    assert (await asyncio.wait_for(hibernating, 60)).state == VmState.SAVING_STATE
    await rig.wait_for(config.vm_id, VmState.SUSPENDED)
