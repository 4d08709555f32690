"""The create path and the event rules, on the fake hypervisor."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.defaults import mac_address
from hostd.errors import ConsoleNotSupported, VmAlreadyExists, VmNotFound
from hostd.hypervisor import DomainState, EventsLost, LifecycleEvent, LifecycleKind, StopReason
from hostd.model import ConsoleKind, ExitReason, Nic, NicKind, VmState, VmStatus
from tests.hostd.fakes import FakeHypervisor
from tests.support.hostd_rig import Rig, make_rig, with_spec
from tests.support.waiting import until
from virtplane_common.errors import InvalidArgument


async def test_create_registers_then_runs_once(rig: Rig) -> None:
    config = rig.config()
    vm = await rig.vms.create(config)
    assert vm == VmStatus(config.vm_id, VmState.WAIT_FOR_LAUNCH)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    # RESUMED and STARTED both arrived (before createXML returned): one RUNNING.
    assert rig.states(config.vm_id) == [(VmState.WAIT_FOR_LAUNCH, 0), (VmState.RUNNING, 0)]
    assert rig.fake.started_xml and config.vm_id in rig.fake.started_xml[0]


async def test_defaults_are_filled_in_before_the_domain_is_built(rig: Rig) -> None:
    config = with_spec(rig.config(), vcpus=0, nics=(Nic(kind=NicKind.USER),))
    await rig.running(config)
    (domain,) = rig.fake.domains.values()
    assert domain.metadata is not None
    kept = pb.VmConfig.FromString(domain.metadata.config)
    assert kept.spec.vcpus == 1
    assert kept.persistence == pb.VmConfig.PERSISTENCE_TRANSIENT
    assert kept.console.kind == pb.Console.KIND_SERIAL_FILE
    assert (kept.spec.nics[0].name, kept.spec.nics[0].mac_address) == (
        "nic0",
        mac_address(config.vm_id, 0),
    )
    assert "<vcpu>1</vcpu>" in domain.xml
    assert not domain.persistent


async def test_a_failed_start_ends_down_with_libvirts_message(rig: Rig) -> None:
    rig.fake.start_error = "unable to stat: /nope"
    config = rig.config()
    await rig.vms.create(config)
    await until(lambda: len(rig.states(config.vm_id)) == 2, what="DOWN")
    last = rig.journal.after(0)[-1].vm_state
    assert (last.state, last.exit_reason) == (
        pb.HostVm.STATE_DOWN,
        pb.HostVm.EXIT_REASON_START_FAILED,
    )
    assert "unable to stat: /nope" in last.message
    assert rig.vms.list() == []


async def test_the_same_request_returns_the_vm_it_made(rig: Rig) -> None:
    config = rig.config()
    first = await rig.vms.create(config, request_id="req-1")
    again = await rig.vms.create(config, request_id="req-1")
    assert again == first
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert (await rig.vms.create(config, request_id="req-1")).state == VmState.RUNNING
    assert len(rig.fake.started_xml) == 1


async def test_a_repeated_request_never_starts_a_vm_again(rig: Rig) -> None:
    config = await rig.running(request_id="req-1")
    await rig.vms.destroy(config.vm_id)
    repeated = await rig.vms.create(config, request_id="req-1")
    assert (repeated.state, repeated.exit_reason) == (VmState.DOWN, ExitReason.DESTROYED)
    assert len(rig.fake.started_xml) == 1
    await rig.vms.create(config, request_id="req-2")  # a new request starts it
    await rig.wait_for(config.vm_id, VmState.RUNNING)


async def test_another_request_for_an_existing_vm_is_already_exists(rig: Rig) -> None:
    config = await rig.running(request_id="req-1")
    for request_id in ("req-2", ""):
        with pytest.raises(VmAlreadyExists, match=r"already exists on this host \(RUNNING\)"):
            await rig.vms.create(config, request_id=request_id)
    # The existing-VM check comes before validation.
    config = with_spec(config, memory_mib=0)
    with pytest.raises(VmAlreadyExists):
        await rig.vms.create(config, request_id="req-2")


async def test_an_invalid_config_registers_nothing(rig: Rig) -> None:
    config = with_spec(rig.config(), memory_mib=0)
    config = replace(config, console=ConsoleKind.SPICE)  # validation comes first
    with pytest.raises(InvalidArgument, match=r"config\.spec\.memory_mib"):
        await rig.vms.create(config)
    assert rig.vms.list() == []
    assert rig.journal.last_sequence == 0


async def test_a_bad_vm_id_never_reaches_a_path(rig: Rig) -> None:
    config = rig.config(vm_id="../../etc/passwd")
    with pytest.raises(InvalidArgument, match=r"config\.vm_id"):
        await rig.vms.create(config)


async def test_an_unsupported_console_names_those_supported(rig: Rig) -> None:
    config = replace(rig.config(), console=ConsoleKind.SPICE)
    with pytest.raises(ConsoleNotSupported) as caught:
        await rig.vms.create(config)
    assert str(caught.value) == (
        "config.console.kind: KIND_SPICE is not supported on this host; "
        "supported: KIND_NONE, KIND_SERIAL_FILE, KIND_VNC"
    )
    assert rig.vms.list() == []
    await rig.running(replace(config, console=ConsoleKind.VNC))
    assert "<graphics" in rig.fake.started_xml[-1]


async def test_without_a_display_on_the_host_vnc_is_refused(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    rig = await make_rig(FakeHypervisor(graphics=frozenset()), tmp_path, boot_files[0])
    try:
        config = replace(rig.config(), console=ConsoleKind.VNC)
        with pytest.raises(ConsoleNotSupported, match=r"supported: KIND_NONE, KIND_SERIAL_FILE$"):
            await rig.vms.create(config)
        assert rig.vms.consoles == (ConsoleKind.NONE, ConsoleKind.SERIAL_FILE)
    finally:
        await rig.vms.stop()


async def test_a_paused_start_is_never_running(rig: Rig) -> None:
    config = rig.config()
    await rig.vms.create(config, start_paused=True)
    await rig.wait_for(config.vm_id, VmState.PAUSED)
    assert rig.state_names(config.vm_id) == ["WAIT_FOR_LAUNCH", "PAUSED"]
    await rig.vms.resume(config.vm_id)
    assert rig.state(config.vm_id) == VmState.RUNNING


async def test_a_persistent_vm_is_undefined_when_it_goes_down(rig: Rig) -> None:
    config = rig.config(persistence=pb.VmConfig.PERSISTENCE_PERSISTENT)
    await rig.running(config)
    assert rig.fake.domains[config.vm_id].persistent
    rig.fake.stop(config.vm_id, StopReason.SHUTDOWN)  # the guest powered off
    await rig.wait_for(config.vm_id, VmState.DOWN)
    # A new create of the same VM waits for the old definition to go.
    await rig.vms.create(config)
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    await rig.vms.destroy(config.vm_id)
    assert config.vm_id not in rig.fake.domains


async def test_destroying_an_unknown_vm(rig: Rig) -> None:
    with pytest.raises(VmNotFound):
        await rig.vms.destroy("6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")


async def test_destroy_ends_down_and_forgets(rig: Rig) -> None:
    config = await rig.running()
    await rig.vms.destroy(config.vm_id)
    assert rig.vms.list() == []
    assert rig.states(config.vm_id)[-1] == (VmState.DOWN, ExitReason.DESTROYED)
    with pytest.raises(VmNotFound):
        rig.vms.get(config.vm_id)


async def test_destroy_during_the_start_waits_for_it(rig: Rig) -> None:
    rig.fake.start_gate = asyncio.Event()
    config = rig.config()
    await rig.vms.create(config)
    destroying = asyncio.ensure_future(rig.vms.destroy(config.vm_id))
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert not destroying.done()
    rig.fake.start_gate.set()
    await asyncio.wait_for(destroying, 60)
    assert rig.states(config.vm_id)[-1] == (VmState.DOWN, ExitReason.DESTROYED)
    assert config.vm_id not in rig.fake.domains


async def test_a_late_stop_of_an_earlier_domain_does_not_down_the_new_one(rig: Rig) -> None:
    rig.fake.boot_events = ()
    rig.fake.start_gate = asyncio.Event()
    config = rig.config()
    await rig.vms.create(config)
    # The previous domain with this UUID stopped; its event arrives only now.
    rig.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.STOPPED, StopReason.DESTROYED))
    rig.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.STARTED))
    rig.fake.start_gate.set()
    await rig.wait_for(config.vm_id, VmState.RUNNING)
    assert rig.states(config.vm_id) == [(VmState.WAIT_FOR_LAUNCH, 0), (VmState.RUNNING, 0)]


@pytest.mark.parametrize(
    ("kind", "reason", "exit_reason"),
    [
        (LifecycleKind.STOPPED, StopReason.SHUTDOWN, ExitReason.SHUTDOWN),
        (LifecycleKind.STOPPED, StopReason.CRASHED, ExitReason.CRASHED),
        (LifecycleKind.STOPPED, StopReason.FAILED, ExitReason.CRASHED),
        (LifecycleKind.STOPPED, StopReason.MIGRATED, ExitReason.MIGRATED),
        (LifecycleKind.STOPPED, StopReason.SAVED, ExitReason.SAVED),
        (LifecycleKind.STOPPED, StopReason.DESTROYED, ExitReason.DESTROYED),
        (LifecycleKind.CRASHED, StopReason.CRASHED, ExitReason.CRASHED),
    ],
)
async def test_lifecycle_events_drive_the_state(
    rig: Rig, kind: LifecycleKind, reason: StopReason, exit_reason: int
) -> None:
    vm_id = (await rig.running()).vm_id
    for event_kind, expected in [
        (LifecycleKind.SUSPENDED, VmState.PAUSED),
        (LifecycleKind.SUSPENDED, VmState.PAUSED),
        (LifecycleKind.RESUMED, VmState.RUNNING),
        (LifecycleKind.OTHER, VmState.RUNNING),
        (LifecycleKind.SHUTDOWN, VmState.POWERING_DOWN),
    ]:
        rig.fake.emit(LifecycleEvent(vm_id, event_kind))
        await rig.wait_for(vm_id, expected)
    rig.fake.emit(LifecycleEvent(vm_id, kind, reason))
    await until(lambda: rig.vms.list() == [], what="DOWN")
    assert rig.states(vm_id) == [
        (VmState.WAIT_FOR_LAUNCH, 0),
        (VmState.RUNNING, 0),
        (VmState.PAUSED, 0),
        (VmState.RUNNING, 0),
        (VmState.POWERING_DOWN, 0),
        (VmState.DOWN, exit_reason),
    ]


async def test_lost_events_trigger_a_resync(rig: Rig) -> None:
    gone, paused = await rig.running(), await rig.running()
    # While events were lost: one domain vanished, one paused, one appeared.
    del rig.fake.domains[gone.vm_id]
    rig.fake.domains[paused.vm_id].state = DomainState.PAUSED
    newcomer = rig.config()
    other = FakeHypervisor(boot_events=())
    await other.start(rig.xml(newcomer), persistent=False, paused=False)
    rig.fake.domains.update(other.domains)
    rig.fake.emit(EventsLost(dropped=3))
    await rig.wait_for(newcomer.vm_id, VmState.RUNNING)
    assert rig.states(gone.vm_id)[-1] == (VmState.DOWN, ExitReason.UNSPECIFIED)
    assert rig.state(paused.vm_id) == VmState.PAUSED


async def test_a_resync_keeps_what_hostd_asked_for(rig: Rig) -> None:
    rig.fake.ignores_acpi = True
    rebooting, stopping = await rig.running(), await rig.running()
    await rig.vms.reboot(rebooting.vm_id)
    await rig.vms.shutdown(stopping.vm_id)
    rig.fake.emit(EventsLost(dropped=1))
    await until(lambda: rig.fake.pending_events == 0, what="the resync")
    await asyncio.sleep(0.05)
    assert rig.state(rebooting.vm_id) == VmState.REBOOT_IN_PROGRESS
    assert rig.state(stopping.vm_id) == VmState.POWERING_DOWN


async def test_the_shutdown_a_destroy_causes_is_not_powering_down(rig: Rig) -> None:
    config = await rig.running()
    real_act = rig.fake.act

    async def destroy_like_qemu(uuid: str, action: object) -> None:
        rig.fake.emit(LifecycleEvent(uuid, LifecycleKind.SHUTDOWN))
        await until(lambda: rig.fake.pending_events == 0, what="the pump to take SHUTDOWN")
        await real_act(uuid, action)  # type: ignore[arg-type]

    rig.fake.act = destroy_like_qemu  # type: ignore[method-assign]
    await rig.vms.destroy(config.vm_id)
    assert rig.state_names(config.vm_id) == ["WAIT_FOR_LAUNCH", "RUNNING", "DOWN"]
