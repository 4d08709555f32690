"""Per-client limits on the long calls (WatchVms, WaitOperation): a client
is its authenticated principal, or its peer's address when authentication is
off; over the limit a call is refused with RESOURCE_EXHAUSTED. A slot is
freed when its call ends, however it ends (cancelled included)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from controller.auth import caller
from virtplane_common.errors import ResourceExhausted


def client_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The principal's name, else the peer's address without its port."""
    principal = caller.name()
    if principal:
        return f"principal:{principal}"
    peer = context.peer() or "unknown"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class StreamSlots:
    """At most limit long calls open per client at once."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the per-client stream limit must be at least 1")
        self.limit = limit
        self._held: dict[str, int] = {}

    def held(self, client: str) -> int:
        return self._held.get(client, 0)

    @contextmanager
    def hold(self, client: str, call: str) -> Iterator[None]:
        held = self._held.get(client, 0)
        if held >= self.limit:
            raise ResourceExhausted(
                f"{call}: {client} already has {held} watch/wait calls open"
                f" (at most {self.limit} per client); end one first"
            )
        self._held[client] = held + 1
        try:
            yield
        finally:
            left = self._held[client] - 1
            if left:
                self._held[client] = left
            else:
                del self._held[client]
