"""libvirtd lost and found again, on the fake hypervisor: refusals meanwhile, then a resync."""

from __future__ import annotations

import asyncio

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import HypervisorUnavailable
from hostd.hypervisor import ConnectionLost, DomainState, Reconnected, StopReason
from hostd.model import VmState
from tests.support.hostd_rig import Rig
from tests.support.waiting import until


async def test_while_libvirt_is_away_creates_are_refused_then_a_resync_catches_up(
    rig: Rig,
) -> None:
    kept = await rig.running()
    killed = await rig.running()
    persistent = await rig.running(rig.config(persistence=pb.VmConfig.PERSISTENCE_PERSISTENT))
    heard: list[tuple[bool, str]] = []

    async def listener(reachable: bool, reason: str) -> None:
        heard.append((reachable, reason))

    rig.vms.watch_hypervisor(listener)
    rig.fake.emit(ConnectionLost("libvirtd closed the connection"))
    await until(lambda: bool(rig.vms.hypervisor_unreachable), what="libvirt to count as lost")
    assert heard == [(False, "libvirtd closed the connection")]
    with pytest.raises(HypervisorUnavailable, match=r"libvirt is unreachable \(libvirtd closed"):
        await rig.vms.create(rig.config())

    # Meanwhile, unseen: one domain dies, one persistent VM's guest powers off,
    # one is paused by someone else.
    rig.fake.stop(killed.vm_id, StopReason.CRASHED)
    rig.fake.stop(persistent.vm_id, StopReason.SHUTDOWN)
    rig.fake.domains[kept.vm_id].state = DomainState.PAUSED
    rig.fake.forget_events()
    rig.fake.emit(Reconnected(1.5))
    await until(lambda: heard[-1:] == [(True, "")], what="libvirt to count as found")
    assert rig.vms.hypervisor_unreachable == ""

    down = _last(rig, persistent.vm_id)
    assert (down.state, down.exit_reason, down.message) == (
        pb.HostVm.STATE_DOWN,
        pb.HostVm.EXIT_REASON_SHUTDOWN,
        "the guest powered off (libvirt was unreachable: its stop was not seen)",
    )
    gone = _last(rig, killed.vm_id)
    assert (gone.state, gone.exit_reason, gone.message) == (
        pb.HostVm.STATE_DOWN,
        pb.HostVm.EXIT_REASON_UNSPECIFIED,
        "the domain is gone; libvirt was unreachable, so how it stopped is unknown",
    )
    assert rig.state(kept.vm_id) == VmState.PAUSED
    await rig.vms.resume(kept.vm_id)  # and verbs work again
    await rig.wait_for(kept.vm_id, VmState.RUNNING)


def _last(rig: Rig, vm_id: str) -> pb.HostVm:
    return [e.vm_state for e in rig.journal.after(0) if e.vm_state.vm_id == vm_id][-1]


@pytest.mark.parametrize(
    ("lost", "state", "image_kept"),
    [("before", VmState.SUSPENDED, True), ("after", VmState.RUNNING, False)],
)
async def test_a_restore_cut_off_by_the_loss_is_settled_once_libvirt_answers(
    rig: Rig, lost: str, state: VmState, image_kept: bool
) -> None:
    config = await rig.running()
    await rig.vms.hibernate(config.vm_id)
    await rig.wait_for(config.vm_id, VmState.SUSPENDED)
    rig.fake.restore_lost, rig.fake.unreachable = lost, True
    await rig.vms.create(config)
    await asyncio.sleep(0.1)  # the restore call failed; libvirt does not answer yet
    assert rig.state(config.vm_id) in (VmState.RESTORING_STATE, VmState.RUNNING)
    assert (rig.layout.saved_dir / f"{config.vm_id}.img").exists()
    rig.fake.unreachable = False
    await rig.wait_for(config.vm_id, state)
    await until(
        lambda: (rig.layout.saved_dir / f"{config.vm_id}.img").exists() == image_kept,
        what="the image kept or deleted",
    )
    if image_kept:
        assert rig.vms.get(config.vm_id).message == (
            "restore failed: libvirt was lost during it; the saved state is kept"
        )
