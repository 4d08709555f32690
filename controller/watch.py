"""Fan-out of VM changes to WatchVms subscribers.

Each subscriber has a bounded queue; one that falls behind is cut off (its
stream ends with RESOURCE_EXHAUSTED) instead of slowing the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

from virtplane.v1 import vm_pb2, vm_service_pb2

from virtplane_common.errors import ResourceExhausted

Kind = vm_service_pb2.WatchVmsResponse.Kind


class TooSlow(ResourceExhausted):
    def __init__(self) -> None:
        super().__init__(
            "client too slow: the watch fell too far behind and was cut off; watch again"
            " with after_revision set to the last revision read"
        )


@dataclass(frozen=True)
class Change:
    kind: Kind.ValueType
    vm: vm_pb2.Vm
    revision: int

    @cached_property
    def message(self) -> vm_service_pb2.WatchVmsResponse:
        """The change as WatchVms sends it: built once, shared by every
        subscriber's stream."""
        return vm_service_pb2.WatchVmsResponse(kind=self.kind, vm=self.vm, revision=self.revision)


class Subscription:
    def __init__(self, hub: WatchHub, size: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Change] = asyncio.Queue(maxsize=size)
        # Set when the queue overflowed: the subscriber is to be cut off.
        self.cut_off = asyncio.Event()

    @property
    def overflowed(self) -> bool:
        return self.cut_off.is_set()

    def offer(self, change: Change) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.cut_off.set()
            # Wake the reader so it notices.
            self._queue.get_nowait()
            self._queue.put_nowait(change)

    async def next(self) -> Change:
        change = await self._queue.get()
        if self.overflowed:
            raise TooSlow()
        return change

    def close(self) -> None:
        self._hub.unsubscribe(self)


class WatchHub:
    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self._queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def publish(self, change: Change) -> None:
        for sub in list(self._subscribers):
            sub.offer(change)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
