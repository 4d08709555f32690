"""WatchVms through gRPC: filters, resuming from a revision, and a client
that does not read being cut off without holding up the others. On each
engine; VMs change through UpdateVm, so most of it needs no host."""

from __future__ import annotations

# Raw stubs: this module is about WatchVms' messages and their order on the wire.
import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from sqlalchemy import text
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.controller_rig import WAIT as STATE_WAIT
from tests.support.controller_rig import Rig, close_rig, config, open_rig, spec
from tests.support.rig_hosts import add_test_host
from tests.support.served import Served
from virtplane_client import VmState

K = vm_api.WatchVmsResponse
S = vm_pb2.Vm
WAIT = 30.0


async def _create(rig: Rig, name: str, boot: vm_pb2.BootSource) -> vm_pb2.Vm:
    return (await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))).vm


async def _set_cmdline(rig: Rig, vm: str, cmdline: str) -> vm_pb2.Vm:
    request = vm_api.UpdateVmRequest(
        vm=vm,
        vm_update=vm_pb2.Vm(spec=vm_pb2.VmSpec(boot=vm_pb2.BootSource(cmdline=cmdline))),
        update_mask=FieldMask(paths=["spec.boot.cmdline"]),
    )
    return (await rig.vms.UpdateVm(request)).vm


class _Reader:
    """Reads a watch into a list."""

    def __init__(self, stub: vm_grpc.VmServiceAsyncStub, request: vm_api.WatchVmsRequest) -> None:
        self.messages: list[K] = []
        self.call = stub.WatchVms(request)
        self._it: AsyncIterator[K] = self.call.__aiter__()

    async def until_complete(self) -> K:
        """The messages up to and with KIND_SNAPSHOT_COMPLETE."""
        while True:
            msg = await asyncio.wait_for(self._it.__anext__(), WAIT)
            self.messages.append(msg)
            if msg.kind == K.KIND_SNAPSHOT_COMPLETE:
                return msg

    async def next(self) -> K:
        msg = await asyncio.wait_for(self._it.__anext__(), WAIT)
        self.messages.append(msg)
        return msg

    def close(self) -> None:
        self.call.cancel()


async def test_a_watch_of_some_vms_sees_only_them(rig: Rig, boot: vm_pb2.BootSource) -> None:
    a, b = await _create(rig, "a", boot), await _create(rig, "b", boot)
    watch = _Reader(rig.vms, vm_api.WatchVmsRequest(vm_ids=[a.id]))
    try:
        done = await watch.until_complete()
        assert [(m.kind, m.vm.id) for m in watch.messages[:-1]] == [(K.KIND_SNAPSHOT, a.id)]
        assert not done.resumed
        await _set_cmdline(rig, "b", "ignored")
        changed = await _set_cmdline(rig, "a", "seen")
        msg = await watch.next()
        assert (msg.kind, msg.vm.id, msg.revision) == (
            K.KIND_CHANGED,
            a.id,
            changed.status.revision,
        )
        assert msg.vm.spec.boot.cmdline == "seen"
    finally:
        watch.close()
    del b


async def test_a_watch_of_a_host_sees_a_vm_leave_it(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    name = f"w-{uuid.uuid4().hex[:8]}"
    vm = await _create(rig, name, boot)
    await _create(rig, "elsewhere", boot)
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=STATE_WAIT)
    watch = _Reader(rig.vms, vm_api.WatchVmsRequest(host="h1"))
    try:
        await watch.until_complete()
        assert [m.vm.name for m in watch.messages[:-1]] == [name]
        await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
        # POWERING_DOWN, then DOWN: the VM leaves the host, and is sent as it leaves.
        while (msg := await watch.next()).vm.status.state != S.STATE_DOWN:
            assert msg.vm.id == vm.id
        assert msg.vm.status.host_id == ""
        await _set_cmdline(rig, name, "not on the host any more")
        marker = await _set_cmdline(rig, "elsewhere", "x")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watch.next(), 0.5)
        assert marker.status.revision > msg.revision
    finally:
        watch.close()


async def test_a_watch_resumes_after_a_revision(rig: Rig, boot: vm_pb2.BootSource) -> None:
    a, b = await _create(rig, "a", boot), await _create(rig, "b", boot)
    first = _Reader(rig.vms, vm_api.WatchVmsRequest())
    seen = (await first.until_complete()).revision
    first.close()
    assert seen == max(a.status.revision, b.status.revision)

    changed = await _set_cmdline(rig, "a", "after")
    await rig.vms.DeleteVm(vm_api.DeleteVmRequest(vm="b"))
    c = await _create(rig, "c", boot)

    again = _Reader(rig.vms, vm_api.WatchVmsRequest(after_revision=seen))
    try:
        done = await again.until_complete()
        assert done.resumed and not done.reason
        got = [(m.kind, m.vm.id) for m in again.messages[:-1]]
        assert got == [(K.KIND_CHANGED, a.id), (K.KIND_DELETED, b.id), (K.KIND_CHANGED, c.id)]
        revisions = [m.revision for m in again.messages[:-1]]
        assert revisions == sorted(revisions) and revisions[0] == changed.status.revision
        assert done.revision == c.status.revision
        # And it goes on with the changes.
        later = await _set_cmdline(rig, "c", "later")
        msg = await again.next()
        assert (msg.vm.id, msg.revision) == (c.id, later.status.revision)
    finally:
        again.close()


async def test_a_revision_it_cannot_resume_from_gets_a_snapshot(
    rig: Rig, boot: vm_pb2.BootSource
) -> None:
    a = await _create(rig, "a", boot)
    newer = _Reader(rig.vms, vm_api.WatchVmsRequest(after_revision=a.status.revision + 100))
    done = await newer.until_complete()
    newer.close()
    assert not done.resumed and "is newer than the newest" in done.reason
    assert [m.kind for m in newer.messages] == [K.KIND_SNAPSHOT, K.KIND_SNAPSHOT_COMPLETE]

    await _create(rig, "b", boot)
    # As after a migration from a schema that kept no record of deletions.
    with rig.controller.db.engine.begin() as conn:
        conn.execute(text("UPDATE revision_counter SET resume_floor = value"))
    older = _Reader(rig.vms, vm_api.WatchVmsRequest(after_revision=a.status.revision))
    done = await older.until_complete()
    older.close()
    assert not done.resumed and "is older than the oldest" in done.reason
    assert [m.kind for m in older.messages] == [K.KIND_SNAPSHOT] * 2 + [K.KIND_SNAPSHOT_COMPLETE]


async def test_a_client_that_does_not_read_is_cut_off_and_others_are_not_slowed(
    database_url: str, boot: vm_pb2.BootSource
) -> None:
    rig = await open_rig(config(database_url, watch_queue_size=8))
    # A client channel that takes no more than HTTP/2's initial window.
    slow_channel = rig.open_channel(options=[("grpc.http2.bdp_probe", 0)])
    try:
        await _create(rig, "a", boot)
        slow = _Reader(vm_grpc.VmServiceStub(slow_channel), vm_api.WatchVmsRequest())
        await slow.until_complete()  # and then reads nothing
        fast = _Reader(rig.vms, vm_api.WatchVmsRequest())
        await fast.until_complete()
        big = "x" * 4000  # under the 4096-character cmdline limit
        updates = 60
        for i in range(updates):
            await _set_cmdline(rig, "a", f"{i} {big}")
            # The fast client keeps up, whatever the slow one does.
            assert (await fast.next()).vm.spec.boot.cmdline.startswith(f"{i} ")
        assert rig.controller.store.hub.subscriber_count == 1  # the slow one is gone
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                await slow.next()
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.value.details() or "").startswith("client too slow")
        assert len(slow.messages) < updates + 2  # it got what it read before the cut
        fast.close()
    finally:
        await slow_channel.close(None)
        await close_rig(rig)
