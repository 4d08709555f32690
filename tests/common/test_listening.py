"""A server's address is its own (virtplane_common.listening and the
servers' SERVER_OPTIONS): a second server on the same port is refused with an
error naming the address, where gRPC's default (SO_REUSEPORT) would let it
share the port and take part of the connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from virtplane_common.grpc_limits import MESSAGE_SIZE_OPTIONS, SERVER_OPTIONS
from virtplane_common.listening import listen


@pytest.fixture
async def first() -> AsyncIterator[int]:
    """A running server's port."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    port = listen(server, "127.0.0.1:0")
    await server.start()
    yield port
    await server.stop(0)


async def test_a_second_server_on_a_taken_port_is_refused_naming_it(first: int) -> None:
    second = grpc.aio.server(options=SERVER_OPTIONS)
    with pytest.raises(OSError, match=rf"^cannot listen on 127\.0\.0\.1:{first}: another process"):
        listen(second, f"127.0.0.1:{first}")
    await second.stop(0)


async def test_without_the_option_grpc_would_share_the_port() -> None:
    """Why the option is set: with gRPC's default, a second server binds the
    port the first one serves on."""
    servers = [grpc.aio.server(options=MESSAGE_SIZE_OPTIONS) for _ in range(2)]
    port = servers[0].add_insecure_port("127.0.0.1:0")
    await servers[0].start()
    try:
        assert servers[1].add_insecure_port(f"127.0.0.1:{port}") == port
    finally:
        for server in servers:
            await server.stop(0)


async def test_an_address_not_of_this_machine_is_refused() -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    with pytest.raises(OSError, match=r"^cannot listen on 192\.0\.2\.1:7070"):
        listen(server, "192.0.2.1:7070")
    await server.stop(0)
