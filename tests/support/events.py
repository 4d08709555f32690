"""Following event streams in tests: `EventLog` keeps a stream's messages in
order as they arrive and waits on them; `HostEvents` reads hostd's events
(its journal, or WatchEvents), `VmEvents` the controller's WatchVms as raw
messages, `VmChanges` the same through virtplane_client's watch (which
resumes by itself), and `vm_until` one VM followed on that watch until it
looks as a test wants.

A test takes a mark(), acts, then waits for what must follow the mark, so
that it never mistakes an earlier event for the one it awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Generic, TypeVar

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from hostd.journal import Journal
from tests.support.waiting import until

T = TypeVar("T")
S = pb.HostVm

EVERY = 0.02
"""How often a wait looks at the events, in seconds."""


class EventLog(Generic[T]):
    """A stream's messages, kept in order as they arrive, with waits on them."""

    def __init__(self, stream: AsyncIterable[T], within: float) -> None:
        self.events: list[T] = []
        self.within = within
        self._task = asyncio.create_task(self._follow(stream))

    async def _follow(self, stream: AsyncIterable[T]) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for event in stream:
                self.events.append(event)

    def mark(self) -> int:
        """Where the events arrived so far end."""
        return len(self.events)

    async def until(self, what: str, found: Callable[[], object]) -> None:
        """Waits until found() holds (it looks at the events, or elsewhere)."""
        await until(found, what=what, within=self.within, every=EVERY)

    async def first(
        self, what: str, match: Callable[[T], object], since: int = 0, within: float | None = None
    ) -> tuple[int, T]:
        """Waits for the first event from since on that match accepts; returns
        its index and the event."""

        def look() -> tuple[int, T] | None:
            return next(
                ((i, e) for i, e in enumerate(self.events[since:], since) if match(e)), None
            )

        found = await until(
            look, lambda hit: hit is not None, what=what, within=within or self.within
        )
        assert found is not None
        return found

    def stop(self) -> None:
        """Stops following (at once)."""
        self._task.cancel()

    async def close(self) -> None:
        """Stops following and waits until the stream is let go."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class HostEvents(EventLog[pb.HostEvent]):
    """hostd's events: VM states, guest reports, migration progress."""

    @classmethod
    def of_journal(cls, journal: Journal, within: float) -> HostEvents:
        """Everything an in-process hostd journals, from the start."""
        return cls(journal.follow(0), within)

    @classmethod
    def of_stub(cls, stub: pb_grpc.HostAgentServiceAsyncStub, within: float) -> HostEvents:
        """A hostd's WatchEvents, from the start."""

        async def events() -> AsyncIterator[pb.HostEvent]:
            async for response in stub.WatchEvents(pb.WatchEventsRequest()):
                yield response.event

        return cls(events(), within)

    def of(self, kind: str, vm_id: str, since: int = 0) -> list[pb.HostEvent]:
        """The VM's events of one kind (vm_state, guest_report, migration) from since on."""
        return [
            e
            for e in self.events[since:]
            if e.WhichOneof("payload") == kind and getattr(e, kind).vm_id == vm_id
        ]

    def states(self, vm_id: str, since: int = 0) -> list[S]:
        return [e.vm_state for e in self.of("vm_state", vm_id, since)]

    def reports(self, vm_id: str, since: int = 0) -> list[pb.HostEvent]:
        return self.of("guest_report", vm_id, since)

    def up_reports(self, vm_id: str, since: int = 0) -> list[pb.HostEvent]:
        """The guest reports that say how long the guest has been up."""
        return [e for e in self.reports(vm_id, since) if e.guest_report.guest.uptime_seconds]

    def migrations(self, vm_id: str, since: int = 0) -> list[pb.MigrationProgress]:
        return [e.migration for e in self.of("migration", vm_id, since)]

    def when(self, vm_id: str, state: S.State.ValueType, since: int) -> pb.HostEvent:
        """The VM's first event into state from since on."""
        for event in self.of("vm_state", vm_id, since):
            if event.vm_state.state == state:
                return event
        raise AssertionError(f"{S.State.Name(state)} not seen")

    def after(self, event: pb.HostEvent) -> int:
        """The mark just after event."""
        return self.events.index(event) + 1

    async def state(self, vm_id: str, state: S.State.ValueType, since: int) -> list[S]:
        """The VM's states from since until it reaches state."""
        await self.until(
            S.State.Name(state), lambda: state in [s.state for s in self.states(vm_id, since)]
        )
        seen = self.states(vm_id, since)
        return seen[: [s.state for s in seen].index(state) + 1]

    async def report(self, vm_id: str, since: int, *, responding: bool = False) -> pb.HostEvent:
        """The first guest report from since on that says how long the guest has
        been up (with responding, from an agent that responds: a silent one's
        facts are stale). Fails at once, with the VM's states, if the VM goes
        DOWN first."""

        def fresh() -> list[pb.HostEvent]:
            return [
                e
                for e in self.up_reports(vm_id, since)
                if not responding
                or e.guest_report.guest.agent_state == vm_pb2.GuestInfo.AGENT_STATE_RESPONDING
            ]

        def reported() -> bool:
            down = [s for s in self.states(vm_id, since) if s.state == S.STATE_DOWN]
            if down and not fresh():
                pytest.fail(f"VM {vm_id} went DOWN before it reported: {down[-1]}")
            return bool(fresh())

        try:
            await self.until(f"a guest report of {vm_id}", reported)
        except BaseException:
            print(f"states of {vm_id}:", [S.State.Name(s.state) for s in self.states(vm_id, 0)])
            raise
        return fresh()[0]


class VmEvents(EventLog[vm_api.WatchVmsResponse]):
    """The controller's WatchVms, from the start."""

    @classmethod
    def of_stub(cls, stub: vm_grpc.VmServiceAsyncStub, within: float) -> VmEvents:
        return cls(stub.WatchVms(vm_api.WatchVmsRequest()), within)

    def states(self, vm_id: str) -> list[int]:
        """The distinct successive states the watch saw vm_id in."""
        seen: list[int] = []
        for m in self.events:
            if m.vm.id == vm_id and (not seen or seen[-1] != m.vm.status.state):
                seen.append(m.vm.status.state)
        return seen

    async def next_vm(
        self, vm_id: str, check: Callable[[vm_pb2.Vm], object], what: str = "", since: int = 0,
        within: float | None = None,
    ) -> tuple[int, vm_pb2.Vm]:  # fmt: skip
        """The index and VM of the first message for vm_id from since on that
        check accepts."""
        index, message = await self.first(
            what or f"a message for VM {vm_id}",
            lambda m: m.vm.id == vm_id and check(m.vm),
            since,
            within,
        )
        return index, message.vm

    async def wait_for(
        self, vm_id: str, check: Callable[[vm_pb2.Vm], object], wait: float | None = None
    ) -> vm_pb2.Vm:
        """The first VM message for vm_id satisfying check(vm)."""
        return (await self.next_vm(vm_id, check, within=wait))[1]


class VmChanges(EventLog[vp.VmChange]):
    """The controller's VM changes through the client's watch, from the start."""

    @classmethod
    def of_client(cls, client: vp.AsyncClient, within: float) -> VmChanges:
        return cls(client.vms.watch(), within)

    def states(self, vm_id: str, since: int = 0) -> list[vp.VmState]:
        """The distinct successive states the watch saw vm_id in, from since on."""
        seen: list[vp.VmState] = []
        for c in self.events[since:]:
            if (
                c.vm is not None
                and c.vm.id == vm_id
                and (not seen or seen[-1] != c.vm.status.state)
            ):
                seen.append(c.vm.status.state)
        return seen

    async def next_vm(
        self, vm_id: str, check: Callable[[vp.Vm], object], what: str = "", since: int = 0,
        within: float | None = None,
    ) -> tuple[int, vp.Vm]:  # fmt: skip
        """The index and VM of the first change of vm_id from since on that
        check accepts."""
        index, change = await self.first(
            what or f"a change of VM {vm_id}",
            lambda c: c.vm is not None and c.vm.id == vm_id and check(c.vm),
            since,
            within,
        )
        assert change.vm is not None
        return index, change.vm

    async def wait_for(
        self, vm_id: str, check: Callable[[vp.Vm], object], wait: float | None = None
    ) -> vp.Vm:
        """The first VM change of vm_id satisfying check(vm)."""
        return (await self.next_vm(vm_id, check, within=wait))[1]


async def vm_until(
    client: vp.AsyncClient, ref: str, check: Callable[[vp.Vm], object], within: float
) -> vp.Vm:
    """The VM (named by id or name; it may not exist yet) as the client's
    watch first shows it accepted by check, within seconds."""
    last: vp.Vm | None = None
    try:
        async with asyncio.timeout(within):
            async with contextlib.aclosing(client.vms.watch()) as changes:
                async for change in changes:
                    vm = change.vm
                    if vm is not None and ref in (vm.id, vm.name):
                        last = vm
                        if check(vm):
                            return vm
    except TimeoutError:
        pass
    raise AssertionError(f"VM {ref} not as wanted after {within} s; last seen: {last}")
