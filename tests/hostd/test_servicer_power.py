"""HostAgentService end to end, the power verbs: pause, resume, reset, stats, reboot,
shutdown, hibernate.

A real grpc.aio server, hostd, libvirt's test driver (fixtures: served, small_journal).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from tests.support import served as serving
from tests.support.hostd_rig import vm_config
from tests.support.waiting import until

S = pb.HostVm
Running = tuple[pb.VmConfig, AsyncIterator[pb.WatchEventsResponse]]


@pytest.fixture
async def running(served: serving.Served, boot_files: tuple[str, str]) -> AsyncIterator[Running]:
    """A VM created and RUNNING, and the watch that saw it start (the test's watch)."""
    config = vm_config(boot_files[0])
    async with serving.watching(served) as events:
        await serving.create_running(served, config, events)
        yield config, events


async def test_pause_resume_reset_and_stats(served: serving.Served, running: Running) -> None:
    config, events = running
    stub = served.stub
    vm_id = config.vm_id
    await serving.expect_precondition(
        stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id)),
        f"cannot resume VM {vm_id}: it is RUNNING",
    )
    paused = await stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id))
    assert paused.vm.state == S.STATE_PAUSED
    await serving.expect_precondition(
        stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id)),
        f"cannot pause VM {vm_id}: it is PAUSED",
    )
    stats = (await stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id))).stats
    assert (stats.state, stats.domain_state, stats.domain_state_reason) == (
        S.STATE_PAUSED,
        "paused",
        "user",
    )
    resumed = await stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))
    assert resumed.vm.state == S.STATE_RUNNING
    # The test driver reports no reset: hostd knows one happened all the same.
    reset = await stub.ResetVm(pb.HostAgentServiceResetVmRequest(vm_id=vm_id))
    assert reset.vm.state == S.STATE_REBOOT_IN_PROGRESS
    assert await serving.states_until(events, vm_id, S.STATE_RUNNING) == [
        S.STATE_PAUSED,
        S.STATE_RUNNING,
    ]
    assert await serving.states_until(events, vm_id, S.STATE_RUNNING) == [
        S.STATE_REBOOT_IN_PROGRESS,
        S.STATE_RUNNING,
    ]


async def test_a_reboot_the_guest_ignores_ends_in_a_reset(
    served: serving.Served, running: Running
) -> None:
    config, events = running
    stub = served.stub
    vm_id = config.vm_id
    # The test driver's reboot does nothing; after the timeout hostd resets it.
    rebooting = await stub.RebootVm(
        pb.HostAgentServiceRebootVmRequest(vm_id=vm_id, timeout_seconds=1)
    )
    assert rebooting.vm.state == S.STATE_REBOOT_IN_PROGRESS
    assert await serving.states_until(events, vm_id, S.STATE_RUNNING) == [
        S.STATE_REBOOT_IN_PROGRESS,
        S.STATE_RUNNING,
    ]


async def test_shutdown(served: serving.Served, running: Running) -> None:
    config, events = running
    stub = served.stub
    await stub.ShutdownVm(pb.HostAgentServiceShutdownVmRequest(vm_id=config.vm_id))
    await serving.states_until(events, config.vm_id, S.STATE_DOWN)
    last = served.hostd.journal.after(0)[-1].vm_state
    assert (last.state, last.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_SHUTDOWN)


async def test_hibernate_then_create_restores(served: serving.Served, running: Running) -> None:
    config, events = running
    stub = served.stub
    vm_id = config.vm_id
    saved = served.hostd.layout.saved_dir
    hibernating = await stub.HibernateVm(pb.HostAgentServiceHibernateVmRequest(vm_id=vm_id))
    assert hibernating.vm.state == S.STATE_SAVING_STATE
    assert await serving.states_until(events, vm_id, S.STATE_SUSPENDED) == [
        S.STATE_SAVING_STATE,
        S.STATE_SUSPENDED,
    ]
    for name in (f"{vm_id}.img", f"{vm_id}.config"):
        assert (saved / name).stat().st_mode & 0o777 == 0o600
    listed = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
    (suspended,) = [vm for vm in listed.vms if vm.vm_id == vm_id]
    assert (suspended.state, suspended.exit_reason) == (S.STATE_SUSPENDED, S.EXIT_REASON_SAVED)
    await serving.expect_precondition(
        stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id)), "SUSPENDED"
    )
    host = await stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
    assert host.vms_suspended == 1

    # Only the id is read from a create that restores.
    again = pb.VmConfig(vm_id=vm_id)
    restoring = await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=again))
    assert restoring.vm.state == S.STATE_RESTORING_STATE
    assert await serving.states_until(events, vm_id, S.STATE_RUNNING) == [
        S.STATE_RESTORING_STATE,
        S.STATE_RUNNING,
    ]
    # RUNNING comes from libvirt's event, as restoreFlags returns: the files go then.
    await until(lambda: not any(saved.iterdir()), what="the saved state to be deleted")
