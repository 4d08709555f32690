"""hostd's verbs on real guests (qemu:///system, TCG), through its gRPC API.

One hostd serves the module. Its guests boot together at the start: one
shared by the tests that leave it running (its disks, pause and resume,
statistics, reset, reboot), and one for each test that ends or changes its
VM (shutdown, hibernate and restore with a disk, persistent and paused).
Waits are on conditions with a generous deadline; durations are printed (run
with -s), never asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.config import HostdConfig
from hostd.server import Hostd
from tests.hostd.guest_configs import guest_config
from tests.support.connect import TEST_HOST_ID, hostd_channel, new_identity
from tests.support.events import HostEvents
from tests.support.real import IMAGE_ROOTS, GuestImage
from tests.support.virt import disk_image, disks_of, live_xml, remove_domains

S = pb.HostVm
BOOT_TIMEOUT = 240.0
"""Generous: a TCG guest reports in ~5-8 s alone; several boot at once here."""

pytestmark = pytest.mark.guest


@dataclass
class Host:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub
    watch: HostEvents
    uri: str
    guests: dict[str, pb.VmConfig] = field(default_factory=dict)


def _names(states: list[S]) -> list[str]:
    return [S.State.Name(s.state).removeprefix("STATE_") for s in states]


def _seconds(first: pb.HostEvent, then: pb.HostEvent) -> float:
    return (then.time.ToNanoseconds() - first.time.ToNanoseconds()) / 1e9


def _libvirt_domain(uri: str, vm_id: str) -> tuple[bool, bool] | None:
    """(active, persistent) of the domain, or None when libvirt has none."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(vm_id)
        return bool(dom.isActive()), bool(dom.isPersistent())
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def images(state_root: Path) -> dict[str, str]:
    """Empty disk images for the guests, by file name (removed with state_root)."""
    state_root.chmod(0o755)  # QEMU, another user, reaches the images below it
    folder = state_root / "images"
    folder.mkdir()
    folder.chmod(0o755)
    names = {"data.img": "raw", "seed.qcow2": "qcow2", "hibernate.qcow2": "qcow2"}
    return {name: disk_image(folder / name, fmt) for name, fmt in names.items()}


@pytest.fixture(scope="module")
async def host(
    system_libvirt: str, guest_image: GuestImage, state_root: Path, images: dict[str, str]
) -> AsyncIterator[Host]:
    pki = new_identity(state_root / "s")
    hostd = Hostd(
        HostdConfig("127.0.0.1:0", system_libvirt, state_root / "s", image_roots=IMAGE_ROOTS)
    )
    port = await hostd.start()
    channel = hostd_channel(f"127.0.0.1:{port}", pki, TEST_HOST_ID)
    host = Host(
        hostd,
        pb_grpc.HostAgentServiceStub(channel),
        HostEvents.of_journal(hostd.journal, BOOT_TIMEOUT),
        system_libvirt,
    )
    roles = {"shared": False, "shutdown": False, "hibernate": False, "persistent": True}
    host.guests = {role: guest_config(guest_image, f"real-{role}") for role in roles}
    host.guests["persistent"].persistence = pb.VmConfig.PERSISTENCE_PERSISTENT
    host.guests["shared"].spec.disks.extend(
        [
            vm_pb2.Disk(name="data", path=images["data.img"]),
            vm_pb2.Disk(
                name="seed",
                path=images["seed.qcow2"],
                format=vm_pb2.Disk.FORMAT_QCOW2,
                read_only=True,
            ),
        ]
    )
    host.guests["hibernate"].spec.disks.append(
        vm_pb2.Disk(name="data", path=images["hibernate.qcow2"], format=vm_pb2.Disk.FORMAT_QCOW2)
    )
    try:
        since = host.watch.mark()
        await asyncio.gather(
            *(
                host.stub.CreateVm(
                    pb.HostAgentServiceCreateVmRequest(
                        config=config, request_id=f"boot-{role}", start_paused=roles[role]
                    )
                )
                for role, config in host.guests.items()
            )
        )
        await asyncio.gather(
            *(
                host.watch.report(config.vm_id, since, responding=True)
                for role, config in host.guests.items()
                if not roles[role]
            )
        )
        yield host
    finally:
        host.watch.stop()
        await asyncio.gather(*(hostd.vms.destroy(vm.vm_id) for vm in hostd.vms.list()))
        await channel.close(None)
        await hostd.stop(grace=1)
        vm_ids = [c.vm_id for c in host.guests.values()]
        await asyncio.to_thread(remove_domains, system_libvirt, vm_ids)


async def _precondition(call: Awaitable[object], message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == message


async def test_the_guests_booted_and_report(host: Host) -> None:
    vm_id = host.guests["shared"].vm_id
    assert _names(host.watch.states(vm_id)) == ["WAIT_FOR_LAUNCH", "RUNNING"]
    assert await asyncio.to_thread(_libvirt_domain, host.uri, vm_id) == (True, False)
    report = host.watch.reports(vm_id)[-1].guest_report.guest
    addresses = [a.split("/")[0] for i in report.interfaces for a in i.ipv4_addresses]
    assert "10.0.2.15" in addresses
    assert report.os_name
    assert report.last_report_time.seconds > 0


async def test_the_disks_are_attached_and_the_guest_reads_them(host: Host) -> None:
    config = host.guests["shared"]
    vm_id = config.vm_id
    data, seed = (d.path for d in config.spec.disks)
    live = await asyncio.to_thread(live_xml, host.uri, vm_id)
    assert disks_of(live) == [("raw", data, "vda", False), ("qcow2", seed, "vdb", True)]
    stats = (await host.stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id))).stats
    assert [(d.name, d.path) for d in stats.disks] == [("vda", data), ("vdb", seed)]
    # The guest's kernel (virtio_blk) read each disk's partition table as it booted.
    assert all(d.read_requests > 0 and d.read_bytes > 0 for d in stats.disks), stats.disks
    assert host.watch.reports(vm_id), "the guest runs and reports"


async def test_pause_resume_and_stats(host: Host) -> None:
    vm_id = host.guests["shared"].vm_id
    stub = host.stub
    running = (await stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id))).stats
    assert (running.state, running.domain_state) == (S.STATE_RUNNING, "running")
    assert running.cpu_time_ns > 0
    assert running.vcpus == 1
    assert running.memory_current_kib == running.memory_maximum_kib == 256 * 1024
    assert running.memory_rss_kib > 0
    assert list(running.nics) == []  # user-mode networking has no host device

    await _precondition(
        stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id)),
        f"cannot resume VM {vm_id}: it is RUNNING",
    )
    paused = await stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id))
    assert paused.vm.state == S.STATE_PAUSED
    stats = (await stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id))).stats
    assert (stats.state, stats.domain_state, stats.domain_state_reason) == (
        S.STATE_PAUSED,
        "paused",
        "user",
    )
    assert stats.cpu_time_ns >= running.cpu_time_ns
    await _precondition(
        stub.RebootVm(pb.HostAgentServiceRebootVmRequest(vm_id=vm_id)),
        f"cannot reboot VM {vm_id}: it is PAUSED",
    )
    resumed = await stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))
    assert resumed.vm.state == S.STATE_RUNNING
    stats = (await stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id))).stats
    assert (stats.domain_state, stats.domain_state_reason) == ("running", "unpaused")


async def test_a_reboot_is_never_a_stop(host: Host) -> None:
    vm_id = host.guests["shared"].vm_id
    before = host.watch.reports(vm_id)[-1].guest_report.guest.uptime_seconds
    since = host.watch.mark()
    rebooting = await host.stub.RebootVm(pb.HostAgentServiceRebootVmRequest(vm_id=vm_id))
    assert rebooting.vm.state == S.STATE_REBOOT_IN_PROGRESS
    states = await host.watch.state(vm_id, S.STATE_RUNNING, since)
    assert _names(states) == ["REBOOT_IN_PROGRESS", "RUNNING"]
    assert "through the guest agent" in states[0].message  # the agent was responsive
    back = host.watch.when(vm_id, S.STATE_RUNNING, since)
    report = await host.watch.report(vm_id, host.watch.after(back), responding=True)
    assert report.guest_report.guest.uptime_seconds < before, "the guest booted again"
    assert _libvirt_domain(host.uri, vm_id) == (True, False)
    asked = host.watch.when(vm_id, S.STATE_REBOOT_IN_PROGRESS, since)
    print(
        f"\nreboot: RUNNING again {_seconds(asked, back):.1f} s after REBOOT_IN_PROGRESS,"
        f" guest agent reporting {_seconds(asked, report):.1f} s after it"
    )


async def test_a_reset_reboots_the_guest_at_once(host: Host) -> None:
    vm_id = host.guests["shared"].vm_id
    since = host.watch.mark()
    reset = await host.stub.ResetVm(pb.HostAgentServiceResetVmRequest(vm_id=vm_id))
    assert reset.vm.state == S.STATE_REBOOT_IN_PROGRESS
    states = await host.watch.state(vm_id, S.STATE_RUNNING, since)
    assert _names(states) == ["REBOOT_IN_PROGRESS", "RUNNING"]
    back = host.watch.when(vm_id, S.STATE_RUNNING, since)
    report = await host.watch.report(vm_id, host.watch.after(back), responding=True)
    assert report.guest_report.guest.uptime_seconds < 60


async def test_host_stats(host: Host) -> None:
    stats = await host.stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
    assert stats.vms_running >= 2
    assert stats.domains_active >= stats.vms_running
    assert stats.hypervisor_type in {"kvm", "qemu"}
    assert stats.memory_total_mib >= stats.memory_free_mib > 0
    caps = await host.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    assert pb.Console.KIND_VNC in caps.consoles


async def test_shutdown_powers_the_guest_off(host: Host) -> None:
    vm_id = host.guests["shutdown"].vm_id
    since = host.watch.mark()
    vm = await host.stub.ShutdownVm(pb.HostAgentServiceShutdownVmRequest(vm_id=vm_id))
    assert vm.vm.state == S.STATE_POWERING_DOWN
    states = await host.watch.state(vm_id, S.STATE_DOWN, since)
    assert _names(states) == ["POWERING_DOWN", "DOWN"]
    assert "through the guest agent" in states[0].message  # the agent was responsive
    assert states[-1].exit_reason == S.EXIT_REASON_SHUTDOWN
    assert await asyncio.to_thread(_libvirt_domain, host.uri, vm_id) is None


async def test_hibernate_then_restore_paused_continues_the_guest(host: Host) -> None:
    config = host.guests["hibernate"]
    vm_id = config.vm_id
    image = host.hostd.layout.saved_dir / f"{vm_id}.img"
    since = host.watch.mark()
    last_report = [e for e in host.watch.reports(vm_id) if e.guest_report.guest.uptime_seconds][-1]
    last = last_report.guest_report.guest.uptime_seconds
    hibernating = await host.stub.HibernateVm(pb.HostAgentServiceHibernateVmRequest(vm_id=vm_id))
    assert hibernating.vm.state == S.STATE_SAVING_STATE
    states = await host.watch.state(vm_id, S.STATE_SUSPENDED, since)
    assert _names(states) == ["SAVING_STATE", "SUSPENDED"]
    assert await asyncio.to_thread(_libvirt_domain, host.uri, vm_id) is None
    assert image.stat().st_mode & 0o777 == 0o600
    saved = (
        host.watch.when(vm_id, S.STATE_SAVING_STATE, since),
        host.watch.when(vm_id, S.STATE_SUSPENDED, since),
    )
    size_mib = image.stat().st_size / 2**20

    since = host.watch.mark()
    restoring = await host.stub.CreateVm(
        pb.HostAgentServiceCreateVmRequest(config=pb.VmConfig(vm_id=vm_id), start_paused=True)
    )
    assert restoring.vm.state == S.STATE_RESTORING_STATE
    states = await host.watch.state(vm_id, S.STATE_PAUSED, since)
    assert _names(states) == ["RESTORING_STATE", "PAUSED"]
    restored = (
        host.watch.when(vm_id, S.STATE_RESTORING_STATE, since),
        host.watch.when(vm_id, S.STATE_PAUSED, since),
    )
    await host.watch.until("the restored image to go", lambda: not image.exists())
    live = await asyncio.to_thread(live_xml, host.uri, vm_id)
    assert disks_of(live) == [("qcow2", config.spec.disks[0].path, "vda", False)]
    resumed_at = host.watch.mark()
    await host.stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))
    report = await host.watch.report(vm_id, resumed_at, responding=True)
    resumed = host.watch.when(vm_id, S.STATE_RUNNING, resumed_at)
    # The guest had run at least this long when it was saved; a guest that booted
    # afresh would report a few seconds.
    ran = last + _seconds(last_report, saved[0])
    assert report.guest_report.guest.uptime_seconds >= ran - 1, "it goes on where it stopped"
    print(
        f"\nhibernate (256 MiB guest): saved in {_seconds(saved[0], saved[-1]):.2f} s"
        f" ({size_mib:.0f} MiB), restored in {_seconds(restored[0], restored[-1]):.2f} s,"
        f" agent reporting {_seconds(resumed, report):.2f} s after resume"
        f" with uptime {report.guest_report.guest.uptime_seconds:.1f} s (up {ran:.1f} s when saved)"
    )


async def test_a_persistent_vm_started_paused(host: Host) -> None:
    vm_id = host.guests["persistent"].vm_id
    assert _names(host.watch.states(vm_id)) == ["WAIT_FOR_LAUNCH", "PAUSED"]
    assert await asyncio.to_thread(_libvirt_domain, host.uri, vm_id) == (True, True)
    resumed = await host.stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id))
    assert resumed.vm.state == S.STATE_RUNNING
    since = host.watch.mark()
    await host.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id))
    assert await asyncio.to_thread(_libvirt_domain, host.uri, vm_id) is None, "undefined too"
    (down,) = host.watch.states(vm_id, since)
    assert (down.state, down.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
