"""The VM registry and runner against the fake hypervisor: state rules and ordering quirks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from virtplane.errors import InvalidArgument
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import domxml
from hostd.builder import build_domain
from hostd.config import ChannelLimits
from hostd.errors import VmAlreadyExists, VmNotFound
from hostd.hypervisor import DomainState, EventsLost, LifecycleEvent, LifecycleKind, StopReason
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.virt_type import VirtType
from hostd.vms import RunnerSettings, VmRegistry
from tests.hostd.conftest import eventually, vm_config
from tests.hostd.fakes import FakeHypervisor

S = pb.HostVm
NO_CHANNEL = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)


@dataclass
class Rig:
    fake: FakeHypervisor
    journal: Journal
    registry: VmRegistry
    layout: StateLayout
    kernel: str

    def states(self, vm_id: str) -> list[tuple[int, int]]:
        return [
            (e.vm_state.state, e.vm_state.exit_reason)
            for e in self.journal.after(0)
            if e.WhichOneof("payload") == "vm_state" and e.vm_state.vm_id == vm_id
        ]

    def state(self, vm_id: str) -> int:
        return {vm.vm_id: vm.state for vm in self.registry.list()}.get(vm_id, S.STATE_DOWN)

    def xml(self, config: pb.VmConfig) -> str:
        return domxml.to_xml(build_domain(config, VirtType.QEMU, self.layout))


def _in_state(rig: Rig, vm_id: str, state: int) -> Callable[[], bool]:
    return lambda: rig.state(vm_id) == state


async def _rig(fake: FakeHypervisor, tmp_path: Path, kernel: str) -> Rig:
    journal = Journal(100)
    layout = StateLayout(tmp_path)
    registry = VmRegistry(fake, journal, RunnerSettings(VirtType.QEMU, layout, NO_CHANNEL))
    await registry.start()
    return Rig(fake, journal, registry, layout, kernel)


@pytest.fixture
async def rig(tmp_path: Path, boot_files: tuple[str, str]) -> AsyncIterator[Rig]:
    rig = await _rig(FakeHypervisor(), tmp_path, boot_files[0])
    yield rig
    await rig.registry.stop()


async def test_create_registers_then_runs_once(rig: Rig) -> None:
    config = vm_config(rig.kernel)
    vm = await rig.registry.create(config)
    assert vm == S(vm_id=config.vm_id, state=S.STATE_WAIT_FOR_LAUNCH)
    await eventually(lambda: rig.state(config.vm_id) == S.STATE_RUNNING, "RUNNING")
    # RESUMED and STARTED both arrived (before createXML returned): one RUNNING.
    assert rig.states(config.vm_id) == [
        (S.STATE_WAIT_FOR_LAUNCH, 0),
        (S.STATE_RUNNING, 0),
    ]
    assert rig.fake.started_xml and config.vm_id in rig.fake.started_xml[0]


async def test_a_failed_start_ends_down_with_libvirts_message(rig: Rig) -> None:
    rig.fake.start_error = "unable to stat: /nope"
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    await eventually(lambda: len(rig.states(config.vm_id)) == 2, "DOWN")
    last = rig.journal.after(0)[-1].vm_state
    assert (last.state, last.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_START_FAILED)
    assert "unable to stat: /nope" in last.message
    assert rig.registry.list() == []


async def test_an_existing_id_is_refused(rig: Rig) -> None:
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    with pytest.raises(VmAlreadyExists):
        await rig.registry.create(config)


async def test_an_invalid_config_registers_nothing(rig: Rig) -> None:
    config = vm_config(rig.kernel, memory_mib=0)
    with pytest.raises(InvalidArgument, match=r"config\.spec\.memory_mib"):
        await rig.registry.create(config)
    assert rig.registry.list() == []
    assert rig.journal.last_sequence == 0


async def test_destroying_an_unknown_vm(rig: Rig) -> None:
    with pytest.raises(VmNotFound):
        await rig.registry.destroy("6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")


async def test_destroy_ends_down_and_forgets(rig: Rig) -> None:
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    await eventually(lambda: rig.state(config.vm_id) == S.STATE_RUNNING, "RUNNING")
    await rig.registry.destroy(config.vm_id)
    assert rig.registry.list() == []
    assert rig.states(config.vm_id)[-1] == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
    with pytest.raises(VmNotFound):
        rig.registry.get(config.vm_id)


async def test_destroy_during_the_start_waits_for_it(rig: Rig) -> None:
    rig.fake.start_gate = asyncio.Event()
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    destroying = asyncio.ensure_future(rig.registry.destroy(config.vm_id))
    await eventually(lambda: rig.state(config.vm_id) == S.STATE_RUNNING, "RUNNING")
    assert not destroying.done()
    rig.fake.start_gate.set()
    await asyncio.wait_for(destroying, 60)
    assert rig.states(config.vm_id)[-1] == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
    assert config.vm_id not in rig.fake.domains


async def test_a_late_stop_of_an_earlier_domain_does_not_down_the_new_one(rig: Rig) -> None:
    rig.fake.boot_events = ()
    rig.fake.start_gate = asyncio.Event()
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    # The previous domain with this UUID stopped; its event arrives only now.
    rig.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.STOPPED, StopReason.DESTROYED))
    rig.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.STARTED))
    rig.fake.start_gate.set()
    await eventually(lambda: rig.state(config.vm_id) == S.STATE_RUNNING, "RUNNING")
    assert rig.states(config.vm_id) == [(S.STATE_WAIT_FOR_LAUNCH, 0), (S.STATE_RUNNING, 0)]


@pytest.mark.parametrize(
    ("kind", "reason", "exit_reason"),
    [
        (LifecycleKind.STOPPED, StopReason.SHUTDOWN, S.EXIT_REASON_SHUTDOWN),
        (LifecycleKind.STOPPED, StopReason.CRASHED, S.EXIT_REASON_CRASHED),
        (LifecycleKind.STOPPED, StopReason.FAILED, S.EXIT_REASON_CRASHED),
        (LifecycleKind.STOPPED, StopReason.MIGRATED, S.EXIT_REASON_MIGRATED),
        (LifecycleKind.STOPPED, StopReason.SAVED, S.EXIT_REASON_SAVED),
        (LifecycleKind.STOPPED, StopReason.DESTROYED, S.EXIT_REASON_DESTROYED),
        (LifecycleKind.CRASHED, StopReason.CRASHED, S.EXIT_REASON_CRASHED),
    ],
)
async def test_lifecycle_events_drive_the_state(
    rig: Rig, kind: LifecycleKind, reason: StopReason, exit_reason: int
) -> None:
    config = vm_config(rig.kernel)
    vm_id = config.vm_id
    await rig.registry.create(config)
    await eventually(lambda: rig.state(vm_id) == S.STATE_RUNNING, "RUNNING")
    for event_kind, expected in [
        (LifecycleKind.SUSPENDED, S.STATE_PAUSED),
        (LifecycleKind.SUSPENDED, S.STATE_PAUSED),
        (LifecycleKind.RESUMED, S.STATE_RUNNING),
        (LifecycleKind.OTHER, S.STATE_RUNNING),
        (LifecycleKind.SHUTDOWN, S.STATE_POWERING_DOWN),
    ]:
        rig.fake.emit(LifecycleEvent(vm_id, event_kind))
        await eventually(_in_state(rig, vm_id, expected), f"state {expected}")
    rig.fake.emit(LifecycleEvent(vm_id, kind, reason))
    await eventually(lambda: rig.registry.list() == [], "DOWN")
    assert rig.states(vm_id) == [
        (S.STATE_WAIT_FOR_LAUNCH, 0),
        (S.STATE_RUNNING, 0),
        (S.STATE_PAUSED, 0),
        (S.STATE_RUNNING, 0),
        (S.STATE_POWERING_DOWN, 0),
        (S.STATE_DOWN, exit_reason),
    ]


async def test_lost_events_trigger_a_resync(rig: Rig) -> None:
    gone, paused = vm_config(rig.kernel), vm_config(rig.kernel)
    for config in (gone, paused):
        await rig.registry.create(config)
        await eventually(_in_state(rig, config.vm_id, S.STATE_RUNNING), "RUNNING")
    await eventually(lambda: len(rig.fake.started_xml) == 2, "both started")
    await asyncio.sleep(0)
    # While events were lost: one domain vanished, one paused, one appeared.
    del rig.fake.domains[gone.vm_id]
    rig.fake.domains[paused.vm_id].state = DomainState.PAUSED
    newcomer = vm_config(rig.kernel)
    other = FakeHypervisor(boot_events=())
    await other.start_transient(rig.xml(newcomer))
    rig.fake.domains.update(other.domains)
    rig.fake.emit(EventsLost(dropped=3))
    await eventually(lambda: rig.state(newcomer.vm_id) == S.STATE_RUNNING, "the newcomer")
    assert rig.states(gone.vm_id)[-1] == (S.STATE_DOWN, S.EXIT_REASON_UNSPECIFIED)
    assert rig.state(paused.vm_id) == S.STATE_PAUSED


async def test_recovery_adopts_hostds_running_domains(tmp_path: Path, kernel: str) -> None:
    fake = FakeHypervisor(boot_events=())
    running, paused = vm_config(kernel), vm_config(kernel)
    layout = StateLayout(tmp_path)
    for config in (running, paused):
        await fake.start_transient(domxml.to_xml(build_domain(config, VirtType.QEMU, layout)))
    fake.domains[paused.vm_id].state = DomainState.PAUSED
    elsewhere = vm_config(kernel)  # created by another hostd on the same libvirt
    other_layout = StateLayout(tmp_path / "other-hostd")
    await fake.start_transient(domxml.to_xml(build_domain(elsewhere, VirtType.QEMU, other_layout)))
    foreign = await fake.start_transient(
        "<domain><name>not-ours</name><uuid>0e9f7e0c-1111-4d7e-9b8f-2f0e6d1c7a11</uuid></domain>"
    )
    rig = await _rig(fake, tmp_path, kernel)
    try:
        assert {vm.vm_id: vm.state for vm in rig.registry.list()} == {
            running.vm_id: S.STATE_RUNNING,
            paused.vm_id: S.STATE_PAUSED,
        }
        assert foreign not in {vm.vm_id for vm in rig.registry.list()}
        assert rig.registry.get(running.vm_id).message == "recovered"
        await rig.registry.destroy(running.vm_id)
        assert running.vm_id not in fake.domains
    finally:
        await rig.registry.stop()


@pytest.fixture
def kernel(boot_files: tuple[str, str]) -> str:
    return boot_files[0]


async def test_the_shutdown_a_destroy_causes_is_not_powering_down(rig: Rig) -> None:
    config = vm_config(rig.kernel)
    await rig.registry.create(config)
    await eventually(lambda: rig.state(config.vm_id) == S.STATE_RUNNING, "RUNNING")
    real_destroy = rig.fake.destroy

    async def destroy_like_qemu(uuid: str) -> None:
        rig.fake.emit(LifecycleEvent(uuid, LifecycleKind.SHUTDOWN))
        await eventually(lambda: rig.fake.pending_events == 0, "the pump to take SHUTDOWN")
        await real_destroy(uuid)

    rig.fake.destroy = destroy_like_qemu  # type: ignore[method-assign]
    await rig.registry.destroy(config.vm_id)
    assert [s for s, _ in rig.states(config.vm_id)] == [
        S.STATE_WAIT_FOR_LAUNCH,
        S.STATE_RUNNING,
        S.STATE_DOWN,
    ]
