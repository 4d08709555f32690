"""The host's ordered event journal: what WatchEvents streams.

The journal keeps its events as the API's messages (it is the stream's
buffer, an edge): a VM's state and a migration's progress arrive as domain
values and are converted here.

Every event gets the process's host_epoch and the next sequence number,
from 1. The last `size` events, and no more than `max_bytes` of them
(serialised), are kept so that a watcher can resume after a disconnect: a
chatty guest's large reports push out old events, never grow hostd. A
watcher asking from before the oldest kept event, or from another epoch,
cannot be given what it missed: it needs a snapshot first (needs_snapshot;
the servicer sends one, then follows from its position).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert, model

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""The most the kept events may weigh, serialised."""


class Journal:
    def __init__(
        self,
        size: int,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        epoch: str | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if size < 1:
            raise ValueError(f"journal size must be at least 1, not {size}")
        if max_bytes < 1:
            raise ValueError(f"journal max_bytes must be at least 1, not {max_bytes}")
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self.epoch = epoch or secrets.token_hex(8)
        self._clock = clock
        self._events: deque[tuple[pb.HostEvent, int]] = deque()
        self._last = 0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def last_sequence(self) -> int:
        return self._last

    @property
    def kept_bytes(self) -> int:
        """The serialised size of the events kept."""
        return self._bytes

    def append_vm_state(self, vm: model.VmStatus) -> pb.HostEvent:
        event = self._next()
        event.vm_state.CopyFrom(convert.status_to_proto(vm))
        return self._keep(event)

    def append_guest_report(self, vm_id: str, guest: vm_pb2.GuestInfo) -> pb.HostEvent:
        event = self._next()
        event.guest_report.vm_id = vm_id
        event.guest_report.guest.CopyFrom(guest)
        return self._keep(event)

    def append_migration(self, progress: model.MigrationProgress) -> pb.HostEvent:
        event = self._next()
        event.migration.CopyFrom(convert.progress_to_proto(progress))
        return self._keep(event)

    def append_hook_failed(self, vm_id: str, point: str, hook: str, message: str) -> pb.HostEvent:
        event = self._next()
        event.hook_failed.vm_id = vm_id
        event.hook_failed.point = point
        event.hook_failed.hook = hook
        event.hook_failed.message = message
        return self._keep(event)

    def needs_snapshot(self, after_sequence: int, epoch: str = "") -> bool:
        """Whether the events after after_sequence are no longer all kept.

        True for a cursor of another epoch, one beyond the last event (hostd
        restarted since), and one older than the oldest kept event.
        """
        if (epoch and epoch != self.epoch) or after_sequence > self._last:
            return True
        return after_sequence + 1 < self._oldest()

    def after(self, sequence: int) -> list[pb.HostEvent]:
        """The kept events after sequence, oldest first.

        A sequence beyond the last one cannot come from this epoch (hostd
        restarted since): the watcher gets everything kept.
        """
        if sequence > self._last:
            sequence = 0
        start = max(0, sequence + 1 - self._oldest())
        return [event for event, _ in itertools.islice(self._events, start, None)]

    def _oldest(self) -> int:
        return self._events[0][0].sequence if self._events else self._last + 1

    async def follow(self, after_sequence: int) -> AsyncIterator[pb.HostEvent]:
        """Yields the kept events after after_sequence, then each new one, until close()."""
        cursor = after_sequence
        while not self._closed:
            batch = self.after(cursor)
            if not batch:
                await self._changed.wait()
                continue
            for event in batch:
                yield event
                cursor = event.sequence

    def close(self) -> None:
        """Ends every follow(), e.g. at shutdown; events can still be appended."""
        self._closed = True
        self._changed.set()

    def _next(self) -> pb.HostEvent:
        self._last += 1
        time_ = Timestamp()
        time_.FromNanoseconds(self._clock())
        return pb.HostEvent(host_epoch=self.epoch, sequence=self._last, time=time_)

    def _keep(self, event: pb.HostEvent) -> pb.HostEvent:
        size = event.ByteSize()
        self._events.append((event, size))
        self._bytes += size
        events = self._events
        while len(events) > self._size or (self._bytes > self._max_bytes and len(events) > 1):
            self._bytes -= events.popleft()[1]
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return event
