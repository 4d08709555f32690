"""HostAgentService end to end, WatchEvents: resuming, snapshots, and the guest reports
watchers receive (RefreshVmGuestInfo, GetVmGuestReport).

A real grpc.aio server, hostd, libvirt's test driver (fixtures: served, small_journal).
"""

from __future__ import annotations

import json

import grpc
import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd.model import VmState
from tests.support import served as serving
from tests.support.fake_guest import FakeGuest
from tests.support.hostd_rig import vm_config
from tests.support.waiting import next_item, until

S = pb.HostVm


async def test_watch_resumes_after_a_sequence(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await served.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    kept = served.hostd.journal.after(0)
    request = pb.WatchEventsRequest(after_sequence=kept[0].sequence)
    async with serving.watching(served, request) as events:
        first = await next_item(events, "the second event")
        assert first.event.sequence == kept[1].sequence
        assert first.event.host_epoch == served.hostd.journal.epoch


async def test_a_watcher_too_far_behind_gets_a_snapshot_then_the_live_events(
    small_journal: serving.Served, boot_files: tuple[str, str]
) -> None:
    stub, journal = small_journal.stub, small_journal.hostd.journal
    first, second = (vm_config(boot_files[0], initrd=boot_files[1]) for _ in range(2))
    for config in (first, second):
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await until(
            lambda c=config: small_journal.hostd.vms.get(c.vm_id).state == VmState.RUNNING,
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
        async with serving.watching(small_journal, request) as responses:
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


async def test_a_watcher_whose_events_are_kept_gets_no_snapshot(
    small_journal: serving.Served, boot_files: tuple[str, str]
) -> None:
    stub, journal = small_journal.stub, small_journal.hostd.journal
    config = vm_config(boot_files[0], initrd=boot_files[1])
    await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await until(lambda: journal.last_sequence == 2, what="RUNNING")
    request = pb.WatchEventsRequest(after_sequence=1, host_epoch=journal.epoch)
    async with serving.watching(small_journal, request) as events:
        reply = await next_item(events, "the kept event")
        assert reply.WhichOneof("kind") == "event"
        assert reply.event.sequence == 2


async def test_guest_reports_reach_the_watchers(
    served: serving.Served, boot_files: tuple[str, str]
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


async def test_refresh_and_the_last_raw_report(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
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
