"""watch(): a snapshot then changes, resumed by itself from its last revision
when the controller restarts; the blocking client's iterator (each engine)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator

import grpc
import pytest

from tests.client.conftest import QUICK
from tests.support.controller_rig import Rig, close_rig, config, open_rig
from tests.support.stack import free_port
from tests.support.waiting import until
from virtplane_client import (
    AsyncClient,
    ChangeKind,
    Client,
    VmChange,
    VmSpec,
    VmUpdate,
    errors,
)

WAIT = 30.0


async def _until(changes: AsyncGenerator[VmChange, None], done: type | object) -> list[VmChange]:
    """The changes up to and with the first that done accepts."""
    seen: list[VmChange] = []
    async with asyncio.timeout(WAIT):
        async for change in changes:
            seen.append(change)
            if done(change):  # type: ignore[operator]
                return seen
    raise AssertionError("the watch ended")


def _complete(change: VmChange) -> bool:
    return change.kind is ChangeKind.SNAPSHOT_COMPLETE


async def test_a_watch_resumes_from_its_revision_after_a_controller_restart(
    database_url: str, vm_spec: VmSpec
) -> None:
    cfg = dataclasses.replace(config(database_url), listen=f"127.0.0.1:{free_port()}")
    first = await open_rig(cfg)
    client = AsyncClient(first.address, credentials=first.credentials, backoff=QUICK)
    changes = client.vms.watch()
    try:
        vm = await client.vms.create("a", vm_spec)
        snapshot = await _until(changes, _complete)
        assert [(c.kind, c.vm.id if c.vm else "") for c in snapshot] == [
            (ChangeKind.SNAPSHOT, vm.id),
            (ChangeKind.SNAPSHOT_COMPLETE, ""),
        ]
        assert not snapshot[-1].resumed
        await close_rig(first)
        second = await open_rig(cfg)
        try:
            changed = await client.vms.update("a", VmUpdate(cmdline="after"))
            # The change comes in the catch-up (before its SNAPSHOT_COMPLETE)
            # or after it, as the update raced the reconnection.
            seen = await _until(changes, _complete)
            if not any(c.kind is ChangeKind.CHANGED for c in seen):
                seen += await _until(changes, lambda c: c.kind is ChangeKind.CHANGED)
        finally:
            await close_rig(second)
    finally:
        await changes.aclose()
        await client.close()
    assert ChangeKind.SNAPSHOT not in [c.kind for c in seen]  # resumed, not a fresh snapshot
    resumed = [c for c in seen if c.kind is ChangeKind.SNAPSHOT_COMPLETE]
    assert resumed and all(c.resumed for c in resumed)
    [last] = [c for c in seen if c.kind is ChangeKind.CHANGED]  # once, not repeated
    assert last.vm is not None and last.vm.spec.boot.cmdline == "after"
    assert last.revision == changed.status.revision > snapshot[-1].revision


async def test_a_watch_cut_off_as_too_slow_resumes_and_misses_nothing(
    database_url: str, vm_spec: VmSpec
) -> None:
    rig = await open_rig(config(database_url, watch_queue_size=8))
    # A channel that takes no more than HTTP/2's initial window: a reader that
    # pauses is soon cut off with RESOURCE_EXHAUSTED.
    channel = rig.open_channel(options=[("grpc.http2.bdp_probe", 0)])
    client = AsyncClient(channel=channel, backoff=QUICK)
    changes = client.vms.watch()
    try:
        await client.vms.create("a", vm_spec)
        first = await _until(changes, _complete)
        big = "x" * 4000  # under the 4096-character cmdline limit
        for i in range(60):  # while the watch reads nothing
            last = await client.vms.update("a", VmUpdate(cmdline=f"{i} {big}"))
        await until(lambda: _subscribers(rig), lambda n: n == 0)  # cut off
        # What it had read before the cut, then the changes since, then the
        # resumed stream's SNAPSHOT_COMPLETE.
        seen = await _until(changes, lambda c: _complete(c) and c.revision >= last.status.revision)
    finally:
        await changes.aclose()
        await channel.close(None)
        await close_rig(rig)
    assert ChangeKind.SNAPSHOT not in [c.kind for c in seen]
    assert [c.resumed for c in seen if c.kind is ChangeKind.SNAPSHOT_COMPLETE] == [True]
    updates = [c for c in seen if c.kind is ChangeKind.CHANGED]
    revisions = [c.revision for c in updates]
    assert revisions == sorted(set(revisions)) and revisions[0] > first[-1].revision
    assert updates[-1].vm is not None and updates[-1].vm.spec.boot.cmdline.startswith("59 ")


async def _subscribers(rig: Rig) -> int:
    return rig.controller.store.hub.subscriber_count


async def test_a_watch_that_never_opened_raises_at_once(free_address: str) -> None:
    async with AsyncClient(free_address, backoff=QUICK) as client:
        with pytest.raises(errors.Unavailable) as err:
            async with asyncio.timeout(WAIT):
                await anext(client.vms.watch())
    assert err.value.code is grpc.StatusCode.UNAVAILABLE


async def test_the_blocking_client_watches_with_an_iterator(rig: Rig, vm_spec: VmSpec) -> None:
    def snapshot() -> list[VmChange]:
        seen = []
        with Client(rig.address, credentials=rig.credentials) as client:
            client.vms.create("a", vm_spec)
            for change in client.vms.watch():  # closed when the loop ends
                seen.append(change)
                if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
                    return seen
        raise AssertionError("the watch ended")

    seen = await asyncio.wait_for(asyncio.to_thread(snapshot), WAIT)
    assert [c.kind for c in seen] == [ChangeKind.SNAPSHOT, ChangeKind.SNAPSHOT_COMPLETE]
    assert seen[0].vm is not None and seen[0].vm.name == "a"
