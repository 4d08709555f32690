"""The registry of hostd clients the controller talks to."""

from __future__ import annotations

import grpc

from controller.host_client import HostClient


class HostClients:
    """One HostClient per host id, created on first use, dialling with
    credentials (the controller's pair; None: plaintext, development only)."""

    def __init__(self, timeout: float, credentials: grpc.ChannelCredentials | None = None) -> None:
        self._timeout = timeout
        self._credentials = credentials
        self._clients: dict[str, HostClient] = {}

    def get(self, host_id: str, name: str, address: str) -> HostClient:
        client = self._clients.get(host_id)
        if client is None or client.address != address:
            client = HostClient(
                name, address, self._timeout, host_id=host_id, credentials=self._credentials
            )
            self._clients[host_id] = client
        return client

    def renew(self, credentials: grpc.ChannelCredentials) -> None:
        """The controller's pair was renewed: new channels for every host."""
        self._credentials = credentials
        for client in self._clients.values():
            client.reconnect(credentials)

    async def drop(self, host_id: str) -> None:
        """Closes and forgets the host's client (the host was removed)."""
        client = self._clients.pop(host_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
