"""WatchVms and WaitOperation are limited per client (its principal; its
peer's address without authentication): over the limit RESOURCE_EXHAUSTED,
and a slot comes back when its call ends or is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.stream_slots import StreamSlots
from tests.support.controller_rig import Rig, close_rig, config, open_rig
from virtplane_common.errors import ResourceExhausted

LIMIT = 2
SNAPSHOT_DONE = vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[Rig]:
    opened = await open_rig(config(database_url, max_streams_per_client=LIMIT))
    yield opened
    await close_rig(opened)


async def _watching(rig: Rig) -> Any:
    stream: Any = rig.vms.WatchVms(vm_api.WatchVmsRequest())
    assert (await stream.read()).kind == SNAPSHOT_DONE
    return stream


async def test_watches_over_the_limit_are_refused_until_one_ends(limited: Rig) -> None:
    streams = [await _watching(limited) for _ in range(LIMIT)]
    over = limited.vms.WatchVms(vm_api.WatchVmsRequest())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await over.read()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {LIMIT} per client" in (refused.value.details() or "")

    streams[0].cancel()
    for _ in range(100):  # the server sees the cancellation a moment later
        try:
            streams[0] = await _watching(limited)
            break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the cancelled watch's slot never came back")
    for stream in streams:
        stream.cancel()


async def test_wait_operation_shares_the_watches_limit(limited: Rig) -> None:
    streams = [await _watching(limited) for _ in range(LIMIT)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await limited.ops.WaitOperation(op_api.WaitOperationRequest(id="x", timeout_seconds=1))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    for stream in streams:
        stream.cancel()


def test_a_slot_is_freed_however_the_call_ends() -> None:
    slots = StreamSlots(1)
    with pytest.raises(RuntimeError), slots.hold("a", "WatchVms"):
        raise RuntimeError("the stream broke")
    assert slots.held("a") == 0
    with slots.hold("a", "WatchVms"):
        with slots.hold("b", "WatchVms"):  # another client has its own
            assert slots.held("b") == 1
        with pytest.raises(ResourceExhausted), slots.hold("a", "WaitOperation"):
            pass
    assert slots.held("a") == 0
