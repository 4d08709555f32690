"""AsyncClient: the asyncio client, and the core the sync Client runs.

One gRPC channel to the controller, shared by the services' APIs: `vms`,
`hosts`, `affinity`, `operations` and `principals`.
"""

from __future__ import annotations

from types import TracebackType

import grpc

from virtplane_client.credentials import TLS_DEFAULT, Credentials, open_channel
from virtplane_client.fleet import AsyncAffinityGroups, AsyncHosts
from virtplane_client.operations import AsyncOperations
from virtplane_client.principals import AsyncPrincipals
from virtplane_client.vms import AsyncVms
from virtplane_client.watching import DEFAULT_BACKOFF, Backoff


def channel_options(backoff: Backoff) -> list[tuple[str, int]]:
    """Reconnect to a controller that comes back within the watch's backoff
    (gRPC's own reconnect delay would otherwise grow to two minutes)."""
    return [
        ("grpc.initial_reconnect_backoff_ms", int(backoff.initial * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(backoff.initial * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(backoff.maximum * 1000)),
    ]


class AsyncClient:
    """A connection to the controller at target (host:port)::

        async with AsyncClient("127.0.0.1:7000") as vp:
            started = await vp.vms.start("web")
            await vp.operations.result(started.operation)

    credentials (virtplane_client.credentials) name the CA and the token or
    key pair: ``AsyncClient(addr, credentials=Credentials(ca="ca.pem",
    token=secret))``; without them the channel is still TLS (trusting the
    system's roots); plaintext only with credentials=INSECURE_DEVELOPMENT, for
    a development controller (--insecure-plaintext-dev). Pass channel to use
    one of your own (interceptors); the client then leaves closing it to you."""

    def __init__(
        self,
        target: str = "127.0.0.1:7000",
        *,
        credentials: Credentials = TLS_DEFAULT,
        channel: grpc.aio.Channel | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self._owned = channel is None
        self.channel = channel or open_channel(target, credentials, channel_options(backoff))
        self.vms = AsyncVms(self.channel, backoff)
        self.hosts = AsyncHosts(self.channel)
        self.affinity = AsyncAffinityGroups(self.channel)
        self.operations = AsyncOperations(self.channel)
        self.principals = AsyncPrincipals(self.channel)

    async def close(self) -> None:
        if self._owned:
            await self.channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
