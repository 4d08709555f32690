"""Running code around every RPC handler, for server interceptors that
observe calls (virtplane_common.rpc_metrics, virtplane_common.rpc_context)
rather than change what they answer.

wrap() gives back the handler with its behaviour run inside around(call),
an async context manager: around a unary call's await, around the whole of
a server stream's iteration (so that it sees how the stream ended).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]
else:  # grpc's classes are generic only in their type stubs
    ServerInterceptor = grpc.aio.ServerInterceptor
    Context = grpc.aio.ServicerContext


@dataclass(frozen=True)
class Call:
    """One RPC as an observer sees it."""

    method: str
    """The full method name, /package.Service/Method."""
    request: Any
    context: Context
    streaming: bool
    """A server stream: its duration is the stream's life, not a latency."""

    @property
    def service(self) -> str:
        return self.method.strip("/").partition("/")[0]

    @property
    def name(self) -> str:
        return self.method.rpartition("/")[2]


Around = Callable[[Call], AbstractAsyncContextManager[None]]


def _unary(behavior: Callable[..., Awaitable[Any]], method: str, around: Around) -> Any:
    async def call(request: Any, context: Context) -> Any:
        async with around(Call(method, request, context, streaming=False)):
            return await behavior(request, context)

    return call


def _stream(behavior: Callable[..., Any], method: str, around: Around) -> Any:
    if not inspect.isasyncgenfunction(behavior):
        # A streaming handler may also be a coroutine that writes to its context.
        async def writes(request: Any, context: Context) -> Any:
            async with around(Call(method, request, context, streaming=True)):
                return await behavior(request, context)

        return writes

    async def call(request: Any, context: Context) -> AsyncIterator[Any]:
        async with around(Call(method, request, context, streaming=True)):
            async for item in behavior(request, context):
                yield item

    return call


def wrap(handler: Any, method: str, around: Around) -> Any:
    """handler (a grpc.RpcMethodHandler, or None) with around(call) around
    its unary-unary or unary-stream behaviour; others unchanged."""
    if handler is None:
        return handler
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, method, around),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream(handler.unary_stream, method, around),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
