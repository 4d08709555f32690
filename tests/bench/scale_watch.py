"""WatchVms subscribers for the scale benchmark, on the raw stub: the
benchmark's client shares the controller's cores, so it decodes no more of
each message than it measures."""

from __future__ import annotations

import asyncio
import time

import grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

Kind = vm_api.WatchVmsResponse
RUNNING = (vm_pb2.Vm.STATE_POWERING_UP, vm_pb2.Vm.STATE_UP)


class Watcher:
    """One WatchVms subscriber. It notes when each VM is first seen running
    and, with keep_latency, each change's delivery latency: from the time the
    controller stamped the change (its state_changed_time) to its arrival."""

    def __init__(self, channel: grpc.aio.Channel, keep_latency: bool, after_revision: int = 0):
        self.running: dict[str, asyncio.Future[float]] = {}
        self.latencies: list[float] = []
        self.snapshot_done = asyncio.Event()
        self.snapshot_size = 0
        self.revision = 0
        self._grew = asyncio.Condition()
        self._keep_latency = keep_latency
        request = vm_api.WatchVmsRequest(after_revision=after_revision)
        self._call = vm_grpc.VmServiceStub(channel).WatchVms(request)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        last: dict[str, int] = {}
        async for message in self._call:
            now = time.time()
            self.revision = max(self.revision, message.revision)
            if message.kind == Kind.KIND_SNAPSHOT_COMPLETE:
                self.snapshot_done.set()
                continue
            if message.kind == Kind.KIND_SNAPSHOT:
                self.snapshot_size += 1
            if message.kind != Kind.KIND_CHANGED:
                continue
            vm_id, status = message.vm.id, message.vm.status
            if last.get(vm_id) == status.state:
                continue
            last[vm_id] = status.state
            if status.state in RUNNING:
                seen = self._future(vm_id)
                if not seen.done():
                    seen.set_result(time.monotonic())
            if self._keep_latency:
                stamped = status.state_changed_time.ToNanoseconds() / 1e9
                async with self._grew:
                    self.latencies.append(now - stamped)
                    self._grew.notify_all()

    async def opened(self) -> None:
        """Until the snapshot (or the resumed changes) is complete; raises
        if the watch ended first (refused, cut off)."""
        done = asyncio.ensure_future(self.snapshot_done.wait())
        await asyncio.wait((done, self._task), return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.cancel()
            self._task.result()  # the watch's error
            raise RuntimeError("the watch ended before its snapshot was complete")

    def _future(self, vm_id: str) -> asyncio.Future[float]:
        if vm_id not in self.running:
            self.running[vm_id] = asyncio.get_running_loop().create_future()
        return self.running[vm_id]

    async def seen_running(self, vm_id: str) -> float:
        """When (monotonic) the VM was first seen running."""
        return await asyncio.wait_for(self._future(vm_id), 300)

    async def received(self, count: int) -> None:
        """Until count changes have arrived."""
        async with self._grew:
            await self._grew.wait_for(lambda: len(self.latencies) >= count)

    async def close(self) -> None:
        self._call.cancel()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
