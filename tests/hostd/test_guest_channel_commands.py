"""Commands hostd sends the guest agent: refresh, ping, shutdown and reboot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from virtplane.v1 import guest_channel_pb2 as gc

from hostd.config import ChannelLimits
from hostd.errors import AgentRefused, AgentUnavailable
from hostd.guest_channel import GuestChannel
from tests.support.fake_guest import FakeGuest
from tests.support.waiting import until


@pytest.fixture
async def talking(short_tmp: Path) -> AsyncIterator[tuple[FakeGuest, GuestChannel]]:
    guest = FakeGuest(short_tmp / "vm.sock")
    await guest.start()
    channel = GuestChannel("vm-1", guest.path, ChannelLimits(), lambda _id, _info: None)
    task = asyncio.create_task(channel.run())
    try:
        await guest.next_message("HostHello")
        await guest.send(gc.GuestMessage(hello=gc.GuestHello(min_version=1, max_version=1)))
        await guest.next_message("VersionChoice")
        await guest.send(gc.GuestMessage(report=gc.GuestReport(full=True)))
        await until(lambda: channel.responsive, what="the agent responding")
        yield guest, channel
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await guest.close()


async def test_shutdown_is_sent_with_delay_and_message_and_accepted(
    talking: tuple[FakeGuest, GuestChannel],
) -> None:
    guest, channel = talking
    call = asyncio.create_task(channel.power("shutdown", 30, "going down", within=10))
    sent = await guest.next_message("Shutdown")
    assert (sent.shutdown.delay_seconds, sent.shutdown.message) == (30, "going down")
    await guest.send(
        gc.GuestMessage(
            command_result=gc.CommandResult(command_sequence=sent.sequence, accepted=True)
        )
    )
    await call  # accepted: returns


async def test_a_refused_reboot_says_why(talking: tuple[FakeGuest, GuestChannel]) -> None:
    guest, channel = talking
    call = asyncio.create_task(channel.power("reboot", 0, "", within=10))
    sent = await guest.next_message("Reboot")
    assert sent.WhichOneof("body") == "reboot"
    await guest.send(
        gc.GuestMessage(
            command_result=gc.CommandResult(
                command_sequence=sent.sequence, accepted=False, error="power commands off\x07"
            )
        )
    )
    with pytest.raises(AgentRefused, match=r"power commands off$"):
        await call


async def test_no_answer_means_unavailable(talking: tuple[FakeGuest, GuestChannel]) -> None:
    _, channel = talking
    with pytest.raises(AgentUnavailable, match="no answer to shutdown"):
        await channel.power("shutdown", 0, "", within=0.2)


async def test_ping_and_refresh(talking: tuple[FakeGuest, GuestChannel]) -> None:
    guest, channel = talking

    async def answer() -> None:
        ping = await guest.next_message("Ping")
        await guest.send(gc.GuestMessage(pong=gc.Pong(payload=ping.ping.payload)))

    answering = asyncio.create_task(answer())
    assert await channel.ping(within=10) >= 0
    await answering
    await channel.refresh()
    assert (await guest.next_message("Refresh")).WhichOneof("body") == "refresh"


async def test_commands_need_a_connected_agent(short_tmp: Path) -> None:
    channel = GuestChannel("vm-2", short_tmp / "none.sock", ChannelLimits(), lambda *_: None)
    assert not channel.responsive
    with pytest.raises(AgentUnavailable, match="not connected"):
        await channel.power("shutdown", 0, "", within=1)
