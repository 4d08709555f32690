"""The servicer context of a gRPC-Web call (controller.web.grpc_web), with
what the controller's servicers and interceptors use of grpc.aio's:
invocation metadata (the bearer token), abort() raising grpc.aio's
AbortError (which sonora also takes as the end of the call, with the code
and details set), the peer's address, an empty auth context (the page
authenticates with a token, never with a client certificate), and write()
for the server streams that write to their context (WatchVms) instead of
yielding: written() turns such a servicer into the iterator sonora reads.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

import grpc
from sonora import asgi, protocol

_END = object()
"""Put in a context's outbox when its call has returned."""


class CallAborted(grpc.aio.AbortError, grpc.RpcError):
    """What WebContext.abort raises: grpc.aio's AbortError, which the
    interceptors let through, and a grpc.RpcError, which sonora answers
    with the context's code and details."""


class WebContext(asgi.ServicerContext):  # type: ignore[misc]  # sonora is untyped
    """A gRPC-Web call's context, as the servicers and interceptors use it."""

    def __init__(
        self, timeout: float | None, metadata: list[tuple[str, str | bytes]], peer: str
    ) -> None:
        super().__init__(timeout, metadata, enable_cors=False)
        self._peer = peer
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.started = False
        """Whether the response's headers went out (its status then goes in trailers)."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        if code == grpc.StatusCode.OK:
            raise ValueError("abort needs an error code")
        self.set_code(code)
        self.set_details(details)
        raise CallAborted()

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    async def write(self, message: object) -> None:
        """Sends message; returns once sonora has taken it (back-pressure)."""
        self.outbox.put_nowait(message)
        await self.outbox.join()


def context_of(scope: dict[str, Any]) -> WebContext:
    """The context of an ASGI request: its headers as invocation metadata
    (-bin ones decoded), its grpc-timeout, its client's address. sonora
    answers in the content type of the accept header, so only a gRPC-Web one
    is kept (fetch() sends */*)."""
    timeout = None
    metadata: list[tuple[str, str | bytes]] = []
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("ascii").lower()
        if name == "grpc-timeout":
            timeout = protocol.parse_timeout(raw_value)
        elif name == "accept" and not raw_value.startswith(b"application/grpc-web"):
            continue  # a browser's "*/*": sonora would answer with it as the content type
        elif name.endswith("-bin"):
            metadata.append((name, base64.b64decode(raw_value)))
        else:
            metadata.append((name, raw_value.decode("latin-1")))
    client = scope.get("client")
    peer = f"ipv4:{client[0]}:{client[1]}" if client else "unknown"
    return WebContext(timeout, metadata, peer)


async def written(call: Awaitable[None], context: WebContext) -> AsyncGenerator[Any, None]:
    """The messages a servicer writes to its context, as an iterator; raises
    what the servicer raised once it returns."""
    task = asyncio.ensure_future(call)
    task.add_done_callback(lambda _: context.outbox.put_nowait(_END))
    try:
        while (item := await context.outbox.get()) is not _END:
            yield item
            context.outbox.task_done()
        await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
