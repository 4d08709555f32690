"""A failed AddHost closes the channel it opened to probe the address (the
controller's own gRPC API, on each database engine)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from virtplane.v1 import host_service_pb2 as host_api

from controller import host_client
from controller.errors import HostUnreachable
from tests.support.controller_rig import Rig, error
from virtplane_common.errors import FailedPrecondition


class Channels:
    """Counts the controller's channels to hosts that are open."""

    def __init__(self) -> None:
        self.open: set[int] = set()


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    counted = Channels()
    real_open = host_client.open_channel

    def counting_open(
        address: str, host_id: str, credentials: grpc.ChannelCredentials | None
    ) -> grpc.aio.Channel:
        channel = real_open(address, host_id, credentials)
        counted.open.add(id(channel))
        real_close = channel.close

        async def close(grace: float | None = None) -> None:
            counted.open.discard(id(channel))
            await real_close(grace)

        channel.close = close  # type: ignore[method-assign]
        return channel

    monkeypatch.setattr(host_client, "open_channel", counting_open)
    yield counted


async def test_a_refused_probe_leaves_no_channel_open(
    rig: Rig, channels: Channels, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(_self: host_client.HostClient) -> None:
        raise FailedPrecondition("host 'h1' refused: PERMISSION_DENIED: not you")

    monkeypatch.setattr(host_client.HostClient, "capabilities", refuse)
    request = host_api.AddHostRequest(name="h1", address="127.0.0.1:45001")
    code, _ = await error(rig.hosts.AddHost(request))
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert channels.open == set()


async def test_a_lost_race_for_the_name_leaves_no_channel_open(
    rig: Rig, channels: Channels, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_probing = asyncio.Barrier(2)

    async def unreachable(self: host_client.HostClient) -> None:
        await both_probing.wait()  # both calls passed the name check
        raise HostUnreachable(self.name, "down")

    monkeypatch.setattr(host_client.HostClient, "capabilities", unreachable)
    request = host_api.AddHostRequest(name="h1", address="127.0.0.1:45002")
    results = await asyncio.gather(
        rig.hosts.AddHost(request), rig.hosts.AddHost(request), return_exceptions=True
    )
    added = [r for r in results if not isinstance(r, BaseException)]
    assert len(added) == 1  # the other lost the name (its code is the validators' concern)
    assert len(channels.open) == 1  # the added host's, kept for its monitor
    await rig.hosts.RemoveHost(host_api.RemoveHostRequest(host=added[0].host.id))
    assert channels.open == set()


async def test_a_cancelled_add_leaves_no_channel_open(
    rig: Rig, channels: Channels, monkeypatch: pytest.MonkeyPatch
) -> None:
    probing = asyncio.Event()

    async def hang(_self: host_client.HostClient) -> None:
        probing.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(host_client.HostClient, "capabilities", hang)
    call = rig.hosts.AddHost(host_api.AddHostRequest(name="h1", address="127.0.0.1:45003"))
    await asyncio.wait_for(probing.wait(), 10)
    call.cancel()
    for _ in range(100):
        if not channels.open:
            break
        await asyncio.sleep(0.05)
    assert channels.open == set()
