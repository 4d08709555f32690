"""libvirtd lost and found again, on the fake hypervisor: refusals meanwhile, then a resync."""

from __future__ import annotations

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import HypervisorUnavailable
from hostd.hypervisor import ConnectionLost, DomainState, Reconnected, StopReason
from tests.hostd.conftest import eventually
from tests.hostd.rig import Rig

S = pb.HostVm


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
    await eventually(lambda: bool(rig.vms.hypervisor_unreachable), "libvirt to count as lost")
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
    await eventually(lambda: heard[-1:] == [(True, "")], "libvirt to count as found")
    assert rig.vms.hypervisor_unreachable == ""

    down = _last(rig, persistent.vm_id)
    assert (down.state, down.exit_reason, down.message) == (
        S.STATE_DOWN,
        S.EXIT_REASON_SHUTDOWN,
        "the guest powered off (libvirt was unreachable: its stop was not seen)",
    )
    gone = _last(rig, killed.vm_id)
    assert (gone.state, gone.exit_reason, gone.message) == (
        S.STATE_DOWN,
        S.EXIT_REASON_UNSPECIFIED,
        "the domain is gone; libvirt was unreachable, so how it stopped is unknown",
    )
    assert rig.state(kept.vm_id) == S.STATE_PAUSED
    await rig.vms.resume(kept.vm_id)  # and verbs work again
    await rig.wait_for(kept.vm_id, S.STATE_RUNNING)


def _last(rig: Rig, vm_id: str) -> pb.HostVm:
    return [e.vm_state for e in rig.journal.after(0) if e.vm_state.vm_id == vm_id][-1]
