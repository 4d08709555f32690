"""gRPC-Web for the page: sonora's ASGI application serving the controller's
own servicers, through the same grpc.aio server interceptors as its gRPC port.

sonora does the gRPC-Web protocol (message framing, trailers, the base64
text mode, deadlines); what it lacks against grpc.aio is adapted here:

- interceptors: sonora looks a method up without any; each call here first
  runs the grpc.aio interceptor chain (ServerInterceptor.intercept_service,
  outermost first, as grpc.aio.server(interceptors=...) does), then the
  handler it returns;
- the servicer context: controller.web.context;
- a stream whose deadline passes after its first message ends with its
  status in its trailers (sonora would start a second response);
- a unary call is answered as a stream of its one response (the same bytes
  on the wire; sonora 0.2.3's unary path writes broken trailers);
- a server stream is closed as soon as its browser goes away (sonora notices
  only when it next sends), so that its servicer ends and frees its slot.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import grpc
from sonora import asgi, protocol

from controller.web.context import CallAborted, WebContext, context_of, written

if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # grpc's classes are generic only in their type stubs
    Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class GrpcWebApp(asgi.grpcASGI):  # type: ignore[misc]  # sonora is untyped
    """The controller's services over gRPC-Web; add them with the generated
    add_*Servicer_to_server functions, as to a grpc.aio.Server."""

    def __init__(self, interceptors: Sequence[Interceptor]) -> None:
        super().__init__(application=None, enable_cors=False)
        self._interceptors = tuple(interceptors)
        self._stopping = asyncio.Event()

    def stop_streams(self) -> None:
        """Ends every open stream with UNAVAILABLE (the controller stops),
        as grpc.aio's server.stop() does its own; clients resume elsewhere."""
        self._stopping.set()

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Nothing more to do: the generic handlers already route every method."""

    def _create_context(self, scope: dict[str, Any]) -> WebContext:
        return context_of(scope)

    async def _intercepted(self, base: Handler, method: str) -> Any:
        async def innermost(details: grpc.HandlerCallDetails) -> Handler:
            return base

        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]] = innermost
        for interceptor in reversed(self._interceptors):
            continuation = functools.partial(interceptor.intercept_service, continuation)
        return await continuation(_CallDetails(method, ()))  # type: ignore[arg-type]

    def _get_rpc_handler(self, path: str) -> Handler | None:
        base: Handler | None = super()._get_rpc_handler(path)
        if base is None:
            return None
        if base.unary_unary is not None:
            # Served as a stream of one message, the same bytes on the wire:
            # sonora 0.2.3's unary path writes its trailers as b'…' reprs.
            return grpc.unary_stream_rpc_method_handler(
                self._unary(base, path),
                request_deserializer=base.request_deserializer,
                response_serializer=base.response_serializer,
            )
        if base.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(base, path),
                request_deserializer=base.request_deserializer,
                response_serializer=base.response_serializer,
            )
        return None  # client streams: the page has none, and none is served unchecked

    def _unary(self, base: Handler, method: str) -> Any:
        async def call(request: Any, context: WebContext) -> AsyncIterator[Any]:
            handler = await self._intercepted(base, method)
            if handler is None or handler.unary_unary is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served")
            yield await handler.unary_unary(request, context)

        return call

    def _stream(self, base: Handler, method: str) -> Any:
        async def call(request: Any, context: WebContext) -> AsyncIterator[Any]:
            handler = await self._intercepted(base, method)
            if handler is None or handler.unary_stream is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served")
            behavior = handler.unary_stream
            if inspect.isasyncgenfunction(behavior):
                items = behavior(request, context)
            else:
                items = written(behavior(request, context), context)
            sent = False
            try:
                async for item in items:
                    sent = True
                    yield item
            except CallAborted:
                if not sent:
                    raise  # sonora answers with the status alone
                # Ended after messages: sonora's trailers carry the status.
            finally:
                await items.aclose()

        return call

    async def _do_streaming_response(self, rpc_method: Handler, receive: Any, *args: Any) -> None:
        """sonora's response, ended as soon as the browser goes away (sonora
        itself only looks while it sends, and a quiet WatchVms sends nothing):
        one task reads the request's disconnect, sonora is handed that. A
        controller that stops ends it with UNAVAILABLE."""
        send, wrap_message, context, stream = args
        gone = asyncio.ensure_future(_disconnect(receive))

        async def sending(message: dict[str, Any]) -> None:
            context.started = context.started or message["type"] == "http.response.start"
            await send(message)

        async def next_event() -> dict[str, str]:
            return await asyncio.shield(gone)

        serving = asyncio.ensure_future(
            super()._do_streaming_response(
                rpc_method, next_event, sending, wrap_message, context, stream
            )
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                (gone, serving, stopping), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (serving, gone, stopping):
                task.cancel()
            results = await asyncio.gather(serving, return_exceptions=True)
            if stream is not None:
                await stream.aclose()  # ends the servicer, freeing its stream slot
        if isinstance(results[0], Exception):
            raise results[0]
        if stopping in done and serving not in done:
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details("the controller is stopping")
            await self._do_grpc_error(send, context)

    async def _do_grpc_error(self, send: Any, context: WebContext) -> None:
        """A stream's error once its headers went out (its deadline passed):
        the status in its trailers, where sonora would start a second response."""
        if not context.started:
            await super()._do_grpc_error(send, context)
            return
        trailers = [("grpc-status", str(context.code.value[0]))]
        if context.details:
            trailers.append(("grpc-message", quote(context.details)))
        body = context._wrap_message(True, False, protocol.pack_trailers(trailers))
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def _disconnect(receive: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, str]:
    """Waits for the ASGI disconnect (the request's body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    return {"type": "http.disconnect"}
