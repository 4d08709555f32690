"""WatchVms as an async iterator that resumes by itself, and waiting for a
VM's state on it.

`resuming()` keeps the revision of the last change it passed on (once the
stream's snapshot, or its catch-up, is complete); when the stream breaks
(UNAVAILABLE: the controller restarts; RESOURCE_EXHAUSTED: the reader was too
slow) or ends, it opens it again from that revision after a delay that grows
to a bound, so the caller sees every change once, in order. Any other error,
and any error before a first message arrived (a wrong address, the controller
down from the start), is raised as the client's exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import grpc
from virtplane.v1 import vm_service_pb2 as vm_api

from virtplane_client import convert, errors
from virtplane_client.models import ChangeKind, Vm, VmChange, VmState

# The codes after which a watch is opened again.
RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts to reopen a broken stream: initial, growing by
    factor up to maximum (seconds); back to initial once a message arrives."""

    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0


DEFAULT_BACKOFF = Backoff()


if TYPE_CHECKING:  # grpc's call classes are generic only in their stubs
    Stream: TypeAlias = grpc.aio.UnaryStreamCall[vm_api.WatchVmsRequest, vm_api.WatchVmsResponse]
    Opener: TypeAlias = Callable[[int], Stream]


async def resuming(
    open_from: Opener, after: int, backoff: Backoff
) -> AsyncGenerator[VmChange, None]:
    """The changes of the streams open_from(revision) opens, reopened from
    the last revision passed on whenever one breaks."""
    marker = after
    delay = backoff.initial
    opened = False  # a stream that never opened did not break: its error is raised
    while True:
        live = False  # past this stream's snapshot (or catch-up)
        stream = open_from(marker)
        try:
            async for message in stream:
                change = convert.change(message)
                if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
                    live = True
                if live:
                    marker = max(marker, change.revision)
                delay, opened = backoff.initial, True
                yield change
        except grpc.aio.AioRpcError as exc:
            if not opened or exc.code() not in RETRY:
                raise errors.from_rpc_error(exc) from exc
        finally:
            stream.cancel()
        await asyncio.sleep(delay)
        delay = min(delay * backoff.factor, backoff.maximum)


async def wait_for(
    changes: AsyncGenerator[VmChange, None], ref: str, states: Collection[VmState]
) -> Vm:
    """The VM as it first is, in changes, in one of states; NotFound when it
    is deleted first."""
    async with contextlib.aclosing(changes):
        async for change in changes:
            if change.vm is None:
                continue
            if change.kind is ChangeKind.DELETED:
                raise errors.NotFound(f"VM {ref!r} not found")
            if change.vm.status.state in states:
                return change.vm
    raise errors.Unavailable("the watch ended")  # resuming() never ends
