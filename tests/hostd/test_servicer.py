"""HostAgentService end to end: a real grpc.aio server, hostd, libvirt's test driver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd import domxml
from hostd.config import ChannelLimits, HostdConfig
from hostd.server import Hostd
from tests.support.fake_guest import FakeGuest
from tests.support.hostd_rig import vm_config
from tests.support.virt import disks_of
from tests.support.waiting import next_item, until

S = pb.HostVm


@dataclass
class Served:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    config = HostdConfig(
        listen="127.0.0.1:0",
        libvirt_uri="test:///default",
        state_dir=short_tmp / "state",
        virt_type="qemu",
        channel=ChannelLimits(connect_timeout_seconds=60),
    )
    hostd = Hostd(config)
    port = await hostd.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(hostd, pb_grpc.HostAgentServiceStub(channel))
    finally:
        for vm in hostd.vms.list():  # never leave domains behind
            await hostd.vms.destroy(vm.vm_id)
        await channel.close(None)
        await hostd.stop(grace=1)


async def _vm_states(
    events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, count: int
) -> list[S]:
    states: list[S] = []
    while len(states) < count:
        event = (await next_item(events, f"state {len(states) + 1} of VM {vm_id}")).event
        if event.WhichOneof("payload") == "vm_state" and event.vm_state.vm_id == vm_id:
            states.append(event.vm_state)
    return states


async def test_create_watch_destroy(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0], initrd=boot_files[1])
    watch = served.stub.WatchEvents(pb.WatchEventsRequest(after_sequence=0))
    events = watch.__aiter__()
    try:
        created = await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        assert created.vm.state == S.STATE_WAIT_FOR_LAUNCH
        states = await _vm_states(events, config.vm_id, 2)
        assert [s.state for s in states] == [S.STATE_WAIT_FOR_LAUNCH, S.STATE_RUNNING]
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert S(vm_id=config.vm_id, state=S.STATE_RUNNING) in listed.vms

        await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        (down,) = await _vm_states(events, config.vm_id, 1)
        assert (down.state, down.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_DESTROYED)
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert config.vm_id not in {vm.vm_id for vm in listed.vms}
    finally:
        watch.cancel()


async def test_watch_resumes_after_a_sequence(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    kept = served.hostd.journal.after(0)
    watch = served.stub.WatchEvents(pb.WatchEventsRequest(after_sequence=kept[0].sequence))
    try:
        first = await next_item(watch.__aiter__(), "the second event")
        assert first.event.sequence == kept[1].sequence
        assert first.event.host_epoch == served.hostd.journal.epoch
    finally:
        watch.cancel()


async def test_same_id_twice_is_already_exists(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert config.vm_id in (caught.value.details() or "")


async def test_missing_memory_is_invalid_argument(
    served: Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    config.spec.ClearField("memory_mib")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.spec.memory_mib" in (caught.value.details() or "")


async def test_destroying_an_unknown_vm_is_not_found(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.DestroyVm(
            pb.HostAgentServiceDestroyVmRequest(vm_id="6f1c9a52-3d0e-4b7a-9a51-0c2d8e4f7b13")
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_host_capabilities(served: Served) -> None:
    caps = await served.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    assert caps.hypervisor_type == "qemu"
    assert caps.cpus >= 1
    assert caps.memory_total_mib >= caps.memory_free_mib > 0
    assert caps.hostname


async def test_guest_reports_reach_the_watchers(
    served: Served, boot_files: tuple[str, str]
) -> None:
    # libvirt's test driver binds no socket: a fake agent listens where libvirt would.
    config = vm_config(boot_files[0])
    guest = FakeGuest(served.hostd.layout.channel_socket(config.vm_id))
    await guest.start()
    watch = served.stub.WatchEvents(pb.WatchEventsRequest())
    events = watch.__aiter__()
    try:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await guest.next_message("HostHello")
        await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
        await guest.next_message("VersionChoice")
        report = gc.GuestReport(
            full=True,
            os=gc.OsSection(name="Debian GNU/Linux"),
            network=gc.NetworkSection(
                interfaces=[gc.NetworkInterface(name="eth0", ipv4_addresses=["10.0.2.15"])]
            ),
        )
        await guest.send(gc.GuestMessage(report=report))
        while True:
            event = (await next_item(events, "the guest report")).event
            if event.WhichOneof("payload") == "guest_report":
                break
        assert event.guest_report.vm_id == config.vm_id
        info: vm_pb2.GuestInfo = event.guest_report.guest
        assert info.os_name == "Debian GNU/Linux"
        assert list(info.interfaces[0].ipv4_addresses) == ["10.0.2.15"]
    finally:
        watch.cancel()
        await guest.close()


async def test_refresh_and_the_last_raw_report(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    vm_id = config.vm_id
    guest = FakeGuest(served.hostd.layout.channel_socket(vm_id))
    await guest.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await served.stub.RefreshVmGuestInfo(
                pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id)
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await guest.next_message("HostHello")
        with pytest.raises(grpc.aio.AioRpcError) as early:
            await served.stub.RefreshVmGuestInfo(
                pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id)
            )
        assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not connected" in (early.value.details() or "")
        empty = await served.stub.GetVmGuestReport(
            pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id)
        )
        assert empty.report_json == "" and not empty.HasField("received_time")
        assert empty.channel.connected and empty.channel.protocol_version == 0

        await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
        await guest.next_message("VersionChoice")
        await served.stub.RefreshVmGuestInfo(
            pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id)
        )
        assert (await guest.next_message("Refresh")).WhichOneof("body") == "refresh"
        report = gc.GuestReport(full=True, system=gc.SystemSection(hostname="raw\x1bhost"))
        await guest.send(gc.GuestMessage(report=report))

        async def has_report() -> pb.HostAgentServiceGetVmGuestReportResponse:
            return await served.stub.GetVmGuestReport(
                pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id)
            )

        reply = await until(has_report, lambda r: r.report_json, what="the raw report", within=5)
        raw = json.loads(reply.report_json)
        assert raw["report"]["system"]["hostname"] == "raw\x1bhost"  # as the guest sent it
        assert raw["agentInstance"] == "fake"
        assert reply.received_time.seconds > 0 and not reply.truncated
        assert reply.channel.protocol_version == 1
        assert reply.channel.messages_received == 2
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert [v.guest.hostname for v in listed.vms if v.vm_id == vm_id] == ["rawhost"]
    finally:
        await guest.close()


async def test_a_restarted_hostd_adopts_its_domains(
    served: Served, boot_files: tuple[str, str], short_tmp: Path
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while not any(vm.state == S.STATE_RUNNING for vm in vms.list()):
        events = served.hostd.journal.follow(served.hostd.journal.last_sequence)
        await next_item(events, "RUNNING")
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    await second.start()
    try:
        adopted = second.vms.get(config.vm_id)
        assert (adopted.state, adopted.message) == (S.STATE_RUNNING, "recovered")
        assert "test" not in {vm.vm_id for vm in second.vms.list()}
    finally:
        await second.stop(grace=1)


async def _states_until(
    events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, last: int
) -> list[int]:
    """The states of one VM the watch brings, up to and including last."""
    seen: list[int] = []
    while not seen or seen[-1] != last:
        seen.extend(s.state for s in await _vm_states(events, vm_id, 1))
    return seen


async def _expect_precondition(call: Awaitable[object], *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for word in words:
        assert word in (caught.value.details() or "")


async def test_pause_resume_reset_and_stats(served: Served, boot_files: tuple[str, str]) -> None:
    stub = served.stub
    config = vm_config(boot_files[0])
    vm_id = config.vm_id
    watch = stub.WatchEvents(
        pb.WatchEventsRequest(after_sequence=served.hostd.journal.last_sequence)
    )
    events = watch.__aiter__()
    try:
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await _states_until(events, vm_id, S.STATE_RUNNING)
        await _expect_precondition(
            stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=vm_id)),
            f"cannot resume VM {vm_id}: it is RUNNING",
        )
        paused = await stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=vm_id))
        assert paused.vm.state == S.STATE_PAUSED
        await _expect_precondition(
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
        assert await _states_until(events, vm_id, S.STATE_RUNNING) == [
            S.STATE_PAUSED,
            S.STATE_RUNNING,
        ]
        assert await _states_until(events, vm_id, S.STATE_RUNNING) == [
            S.STATE_REBOOT_IN_PROGRESS,
            S.STATE_RUNNING,
        ]
    finally:
        watch.cancel()


async def test_a_reboot_the_guest_ignores_ends_in_a_reset(
    served: Served, boot_files: tuple[str, str]
) -> None:
    stub = served.stub
    config = vm_config(boot_files[0])
    vm_id = config.vm_id
    watch = stub.WatchEvents(
        pb.WatchEventsRequest(after_sequence=served.hostd.journal.last_sequence)
    )
    events = watch.__aiter__()
    try:
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await _states_until(events, vm_id, S.STATE_RUNNING)
        # The test driver's reboot does nothing; after the timeout hostd resets it.
        rebooting = await stub.RebootVm(
            pb.HostAgentServiceRebootVmRequest(vm_id=vm_id, timeout_seconds=1)
        )
        assert rebooting.vm.state == S.STATE_REBOOT_IN_PROGRESS
        assert await _states_until(events, vm_id, S.STATE_RUNNING) == [
            S.STATE_REBOOT_IN_PROGRESS,
            S.STATE_RUNNING,
        ]
    finally:
        watch.cancel()


async def test_shutdown(served: Served, boot_files: tuple[str, str]) -> None:
    stub = served.stub
    config = vm_config(boot_files[0])
    watch = stub.WatchEvents(
        pb.WatchEventsRequest(after_sequence=served.hostd.journal.last_sequence)
    )
    events = watch.__aiter__()
    try:
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await _states_until(events, config.vm_id, S.STATE_RUNNING)
        await stub.ShutdownVm(pb.HostAgentServiceShutdownVmRequest(vm_id=config.vm_id))
        await _states_until(events, config.vm_id, S.STATE_DOWN)
        last = served.hostd.journal.after(0)[-1].vm_state
        assert (last.state, last.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_SHUTDOWN)
    finally:
        watch.cancel()


async def test_hibernate_then_create_restores(served: Served, boot_files: tuple[str, str]) -> None:
    stub = served.stub
    config = vm_config(boot_files[0])
    vm_id = config.vm_id
    saved = served.hostd.layout.saved_dir
    watch = stub.WatchEvents(
        pb.WatchEventsRequest(after_sequence=served.hostd.journal.last_sequence)
    )
    events = watch.__aiter__()
    try:
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await _states_until(events, vm_id, S.STATE_RUNNING)
        hibernating = await stub.HibernateVm(pb.HostAgentServiceHibernateVmRequest(vm_id=vm_id))
        assert hibernating.vm.state == S.STATE_SAVING_STATE
        assert await _states_until(events, vm_id, S.STATE_SUSPENDED) == [
            S.STATE_SAVING_STATE,
            S.STATE_SUSPENDED,
        ]
        for name in (f"{vm_id}.img", f"{vm_id}.config"):
            assert (saved / name).stat().st_mode & 0o777 == 0o600
        listed = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
        (suspended,) = [vm for vm in listed.vms if vm.vm_id == vm_id]
        assert (suspended.state, suspended.exit_reason) == (S.STATE_SUSPENDED, S.EXIT_REASON_SAVED)
        await _expect_precondition(
            stub.GetVmStats(pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id)), "SUSPENDED"
        )
        host = await stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
        assert host.vms_suspended == 1

        # Only the id is read from a create that restores.
        again = pb.VmConfig(vm_id=vm_id)
        restoring = await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=again))
        assert restoring.vm.state == S.STATE_RESTORING_STATE
        assert await _states_until(events, vm_id, S.STATE_RUNNING) == [
            S.STATE_RESTORING_STATE,
            S.STATE_RUNNING,
        ]
        # RUNNING comes from libvirt's event, as restoreFlags returns: the files go then.
        await until(lambda: not any(saved.iterdir()), what="the saved state to be deleted")
    finally:
        watch.cancel()


async def test_a_repeated_create_is_idempotent(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    request = pb.HostAgentServiceCreateVmRequest(config=config, request_id="r-1")
    first = await served.stub.CreateVm(request)
    second = await served.stub.CreateVm(request)
    assert first.vm.vm_id == second.vm.vm_id == config.vm_id
    listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.vm_id for vm in listed.vms].count(config.vm_id) == 1


async def test_an_unsupported_console(served: Served, boot_files: tuple[str, str]) -> None:
    caps = await served.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    # libvirt's test driver offers no display.
    assert list(caps.consoles) == [pb.Console.KIND_NONE, pb.Console.KIND_SERIAL_FILE]
    config = vm_config(boot_files[0])
    config.console.kind = pb.Console.KIND_VNC
    await _expect_precondition(
        served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config)),
        "KIND_VNC is not supported on this host; supported: KIND_NONE, KIND_SERIAL_FILE",
    )


async def test_host_stats(served: Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while vms.get(config.vm_id).state != S.STATE_RUNNING:
        await next_item(served.hostd.journal.follow(served.hostd.journal.last_sequence), "RUNNING")
    stats = await served.stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
    assert stats.vms_running == 1
    assert stats.domains_active >= 2  # test:///default's own "test" domain too
    assert stats.hypervisor_type == "qemu"
    assert stats.memory_total_mib >= stats.memory_free_mib > 0
    assert stats.time.seconds > 0


async def test_the_recovery_report_lists_adopted_and_external(
    served: Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while vms.get(config.vm_id).state != S.STATE_RUNNING:
        await next_item(served.hostd.journal.follow(served.hostd.journal.last_sequence), "RUNNING")
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    port = await second.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = pb_grpc.HostAgentServiceStub(channel)
        report = (
            await stub.GetRecoveryReport(pb.HostAgentServiceGetRecoveryReportRequest())
        ).report
        adopted = {a.vm_id: a for a in report.adopted}
        assert adopted[config.vm_id].state == S.STATE_RUNNING
        assert adopted[config.vm_id].reason == "its domain is running"
        external = {e.name: e.reason for e in report.external}
        assert external["test"] == "no virtplane metadata: not created by hostd"
    finally:
        await channel.close(None)
        await second.stop(grace=1)


@pytest.fixture
async def small_journal(short_tmp: Path) -> AsyncIterator[Served]:
    config = HostdConfig(
        listen="127.0.0.1:0",
        libvirt_uri="test:///default",
        state_dir=short_tmp / "state",
        virt_type="qemu",
        journal_size=3,
        channel=ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01),
    )
    hostd = Hostd(config)
    port = await hostd.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(hostd, pb_grpc.HostAgentServiceStub(channel))
    finally:
        for vm in hostd.vms.list():
            await hostd.vms.destroy(vm.vm_id)
        await channel.close(None)
        await hostd.stop(grace=1)


async def test_a_watcher_too_far_behind_gets_a_snapshot_then_the_live_events(
    small_journal: Served, boot_files: tuple[str, str]
) -> None:
    stub, journal = small_journal.stub, small_journal.hostd.journal
    first, second = (vm_config(boot_files[0], initrd=boot_files[1]) for _ in range(2))
    for config in (first, second):
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await until(
            lambda c=config: small_journal.hostd.vms.get(c.vm_id).state == S.STATE_RUNNING,
            what="RUNNING",
        )
    await stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=first.vm_id))
    assert journal.last_sequence == 5  # 2 states each, then PAUSED: events 1 and 2 are gone
    for request in (
        pb.WatchEventsRequest(after_sequence=1),  # older than the journal keeps
        pb.WatchEventsRequest(after_sequence=4, host_epoch="an-earlier-hostd"),
        pb.WatchEventsRequest(after_sequence=99),  # beyond the last: another epoch
    ):
        position = journal.last_sequence
        watch = stub.WatchEvents(request)
        responses = watch.__aiter__()
        try:
            reply = await next_item(responses, "the snapshot")
            assert reply.WhichOneof("kind") == "snapshot"
            snapshot = reply.snapshot
            assert (snapshot.host_epoch, snapshot.sequence) == (journal.epoch, position)
            assert {(vm.vm_id, vm.state) for vm in snapshot.vms} == {
                (first.vm_id, S.STATE_PAUSED),
                (second.vm_id, S.STATE_RUNNING),
            }
            await stub.ResumeVm(pb.HostAgentServiceResumeVmRequest(vm_id=first.vm_id))
            live = (await next_item(responses, "the next event")).event
            assert live.sequence == snapshot.sequence + 1
            assert (live.vm_state.vm_id, live.vm_state.state) == (first.vm_id, S.STATE_RUNNING)
            await stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=first.vm_id))
            await next_item(responses, "the pause")
        finally:
            watch.cancel()


async def test_a_watcher_whose_events_are_kept_gets_no_snapshot(
    small_journal: Served, boot_files: tuple[str, str]
) -> None:
    stub, journal = small_journal.stub, small_journal.hostd.journal
    config = vm_config(boot_files[0], initrd=boot_files[1])
    await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await until(lambda: journal.last_sequence == 2, what="RUNNING")
    watch = stub.WatchEvents(pb.WatchEventsRequest(after_sequence=1, host_epoch=journal.epoch))
    try:
        reply = await next_item(watch.__aiter__(), "the kept event")
        assert reply.WhichOneof("kind") == "event"
        assert reply.event.sequence == 2
    finally:
        watch.cancel()


def _disk_config(boot_files: tuple[str, str]) -> pb.VmConfig:
    """A VM with two disks (the boot files as their images: the test driver opens none)."""
    kernel, initrd = boot_files
    config = vm_config(kernel, initrd=initrd)
    config.spec.disks.extend(
        [
            vm_pb2.Disk(name="root", path=initrd, format=vm_pb2.Disk.FORMAT_QCOW2),
            vm_pb2.Disk(name="seed", path=kernel, read_only=True),
        ]
    )
    return config


async def test_a_bad_disk_is_invalid_argument_and_creates_nothing(
    served: Served, boot_files: tuple[str, str]
) -> None:
    config = _disk_config(boot_files)
    config.spec.disks[1].path = "/nonexistent/seed.img"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "config.spec.disks[1].path: no file at /nonexistent/seed.img"
    config.spec.disks[1].path = config.spec.disks[0].path
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("config.spec.disks[1].path: ")
    assert served.hostd.vms.list() == []
    assert not await asyncio.to_thread(_test_domain_xml, config.vm_id)


async def test_disks_reach_the_domain_and_survive_a_restart(
    served: Served, boot_files: tuple[str, str]
) -> None:
    config = _disk_config(boot_files)
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    await until(
        lambda: vms.get(config.vm_id).state == S.STATE_RUNNING, what="the VM with disks to run"
    )
    xml = await asyncio.to_thread(_test_domain_xml, config.vm_id)
    assert disks_of(xml) == [
        ("qcow2", boot_files[1], "vda", False),
        ("raw", boot_files[0], "vdb", True),
    ]
    # What a restarted hostd adopts the VM from: its configuration, disks included.
    metadata = domxml.metadata_in_domain(xml)
    assert metadata is not None
    kept = pb.VmConfig.FromString(metadata.config)
    assert [(d.name, d.format) for d in kept.spec.disks] == [
        ("root", vm_pb2.Disk.FORMAT_QCOW2),
        ("seed", vm_pb2.Disk.FORMAT_RAW),  # the default, filled in
    ]
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    await second.start()
    try:
        adopted = second.vms.get(config.vm_id)
        assert (adopted.state, adopted.message) == (S.STATE_RUNNING, "recovered")
    finally:
        await second.stop(grace=1)


def _test_domain_xml(vm_id: str) -> str:
    """The test driver's XML of the VM's domain; empty when it has none."""
    conn = libvirt.open("test:///default")
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc())
    except libvirt.libvirtError:
        return ""
    finally:
        conn.close()
