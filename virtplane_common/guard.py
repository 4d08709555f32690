"""One server interceptor that checks every call before it runs: the
controller's authentication (controller.auth.interceptor) and hostd's peer
check (hostd.peer_auth) are each a check it runs.

The services in OPEN_SERVICES pass unchecked; unary calls and server streams
(WatchVms, WatchEvents) are checked alike, before their first message; any
other kind of call is not served (UNIMPLEMENTED), never served unchecked.
The check runs in the call's own task, so what it sets in a context variable
is seen by the servicer.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
"""Services open to anyone: the health service answers probes (load
balancers, orchestrators) that hold no credential, and tells nothing but
whether a service is serving; reflection describes the public protos."""

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:  # grpc's classes are generic only in their type stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor
    Context = grpc.aio.ServicerContext

Check = Callable[[str, Context], Awaitable[None]]
"""Checks a call of a method (its full name) before it runs: returns to let
it run, raises or aborts the call to refuse it."""


def service_of(method: str) -> str:
    """The service of a full method name (/package.Service/Method)."""
    return method.strip("/").partition("/")[0]


def _unary(check: Check, behavior: Any, method: str) -> Any:
    async def call(request: Any, context: Context) -> Any:
        await check(method, context)
        return await behavior(request, context)

    return call


def _stream(check: Check, behavior: Any, method: str) -> Any:
    if not inspect.isasyncgenfunction(behavior):
        return _unary(check, behavior, method)

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        await check(method, context)
        async for item in behavior(request, context):
            yield item

    return call


class GuardInterceptor(_ServerInterceptor):
    """Runs check before every call but those of OPEN_SERVICES."""

    def __init__(self, check: Check) -> None:
        self._check = check

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or service_of(method) in OPEN_SERVICES:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(self._check, handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(self._check, handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # no other kind of call is served: UNIMPLEMENTED, never unchecked
