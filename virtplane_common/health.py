"""The standard gRPC health service and server reflection on a grpc.aio
server, so that any gRPC client (grpcurl, grpc_health_probe, another
language) can discover the daemon's services and probe it.

Nothing here is specific to the controller: a daemon makes Probes with its
server and service names, calls starting() before the server starts,
serving() once it is ready and stopping() before it stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

# The whole server, as the health protocol names it.
OVERALL = ""


def service_names(*files: FileDescriptor) -> list[str]:
    """The full names of the services the given proto files define."""
    return [service.full_name for f in files for service in f.services_by_name.values()]


class Probes:
    """Health and reflection for one server; add before the server starts."""

    def __init__(self, server: grpc.aio.Server, services: Iterable[str]) -> None:
        self.services = tuple(services)
        # Its stubs know only the synchronous servicer.
        self._health: Any = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    async def starting(self) -> None:
        """Nothing is SERVING yet (the library starts the server SERVING)."""
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def serving(self) -> None:
        """The server and each of its services are SERVING."""
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def unavailable(self) -> None:
        """Everything is NOT_SERVING for now (something the daemon needs is
        down); serving() again once it is back."""
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stopping(self) -> None:
        """Everything is NOT_SERVING from now on, for good: watchers are told
        before the server goes away."""
        await self._health.enter_graceful_shutdown()

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in (OVERALL, *self.services):
            await self._health.set(name, status)
