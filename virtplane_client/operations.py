"""`client.operations`: the operations the VM verbs return, awaited to their
end, and the audit log (the async core)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable

import grpc
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import operation_service_pb2_grpc as op_grpc

from virtplane_client import convert, errors
from virtplane_client._rpc import call
from virtplane_client.models import Event, Operation, OperationState

# The longest wait WaitOperation takes in one call.
MAX_WAIT_SECONDS = 600


class AsyncOperations:
    """The OperationService."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = op_grpc.OperationServiceStub(channel)

    async def get(self, operation: Operation | str) -> Operation:
        request = op_api.GetOperationRequest(id=_id(operation))
        return convert.operation((await call(self._stub.GetOperation, request)).operation)

    async def list(
        self, *, vm: str = "", states: Iterable[OperationState] = (), limit: int = 100
    ) -> tuple[Operation, ...]:
        """The newest operations first, of one VM or any: at most limit (0:
        one page of the server's default size)."""
        request = op_api.ListOperationsRequest(
            vm=vm,
            states=[convert.operation_state_message(s) for s in states],
            page_size=limit,
        )
        found: tuple[Operation, ...] = ()
        while True:
            reply = await call(self._stub.ListOperations, request)
            found += tuple(convert.operation(op) for op in reply.operations)
            if not reply.next_page_token or len(found) >= limit:
                return found
            request.page_token = reply.next_page_token
            request.page_size = limit - len(found)

    async def wait(
        self,
        operation: Operation | str,
        timeout: float | None = None,  # noqa: ASYNC109 (the sync Client has the same signature)
    ) -> Operation:
        """The operation once it is done, or as it is after timeout seconds
        (None: no limit): check .done."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            seconds, last = MAX_WAIT_SECONDS, False
            if deadline is not None:
                left = deadline - loop.time()
                seconds, last = min(seconds, max(1, math.ceil(left))), left <= seconds
            request = op_api.WaitOperationRequest(id=_id(operation), timeout_seconds=seconds)
            op = convert.operation((await call(self._stub.WaitOperation, request)).operation)
            if op.done or last:
                return op

    async def result(
        self,
        operation: Operation | str,
        timeout: float | None = None,  # noqa: ASYNC109 (the sync Client has the same signature)
    ) -> Operation:
        """The operation once it SUCCEEDED; OperationFailed when it FAILED,
        WaitTimeout when it is not done after timeout seconds."""
        op = await self.wait(operation, timeout)
        if not op.done:
            raise errors.WaitTimeout(f"operation {op.id} not done after {timeout} s")
        if op.failed:
            raise errors.OperationFailed(op)
        return op

    async def events(
        self, *, vm_id: str = "", host_id: str = "", after_id: int = 0, limit: int = 100
    ) -> tuple[Event, ...]:
        """The audit log, oldest first: at most limit events after after_id."""
        request = op_api.ListEventsRequest(
            vm_id=vm_id, host_id=host_id, after_id=after_id, page_size=limit
        )
        return tuple(convert.event(e) for e in (await call(self._stub.ListEvents, request)).events)


def _id(operation: Operation | str) -> str:
    return operation if isinstance(operation, str) else operation.id
