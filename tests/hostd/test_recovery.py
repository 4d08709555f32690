"""A restarted hostd takes over what its predecessor left, on the fake hypervisor.

Each test lets a first hostd (a VmService) run on the fake, stops it the way
kill -9 would leave things (the domains run on; no clean-up), then starts a
second on the same hypervisor and state directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import convert
from hostd.hypervisor import DomainState, LifecycleEvent, LifecycleKind, StopReason
from hostd.layout import StateLayout
from hostd.model import VmConfig, VmState
from tests.hostd.fakes import COMPLETE, PARTIAL, FakeHypervisor
from tests.support.hostd_rig import Rig, make_rig


async def _restart(rig: Rig, tmp_path: Path) -> Rig:
    await rig.vms.stop()
    return await make_rig(rig.fake, tmp_path, rig.kernel)


def _names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _saved_state_of(vm_id: str) -> list[str]:
    """The files of a whole saved state: the config beside the image."""
    return [f"{vm_id}.config", f"{vm_id}.img"]


def _report(rig: Rig) -> tuple[dict[str, tuple[int, str]], dict[str, str], list[tuple[str, str]]]:
    report = rig.vms.recovery_report
    return (
        {a.vm_id: (a.state, a.reason) for a in report.adopted},
        {e.name: e.reason for e in report.external},
        [(Path(c.what).name if "/" in c.what else c.what, c.reason) for c in report.cleaned_up],
    )


async def test_running_and_paused_domains_are_adopted_others_are_external(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    running = await first.running(request_id="req-1")
    paused = await first.running()
    await first.vms.pause(paused.vm_id)
    elsewhere = first.config()  # created by another hostd on the same libvirt
    other_layout = StateLayout(tmp_path / "other-hostd")
    xml = first.xml(elsewhere, other_layout)
    await first.fake.start(xml, persistent=False, paused=False)
    await first.fake.start(
        "<domain><name>not-ours</name><uuid>0e9f7e0c-1111-4d7e-9b8f-2f0e6d1c7a11</uuid></domain>",
        persistent=False,
        paused=False,
    )
    second = await _restart(first, tmp_path)
    try:
        assert {vm.vm_id: (vm.state, vm.message) for vm in second.vms.list()} == {
            running.vm_id: (VmState.RUNNING, "recovered"),
            paused.vm_id: (VmState.PAUSED, "recovered"),
        }
        adopted, external, cleaned = _report(second)
        assert adopted == {
            running.vm_id: (VmState.RUNNING, "its domain is running"),
            paused.vm_id: (VmState.PAUSED, "its domain is running"),
        }
        assert external == {
            f"vp-{elsewhere.name}": f"created by the hostd of {other_layout.root}",
            "not-ours": "no virtplane metadata: not created by hostd",
        }
        assert cleaned == []
        # The create's request id survived in the domain's metadata.
        assert (await second.vms.create(running, request_id="req-1")).state == VmState.RUNNING
        await second.vms.destroy(running.vm_id)
        assert running.vm_id not in second.fake.domains
    finally:
        await second.vms.stop()


async def test_a_definition_left_without_a_running_domain_is_removed(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    config = await first.running(first.config(persistence=pb.VmConfig.PERSISTENCE_PERSISTENT))
    await first.vms.stop()
    first.fake.stop(config.vm_id, StopReason.SHUTDOWN)  # while hostd was away
    first.fake.forget_events()
    second = await make_rig(first.fake, tmp_path, boot_files[0])
    try:
        assert second.vms.list() == []
        assert [(s.state, s.exit_reason, s.message) for s in _journaled(second)] == [
            (
                pb.HostVm.STATE_DOWN,
                pb.HostVm.EXIT_REASON_SHUTDOWN,
                "the guest powered off while hostd was away",
            )
        ]
        assert config.vm_id not in second.fake.domains
        _, _, cleaned = _report(second)
        assert cleaned == [
            (
                f"domain vp-{config.name}",
                "defined but not running: its start never happened, or it stopped while hostd "
                "was away",
            )
        ]
    finally:
        await second.vms.stop()


async def test_a_create_killed_between_define_and_start_is_journaled_down(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    config = first.config(persistence=pb.VmConfig.PERSISTENCE_PERSISTENT)
    await first.vms.stop()
    # What a kill -9 right after defineXML leaves: a definition that never ran.
    first.fake.define(first.xml(config))
    second = await make_rig(first.fake, tmp_path, boot_files[0])
    try:
        (down,) = _journaled(second)
        assert (down.vm_id, down.state, down.exit_reason, down.message) == (
            config.vm_id,
            pb.HostVm.STATE_DOWN,
            pb.HostVm.EXIT_REASON_START_FAILED,
            "its start, begun by a previous hostd, never happened",
        )
        assert config.vm_id not in second.fake.domains, "the stale definition is removed"
        assert second.vms.list() == []
        await second.vms.create(config)  # and the VM can be created again
        await second.wait_for(config.vm_id, VmState.RUNNING)
    finally:
        await second.vms.stop()


def _journaled(rig: Rig) -> list[pb.HostVm]:
    return [e.vm_state for e in rig.journal.after(0) if e.WhichOneof("payload") == "vm_state"]


async def test_a_hibernated_vm_is_found_suspended_and_restores(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    config = await first.running()
    await first.vms.hibernate(config.vm_id)
    await first.wait_for(config.vm_id, VmState.SUSPENDED)
    second = await _restart(first, tmp_path)
    try:
        assert second.vms.get(config.vm_id).state == VmState.SUSPENDED
        adopted, _, _ = _report(second)
        assert adopted[config.vm_id] == (
            VmState.SUSPENDED,
            "hibernated: its saved state is complete",
        )
        await second.vms.create(config)
        await second.wait_for(config.vm_id, VmState.RUNNING)
    finally:
        await second.vms.stop()


async def _killed_while_saving(
    fake: FakeHypervisor, tmp_path: Path, kernel: str
) -> tuple[Rig, VmConfig]:
    """A hostd killed (kill -9) while libvirt writes a hibernate image, and its successor."""
    first = await make_rig(fake, tmp_path, kernel)
    config = await first.running()
    await first.vms.hibernate(config.vm_id)
    await asyncio.sleep(0.01)  # libvirt is writing the image; it goes on without hostd
    return await _restart(first, tmp_path), config


async def test_a_save_begun_by_the_previous_hostd_is_followed_to_its_end(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    fake = FakeHypervisor(save_gate=asyncio.Event())
    second, config = await _killed_while_saving(fake, tmp_path, boot_files[0])
    try:
        assert second.vms.get(config.vm_id).state == VmState.SAVING_STATE
        adopted, _, _ = _report(second)
        assert adopted[config.vm_id][0] == VmState.SAVING_STATE
        # libvirt finishes the save hostd asked for: the image is whole, the domain gone.
        partial = second.layout.saved_dir / f"{config.vm_id}.img.partial"
        partial.write_bytes(COMPLETE + fake.domains[config.vm_id].xml.encode())
        del fake.domains[config.vm_id]
        await second.wait_for(config.vm_id, VmState.SUSPENDED)
        assert _names_in(second.layout.saved_dir) == _saved_state_of(config.vm_id)
    finally:
        await second.vms.stop()


async def test_a_save_that_fails_after_the_restart_leaves_the_vm_running(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    fake = FakeHypervisor(save_gate=asyncio.Event())
    second, config = await _killed_while_saving(fake, tmp_path, boot_files[0])
    try:
        domain = fake.domains[config.vm_id]
        domain.saving, domain.state = False, DomainState.RUNNING  # libvirt gave up the save
        await second.wait_for(config.vm_id, VmState.RUNNING)
        assert second.journal.after(0)[-1].vm_state.message == (
            "the save a previous hostd began failed"
        )
        assert list(second.layout.saved_dir.iterdir()) == []
    finally:
        await second.vms.stop()


async def test_saved_states_left_half_written_or_finished(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    finished, broken, unstarted = first.config(), first.config(), first.config()
    saved = first.layout.saved_dir
    for config in (finished, broken, unstarted):
        (saved / f"{config.vm_id}.config").write_bytes(convert.config_to_bytes(config))
    xml = first.xml(finished)
    # hostd was killed after libvirt finished one save, and during another; a third
    # never began. Neither domain exists any more.
    (saved / f"{finished.vm_id}.img.partial").write_bytes(COMPLETE + xml.encode())
    (saved / f"{broken.vm_id}.img.partial").write_bytes(PARTIAL + b"half")
    (saved / f"{finished.vm_id}.config.tmp").write_bytes(b"x")
    second = await _restart(first, tmp_path)
    try:
        assert {vm.vm_id: vm.state for vm in second.vms.list()} == {
            finished.vm_id: VmState.SUSPENDED
        }
        adopted, _, cleaned = _report(second)
        assert adopted == {
            finished.vm_id: (
                VmState.SUSPENDED,
                "hibernated: its save finished while hostd was away",
            )
        }
        assert sorted(cleaned) == sorted(
            [
                (f"{broken.vm_id}.img.partial", "half-written: the save did not finish"),
                (f"{unstarted.vm_id}.config", "a configuration whose save never began"),
                (f"{finished.vm_id}.config.tmp", "an unfinished temporary file"),
            ]
        )
        down = [e.vm_state for e in second.journal.after(0) if e.vm_state.vm_id == broken.vm_id]
        assert [(d.state, d.message) for d in down] == [
            (
                pb.HostVm.STATE_DOWN,
                "its hibernation did not complete: the half-written saved state was removed",
            )
        ]
        assert _names_in(saved) == _saved_state_of(finished.vm_id)
    finally:
        await second.vms.stop()


async def test_a_restore_interrupted_after_libvirt_finished(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    first = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    config = await first.running()
    await first.vms.hibernate(config.vm_id)
    await first.wait_for(config.vm_id, VmState.SUSPENDED)
    await first.vms.stop()
    image = first.layout.saved_dir / f"{config.vm_id}.img"
    await first.fake.restore(str(image), paused=False, persistent=False)  # then kill -9
    second = await make_rig(first.fake, tmp_path, boot_files[0])
    try:
        assert second.vms.get(config.vm_id).state == VmState.RUNNING
        _, _, cleaned = _report(second)
        assert (image.name, "the domain runs: this saved state is stale") in cleaned
        assert not image.exists()
    finally:
        await second.vms.stop()


async def _killed_while_libvirt_starts(tmp_path: Path, kernel: str) -> tuple[Rig, VmConfig]:
    """A first hostd asked libvirt to start a domain and died before the start finished."""
    first = await make_rig(FakeHypervisor(), tmp_path, kernel)
    config = first.config()
    await first.fake.start(first.xml(config), persistent=False, paused=True)
    domain = first.fake.domains[config.vm_id]
    domain.starting = True  # QEMU runs, its CPUs not yet: libvirt is still in createXML
    await first.vms.stop()
    first.fake.forget_events()  # sent before the new hostd connected
    return await make_rig(first.fake, tmp_path, kernel), config


async def test_a_start_libvirt_finishes_after_the_restart_is_followed(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    second, config = await _killed_while_libvirt_starts(tmp_path, boot_files[0])
    try:
        assert second.vms.get(config.vm_id).state == VmState.WAIT_FOR_LAUNCH
        adopted, _, _ = _report(second)
        assert adopted[config.vm_id] == (
            VmState.WAIT_FOR_LAUNCH,
            "its start, begun by a previous hostd, is under way",
        )
        domain = second.fake.domains[config.vm_id]
        domain.starting, domain.state = False, DomainState.RUNNING  # libvirt resumes the CPUs
        second.fake.emit(LifecycleEvent(config.vm_id, LifecycleKind.RESUMED))
        await second.wait_for(config.vm_id, VmState.RUNNING)
        assert second.state_names(config.vm_id) == ["WAIT_FOR_LAUNCH", "RUNNING"]
    finally:
        await second.vms.stop()


async def test_a_start_that_fails_after_the_restart_is_down(
    tmp_path: Path, boot_files: tuple[str, str]
) -> None:
    second, config = await _killed_while_libvirt_starts(tmp_path, boot_files[0])
    try:
        del second.fake.domains[config.vm_id]  # the emulator died; no event tells
        await second.wait_for(config.vm_id, VmState.DOWN)
        last = second.journal.after(0)[-1].vm_state
        assert (last.exit_reason, last.message) == (
            pb.HostVm.EXIT_REASON_START_FAILED,
            "its start, begun by a previous hostd, failed",
        )
    finally:
        await second.vms.stop()
