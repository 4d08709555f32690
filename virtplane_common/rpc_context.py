"""The request id across processes: bound for each call a server handles,
and sent along with each call a client makes.

A call's request id is, first found: the x-request-id metadata a caller
sent (the controller sends its own to hostd), the request's request_id
field (a client's idempotency key), or a new one. The server interceptor
binds it, with the x-operation-id metadata and the request's vm_id, in
virtplane_common.log_context for the call; the client interceptor sends
what is bound in the caller's context as metadata.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc

from virtplane_common import log_context
from virtplane_common.interceptors import Call, ServerInterceptor, wrap

REQUEST_ID = "x-request-id"
OPERATION_ID = "x-operation-id"


def _metadata(context: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if key in (REQUEST_ID, OPERATION_ID) and isinstance(value, str):
            found[key] = value
    return found


def _vm_of(request: Any) -> str:
    vm = getattr(request, "vm_id", "") or getattr(request, "vm", "")
    if not vm and request is not None and hasattr(request, "config"):
        vm = getattr(request.config, "vm_id", "")
    return vm if isinstance(vm, str) else ""


class BindRequest(ServerInterceptor):
    """Binds each call's request id (and operation and VM when known)."""

    @asynccontextmanager
    async def _bind(self, call: Call) -> AsyncIterator[None]:
        sent = _metadata(call.context)
        given = getattr(call.request, "request_id", "")
        request_id = sent.get(REQUEST_ID) or (given if isinstance(given, str) else "")
        with log_context.bound(
            request_id=request_id or log_context.new_request_id(),
            operation_id=sent.get(OPERATION_ID, ""),
            vm=_vm_of(call.request),
        ):
            yield

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        return wrap(handler, handler_call_details.method, self._bind)


def _with_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    bound = log_context.current()
    extra = [
        (key, bound[field])
        for key, field in ((REQUEST_ID, "request_id"), (OPERATION_ID, "operation_id"))
        if field in bound
    ]
    if not extra:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
else:  # generic only in grpc's type stubs
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor


class SendRequest(_UnaryUnary, _UnaryStream):
    """Sends the caller's bound request and operation ids with each call."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_context(client_call_details), request)

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_context(client_call_details), request)
