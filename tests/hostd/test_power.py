"""Shutdown, reboot, reset, pause and resume on the fake hypervisor."""

from __future__ import annotations

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.errors import VmNotFound, VmStateConflict
from hostd.hypervisor import LifecycleEvent, LifecycleKind
from hostd.model import ExitReason, VmState
from tests.support.hostd_rig import Rig
from tests.support.waiting import until


async def test_shutdown_goes_powering_down_then_down(rig: Rig) -> None:
    config = await rig.running()
    vm = await rig.vms.shutdown(config.vm_id)
    assert vm.state in (VmState.POWERING_DOWN, VmState.DOWN)
    await rig.wait_for(config.vm_id, VmState.DOWN)
    assert rig.state_names(config.vm_id)[-2:] == ["POWERING_DOWN", "DOWN"]
    assert rig.states(config.vm_id)[-1] == (VmState.DOWN, ExitReason.SHUTDOWN)


async def test_a_guest_that_ignores_the_power_button_is_destroyed_after_the_timeout(
    rig: Rig,
) -> None:
    rig.fake.ignores_acpi = True
    config = await rig.running()
    vm = await rig.vms.shutdown(config.vm_id, timeout_seconds=1)
    # The fake has no guest agent: the power button it is.
    assert (vm.state, vm.message) == (
        VmState.POWERING_DOWN,
        "shutting down on request, through ACPI",
    )
    again = await rig.vms.shutdown(config.vm_id)  # already on its way: the deadline stands
    assert again.state == VmState.POWERING_DOWN
    await rig.wait_for(config.vm_id, VmState.DOWN)
    last = rig.journal.after(0)[-1].vm_state
    assert (last.exit_reason, last.message) == (
        pb.HostVm.EXIT_REASON_DESTROYED,
        "did not power off within 1 s; destroyed",
    )
    assert config.vm_id not in rig.fake.domains


_BOOTED_THEN_REBOOTED = ["WAIT_FOR_LAUNCH", "RUNNING", "REBOOT_IN_PROGRESS", "RUNNING"]
"""The states of a VM that started and then rebooted once."""


async def test_a_reboot_is_never_a_stop(rig: Rig) -> None:
    config = await rig.running()
    vm = await rig.vms.reboot(config.vm_id)
    assert vm.state == VmState.REBOOT_IN_PROGRESS
    # QEMU resets the guest several times in a burst, with no lifecycle event.
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.state_names(config.vm_id) == _BOOTED_THEN_REBOOTED


async def test_a_reboot_the_guest_ignores_ends_in_a_reset(rig: Rig) -> None:
    rig.fake.ignores_acpi = True
    config = await rig.running()
    await rig.vms.reboot(config.vm_id, timeout_seconds=1)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.state_names(config.vm_id)[-2:] == ["REBOOT_IN_PROGRESS", "RUNNING"]


async def test_a_reboot_from_inside_the_guest(rig: Rig) -> None:
    config = await rig.running()
    for _ in range(5):  # one reboot: a burst of resets
        rig.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.REBOOTED))
    await rig.wait_for(config.vm_id, VmState.REBOOT_IN_PROGRESS)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.state_names(config.vm_id) == _BOOTED_THEN_REBOOTED
    assert rig.journal.after(0)[-1].vm_state.message == "rebooted"


async def test_reset(rig: Rig) -> None:
    config = await rig.running()
    vm = await rig.vms.reset(config.vm_id)
    assert vm.state == VmState.REBOOT_IN_PROGRESS
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    # A paused guest stays paused through a reset.
    await rig.vms.pause(config.vm_id)
    assert (await rig.vms.reset(config.vm_id)).state == VmState.PAUSED


async def test_pause_and_resume_answer_with_the_new_state(rig: Rig) -> None:
    config = await rig.running()
    assert (await rig.vms.pause(config.vm_id)).state == VmState.PAUSED
    assert (await rig.vms.resume(config.vm_id)).state == VmState.RUNNING
    assert rig.state_names(config.vm_id) == ["WAIT_FOR_LAUNCH", "RUNNING", "PAUSED", "RUNNING"]


async def test_a_hypervisor_that_sends_no_event_still_pauses(rig: Rig) -> None:
    config = await rig.running()
    real_act = rig.fake.act

    async def act_quietly(uuid: str, action: object) -> None:
        await real_act(uuid, action)  # type: ignore[arg-type]
        while rig.fake.pending_events:  # the event never arrives
            await rig.fake._queue.get()

    rig.fake.act = act_quietly  # type: ignore[method-assign]
    assert (await rig.vms.pause(config.vm_id)).state == VmState.PAUSED


@pytest.mark.parametrize(
    ("verb", "state_name"),
    [("resume", "RUNNING"), ("pause", "PAUSED"), ("reboot", "PAUSED"), ("shutdown", "PAUSED")],
)
async def test_a_verb_in_the_wrong_state_names_it(rig: Rig, verb: str, state_name: str) -> None:
    config = await rig.running()
    if state_name == "PAUSED":
        await rig.vms.pause(config.vm_id)
    words = {"shutdown": "shut down"}.get(verb, verb)
    with pytest.raises(VmStateConflict) as caught:
        await getattr(rig.vms, verb)(config.vm_id)
    assert str(caught.value) == f"cannot {words} VM {config.vm_id}: it is {state_name}"


async def test_verbs_on_an_unknown_vm(rig: Rig) -> None:
    for verb in ("shutdown", "reboot", "reset", "pause", "resume", "hibernate", "stats"):
        with pytest.raises(VmNotFound):
            await getattr(rig.vms, verb)("6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")


async def test_a_vm_in_the_middle_of_its_start_refuses_verbs(rig: Rig) -> None:
    rig.fake.boot_events = ()
    config = rig.config()
    await rig.vms.create(config)
    with pytest.raises(VmStateConflict, match="it is WAIT_FOR_LAUNCH"):
        await rig.vms.pause(config.vm_id)
    await until(lambda: rig.state(config.vm_id) != VmState.WAIT_FOR_LAUNCH, what="the start")


async def test_stats(rig: Rig) -> None:
    config = await rig.running()
    vm, stats = await rig.vms.stats(config.vm_id)
    assert vm.state == VmState.RUNNING
    assert (stats.state_name, stats.state_reason) == ("running", "booted")
    assert rig.vms.counts() == (1, 0)


async def test_a_guest_that_powers_off_at_once_leaves_no_deadline_behind(rig: Rig) -> None:
    config = await rig.running()
    vm = rig.vms._registry.lookup(config.vm_id)
    await rig.vms.shutdown(config.vm_id)  # the fake's guest powers off at once
    await rig.wait_for(config.vm_id, VmState.DOWN)
    await until(lambda: vm.timer is None or vm.timer.done(), what="no deadline left running")
