"""A chatty guest with large reports: hostd's journal and each VM's GuestInfo
stay within their byte caps, and nothing fails for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.guest_channel import GuestChannel
from hostd.guest_channel.size_cap import cap_guest_info
from hostd.journal import Journal
from hostd.listing import GUEST_BUDGET_BYTES, listed_vms
from hostd.model import VmState, VmStatus
from tests.support import served as serving
from tests.support.fake_guest import FakeGuest
from tests.support.hostd_rig import vm_config
from tests.support.waiting import next_item, until
from virtplane_common.framing import encode

NOW = 1_700_000_000 * 10**9
HELLO = gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1))


def _big_report(tag: int) -> bytes:
    """A full report of about 240 KiB: applications and users at their caps."""
    apps = [f"{tag}-app-{i}-" + "x" * 40 for i in range(4096)]
    users = [gc.LoggedInUser(name=f"u{i}" + "y" * 200, terminal="pts/0") for i in range(64)]
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname=f"g{tag}"),
        applications=gc.ApplicationsSection(applications=apps),
        users=gc.UsersSection(users=users),
    )
    message = gc.GuestMessage(sent_unix_nanos=NOW, report=report)
    return encode(message.SerializeToString())


def test_a_report_stream_keeps_the_journal_under_its_byte_cap() -> None:
    journal = Journal(10_000, max_bytes=2 * 1024 * 1024)
    limits = ChannelLimits(
        max_guest_info_bytes=64 * 1024, max_messages_burst=1000, max_bytes_burst=1 << 30
    )
    infos: list[vm_pb2.GuestInfo] = []

    def sink(vm_id: str, info: vm_pb2.GuestInfo) -> None:
        infos.append(info)
        journal.append_guest_report(vm_id, info)

    channel = GuestChannel("vm", Path("/nonexistent"), limits, sink, clock=lambda: NOW)
    channel.feed(encode(HELLO.SerializeToString()))
    reports = 60
    fed = 0
    for tag in range(reports):
        frame = _big_report(tag)
        fed += len(frame)
        channel.feed(frame)
    assert fed > 10 * 1024 * 1024  # what the journal would have held uncapped
    assert len(infos) >= reports
    assert all(info.ByteSize() <= 64 * 1024 for info in infos)
    assert infos[-1].hostname == f"g{reports - 1}"
    assert infos[-1].application_count == 4096  # how many the guest has, cut or not
    assert 0 < len(infos[-1].applications) < 4096
    assert journal.kept_bytes <= 2 * 1024 * 1024
    assert journal.last_sequence >= reports
    assert channel._facts.truncated_reports == reports
    kept = journal.after(0)
    assert kept[-1].guest_report.guest.hostname == f"g{reports - 1}"  # the newest stay


def test_the_journal_drops_its_oldest_events_past_its_byte_cap() -> None:
    journal = Journal(100, max_bytes=10_000)
    for i in range(50):
        journal.append_guest_report(str(i), vm_pb2.GuestInfo(hostname="h" * 1000))
    assert journal.kept_bytes <= 10_000
    kept = journal.after(0)
    assert kept[-1].sequence == 50 and len(kept) < 50
    assert journal.needs_snapshot(0)
    assert not journal.needs_snapshot(kept[0].sequence - 1)
    # One event over the cap on its own is still kept: the newest is never lost.
    journal.append_guest_report("big", vm_pb2.GuestInfo(hostname="h" * 20_000))
    assert [e.sequence for e in journal.after(0)] == [51]


def test_the_count_cap_still_holds() -> None:
    journal = Journal(3, max_bytes=1 << 20)
    for i in range(5):
        journal.append_guest_report(str(i), vm_pb2.GuestInfo())
    assert [e.sequence for e in journal.after(0)] == [3, 4, 5]


def test_capping_cuts_lists_from_their_end_applications_first() -> None:
    info = vm_pb2.GuestInfo(
        hostname="g",
        applications=[f"app{i}" for i in range(1000)],
        users=[vm_pb2.GuestUser(name=f"u{i}") for i in range(10)],
    )
    limit = info.ByteSize() - 100
    dropped = cap_guest_info(info, limit)
    assert info.ByteSize() <= limit
    assert 0 < dropped < 100
    assert len(info.users) == 10
    assert list(info.applications) == [f"app{i}" for i in range(1000 - dropped)]


@pytest.mark.parametrize("limit", [0, 10, 300])
def test_capping_below_the_scalars_empties_every_list(limit: int) -> None:
    info = vm_pb2.GuestInfo(
        hostname="g" * 50,
        applications=["a"] * 100,
        filesystems=[vm_pb2.GuestFilesystem(mount_point="/")],
    )
    cap_guest_info(info, limit)
    assert info.hostname == "g" * 50
    assert info.ByteSize() <= max(limit, 52)


def test_a_guest_info_under_its_cap_is_untouched() -> None:
    info = vm_pb2.GuestInfo(hostname="g", applications=["a", "b"])
    copy = vm_pb2.GuestInfo()
    copy.CopyFrom(info)
    assert cap_guest_info(info, 1 << 20) == 0
    assert info == copy


def _large_report(tag: int) -> gc.GuestMessage:
    apps = [f"{tag}-application-{i}-" + "z" * 30 for i in range(4096)]  # about 210 KiB
    report = gc.GuestReport(
        full=True,
        system=gc.SystemSection(hostname=f"g{tag}"),
        applications=gc.ApplicationsSection(applications=apps),
    )
    return gc.GuestMessage(report=report)


async def test_list_vms_stays_small_whatever_the_guests_report(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    # Two dozen guests near the GuestInfo cap: over 4 MiB of guest facts, more than
    # gRPC's default message limit (that of the test's own channel).
    count = 24
    guests: list[FakeGuest] = []
    try:
        for tag in range(count):
            config = vm_config(boot_files[0])
            guest = FakeGuest(served.hostd.layout.channel_socket(config.vm_id))
            await guest.start()
            guests.append(guest)
            await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
            await guest.next_message("HostHello")
            await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
            await guest.next_message("VersionChoice")
            await guest.send(_large_report(tag))

        def reported() -> int:
            return sum(1 for vm in served.hostd.vms.list() if vm.guest and vm.guest.hostname)

        await until(reported, lambda n: n == count)
        total = sum(vm.guest.ByteSize() for vm in served.hostd.vms.list() if vm.guest)
        assert total > 4 * 1024 * 1024
        listed = await served.stub.ListVms(pb.HostAgentServiceListVmsRequest())
        assert len(listed.vms) == count
        assert listed.ByteSize() < GUEST_BUDGET_BYTES + 64 * 1024
        with_guest = [vm for vm in listed.vms if vm.HasField("guest")]
        assert 0 < len(with_guest) < count  # the rest come with their next report
        watch = served.stub.WatchEvents(pb.WatchEventsRequest(host_epoch="another"))
        try:
            first = await next_item(watch.__aiter__(), "the snapshot")
            assert len(first.snapshot.vms) == count
            assert first.ByteSize() < GUEST_BUDGET_BYTES + 64 * 1024
        finally:
            watch.cancel()
    finally:
        for guest in guests:
            await guest.close()


def test_listing_leaves_out_guest_facts_past_its_budget() -> None:
    statuses = [
        VmStatus(str(i), VmState.RUNNING, guest=vm_pb2.GuestInfo(hostname="h" * 1000))
        for i in range(10)
    ]
    vms, left_out = listed_vms(statuses, budget=3500)
    assert [vm.vm_id for vm in vms] == [str(i) for i in range(10)]
    assert [vm.HasField("guest") for vm in vms] == [True] * 3 + [False] * 7
    assert left_out == 7
