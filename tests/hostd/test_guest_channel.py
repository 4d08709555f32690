"""The guest channel against a fake guest speaking real framed messages on a unix socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.guest_channel import GuestChannel
from tests.support.fake_guest import FakeGuest
from tests.support.waiting import until
from virtplane_common.framing import encode

NOW = 1_700_000_000 * 10**9
LIMITS = ChannelLimits(max_payload=4096, connect_timeout_seconds=60.0)


@dataclass
class Reports:
    received: list[tuple[str, vm_pb2.GuestInfo]] = field(default_factory=list)
    fail_next: bool = False

    def __call__(self, vm_id: str, info: vm_pb2.GuestInfo) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the sink failed")
        self.received.append((vm_id, info))

    @property
    def last(self) -> vm_pb2.GuestInfo:
        return self.received[-1][1]


@dataclass
class Setup:
    guest: FakeGuest
    channel: GuestChannel
    reports: Reports
    task: asyncio.Task[None]


@pytest.fixture
async def setup(short_tmp: Path) -> AsyncIterator[Setup]:
    guest = FakeGuest(short_tmp / "vm.sock")
    await guest.start()
    reports = Reports()
    channel = GuestChannel("vm-1", guest.path, LIMITS, reports, clock=lambda: NOW)
    task = asyncio.create_task(channel.run())
    try:
        yield Setup(guest, channel, reports, task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await guest.close()


async def _negotiate(s: Setup, low: int = 1, high: int = 3) -> gc.HostMessage:
    hello = await s.guest.next_message("HostHello")
    assert hello.WhichOneof("body") == "hello"
    assert (hello.hello.min_version, hello.hello.max_version) == (1, 1)
    await s.guest.send(
        gc.GuestMessage(hello=gc.GuestHello(min_version=low, max_version=high, agent_version="9.9"))
    )
    return await s.guest.next_message("VersionChoice")


def _full_report(hostname: str = "guest") -> gc.GuestMessage:
    return gc.GuestMessage(
        sent_unix_nanos=NOW - 10**9,
        report=gc.GuestReport(
            full=True,
            system=gc.SystemSection(hostname=hostname, uptime_seconds=4.5),
            os=gc.OsSection(name="Debian GNU/Linux", version="12", kernel_release="6.1.0-18"),
            network=gc.NetworkSection(
                interfaces=[
                    gc.NetworkInterface(
                        name="eth0",
                        mac_address="52:54:00:12:34:56",
                        ipv4_addresses=["10.0.2.15"],
                        ipv6_addresses=["fec0::5054:ff:fe12:3456"],
                    )
                ]
            ),
            applications=gc.ApplicationsSection(applications=["python3 3.11.2"]),
        ),
    )


async def test_negotiates_the_highest_common_version(setup: Setup) -> None:
    choice = await _negotiate(setup, 1, 3)
    assert choice.version_choice.version == 1
    assert setup.channel.version == 1
    assert setup.channel.info.agent_version == "9.9"


async def test_no_common_version_means_no_session(setup: Setup) -> None:
    await setup.guest.next_message("HostHello")
    await setup.guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=2, max_version=5)))
    await setup.guest.send(_full_report())
    # The host answers the next, acceptable hello; the stream is ordered, so
    # nothing was sent for the first one.
    await setup.guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
    choice = await setup.guest.next_message("VersionChoice")
    assert choice.version_choice.version == 1
    assert setup.reports.received == []
    assert setup.channel.ignored_messages == 1


async def test_reports_before_the_hello_are_ignored(setup: Setup) -> None:
    await setup.guest.next_message("HostHello")
    await setup.guest.send(_full_report("early"))
    await _negotiate_after_hello(setup)
    await setup.guest.send(_full_report("late"))
    await until(lambda: len(setup.reports.received) == 1, what="the report")
    assert setup.reports.last.hostname == "late"


async def _negotiate_after_hello(s: Setup) -> None:
    await s.guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
    await s.guest.next_message("VersionChoice")


async def test_full_then_partial_reports_merge(setup: Setup) -> None:
    await _negotiate(setup)
    await setup.guest.send(_full_report())
    await until(lambda: len(setup.reports.received) == 1, what="the full report")
    vm_id, full = setup.reports.received[0]
    assert vm_id == "vm-1"
    assert full.hostname == "guest"
    assert full.os_name == "Debian GNU/Linux"
    assert list(full.interfaces[0].ipv4_addresses) == ["10.0.2.15"]
    assert full.agent_version == "9.9"
    assert full.last_report_time.ToNanoseconds() == NOW
    assert full.observed_time.ToNanoseconds() == NOW - 10**9

    partial = gc.GuestMessage(
        sent_unix_nanos=NOW + 3600 * 10**9,  # a guest clock an hour ahead: not believed
        report=gc.GuestReport(
            network=gc.NetworkSection(
                interfaces=[gc.NetworkInterface(name="eth0", ipv4_addresses=["10.0.2.16"])]
            )
        ),
    )
    await setup.guest.send(partial)
    await until(lambda: len(setup.reports.received) == 2, what="the partial report")
    merged = setup.reports.last
    assert list(merged.interfaces[0].ipv4_addresses) == ["10.0.2.16"]
    assert merged.os_name == "Debian GNU/Linux"
    assert merged.hostname == "guest"
    assert merged.observed_time.ToNanoseconds() == NOW

    await setup.guest.send(
        gc.GuestMessage(report=gc.GuestReport(full=True, system=gc.SystemSection(hostname="h2")))
    )
    await until(lambda: len(setup.reports.received) == 3, what="the second full report")
    assert setup.reports.last.os_name == ""
    assert setup.reports.last.hostname == "h2"


async def test_heartbeats_update_memory_without_reporting(setup: Setup) -> None:
    await _negotiate(setup)
    await setup.guest.send(_full_report())
    await until(lambda: len(setup.reports.received) == 1, what="the full report")
    await setup.guest.send(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=42.0)))
    await until(lambda: setup.channel.info.uptime_seconds == 42.0, what="the heartbeat")
    await setup.guest.send(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=float("nan"))))
    await setup.guest.send(gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=43.0)))
    await until(lambda: setup.channel.info.uptime_seconds == 43.0, what="the next heartbeat")
    assert len(setup.reports.received) == 1


async def test_garbage_and_oversize_frames_are_survived(setup: Setup) -> None:
    await _negotiate(setup)
    await setup.guest.send_raw(b"\x00\xffgarbage\xf0VP" + bytes(range(256)) * 4)
    oversize = _full_report("x" * 10_000)
    await setup.guest.send(oversize)  # over the channel's 4096-byte frame limit
    await setup.guest.send_raw(encode(b"\x08\x96\x01\xff\xff not a guest message"))
    await setup.guest.send(gc.GuestMessage(pong=gc.Pong(payload=b"late pong")))
    await setup.guest.send(_full_report("after"))
    await until(
        lambda: bool(setup.reports.received) and setup.reports.last.hostname == "after",
        what="the report after the garbage",
    )
    assert [info.hostname for _, info in setup.reports.received][-1] == "after"
    assert setup.channel.ignored_messages >= 1


async def test_hostile_strings_are_sanitised(setup: Setup) -> None:
    await _negotiate(setup)
    hostile = gc.GuestMessage(
        report=gc.GuestReport(
            full=True,
            system=gc.SystemSection(hostname="evil\x1b]0;pwned\x07\u202e" + "h" * 500),
            os=gc.OsSection(name="\x00Debian\r\n", kernel_release="\u200b6.1"),
            network=gc.NetworkSection(
                interfaces=[
                    gc.NetworkInterface(
                        name="eth0\n",
                        mac_address="<b>",
                        ipv4_addresses=["10.0.2.15", "1.2.3", "'; DROP TABLE vms;--"],
                        ipv6_addresses=["10.0.2.15"],
                    )
                ]
                * 40
            ),
            applications=gc.ApplicationsSection(applications=["\x1b[2J"] + ["ok"] * 5),
        )
    )
    assert hostile.ByteSize() < LIMITS.max_payload
    await setup.guest.send(hostile)
    await until(lambda: len(setup.reports.received) == 1, what="the hostile report")
    info = setup.reports.last
    assert info.hostname.startswith("evil]0;pwned")
    assert len(info.hostname) == LIMITS.max_string
    assert info.os_name == "Debian"
    assert info.kernel_release == "6.1"
    assert len(info.interfaces) == LIMITS.max_interfaces
    nic = info.interfaces[0]
    assert (nic.name, nic.mac_address) == ("eth0", "")
    assert list(nic.ipv4_addresses) == ["10.0.2.15"]
    assert list(nic.ipv6_addresses) == []
    assert list(info.applications) == ["[2J", "ok", "ok", "ok", "ok", "ok"]


async def test_invalid_utf8_is_an_unparsable_frame(setup: Setup) -> None:
    await _negotiate(setup)
    bad = _full_report("MARK").SerializeToString().replace(b"MARK", b"\xff\xfe\xfd\xfc")
    await setup.guest.send_raw(encode(bad))
    await setup.guest.send(_full_report("good"))
    await until(lambda: len(setup.reports.received) == 1, what="the good report")
    assert setup.reports.last.hostname == "good"


async def test_a_failing_sink_does_not_end_the_channel(setup: Setup) -> None:
    await _negotiate(setup)
    setup.reports.fail_next = True
    await setup.guest.send(_full_report("first"))
    await setup.guest.send(_full_report("second"))
    await until(lambda: len(setup.reports.received) == 1, what="the second report")
    assert setup.reports.last.hostname == "second"
    assert not setup.task.done()


async def test_a_restarted_agent_is_stale_until_its_full_report(setup: Setup) -> None:
    """An agent restarted within its heartbeats (systemctl restart): its hello
    on the same connection, from another agent instance, makes the old facts
    stale until the new agent's full report; the same instance's hello does not."""
    responding = vm_pb2.GuestInfo.AGENT_STATE_RESPONDING
    await _negotiate(setup)
    await setup.guest.send(_full_report("old"))
    await until(lambda: len(setup.reports.received) == 1, what="the first report")
    assert setup.reports.last.agent_state == responding
    # heartbeats 5 minutes apart: no silence makes it stale during the test
    again = gc.GuestHello(min_version=1, max_version=1, heartbeat_interval_ms=300_000)
    await setup.guest.send(gc.GuestMessage(hello=again))  # the same instance: no change
    await setup.guest.next_message("VersionChoice for the same agent")
    assert len(setup.reports.received) == 1

    await setup.guest.send(gc.GuestMessage(agent_instance="restarted", hello=again))
    await setup.guest.next_message("VersionChoice for the restarted agent")
    await until(lambda: len(setup.reports.received) == 2, what="the stale facts")
    stale = setup.reports.last
    assert stale.agent_state == vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING
    assert stale.hostname == "old"  # kept as last observed
    fresh = _full_report("new")
    fresh.agent_instance = "restarted"
    await setup.guest.send(fresh)
    await until(lambda: len(setup.reports.received) == 3, what="the new agent's report")
    assert (setup.reports.last.agent_state, setup.reports.last.hostname) == (responding, "new")


async def test_reconnects_and_renegotiates_after_a_hang_up(setup: Setup) -> None:
    await _negotiate(setup)
    await setup.guest.hang_up()
    hello = await setup.guest.next_message("HostHello after reconnecting")
    assert hello.WhichOneof("body") == "hello"
    assert setup.guest.connections == 2
    assert setup.channel.version is None
    await _negotiate_after_hello(setup)
    await setup.guest.send(_full_report("again"))
    await until(lambda: len(setup.reports.received) == 1, what="the report after reconnecting")


async def test_gives_up_when_the_socket_never_appears(short_tmp: Path) -> None:
    limits = ChannelLimits(connect_timeout_seconds=0.2, connect_retry_seconds=0.05)
    channel = GuestChannel("vm-2", short_tmp / "missing.sock", limits, Reports())
    await asyncio.wait_for(channel.run(), 60)


async def _silent_channel(
    short_tmp: Path, expected: str
) -> tuple[FakeGuest, GuestChannel, Reports, asyncio.Task[None]]:
    guest = FakeGuest(short_tmp / f"silent-{expected or 'none'}.sock")
    await guest.start()
    reports = Reports()
    limits = ChannelLimits(connect_timeout_seconds=60.0, agent_start_seconds=0.3)
    channel = GuestChannel("vm-1", guest.path, limits, reports, expected_agent=expected)
    return guest, channel, reports, asyncio.create_task(channel.run())


async def test_an_awaited_agent_that_never_speaks_is_not_responding(short_tmp: Path) -> None:
    guest, channel, reports, task = await _silent_channel(short_tmp, "7.1")
    try:
        await guest.next_message("HostHello")  # connected; the guest says nothing
        await until(lambda: bool(reports.received), what="a report of the silent agent")
        assert channel.agent_state == vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING
        assert reports.last.agent_version == "7.1"
        assert not reports.last.HasField("observed_time"), "no facts were ever observed"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await guest.close()


async def test_a_vm_never_seen_with_an_agent_awaits_none(short_tmp: Path) -> None:
    guest, channel, reports, task = await _silent_channel(short_tmp, "")
    try:
        await guest.next_message("HostHello")
        await asyncio.sleep(1.2)  # well past agent_start_seconds and a heartbeat check
        assert channel.agent_state == vm_pb2.GuestInfo.AGENT_STATE_UNSPECIFIED
        assert reports.received == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await guest.close()
