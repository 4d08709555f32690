"""Other hosts' hostd, as a migration's source reaches its destination: over gRPC.

A Peers value is what hostd.migration calls; GrpcPeers is the real one. The
destination's gRPC errors become hostd errors here, once, and its messages
hostd's domain types (hostd.convert): unreachable is
PeerUnavailable, a refusal keeps its category where the API has one
(ALREADY_EXISTS, RESOURCE_EXHAUSTED) and is PeerRefused otherwise, always
with the destination's own message.
"""

from __future__ import annotations

from typing import Protocol

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd import convert
from hostd.errors import PeerRefused, PeerUnavailable
from hostd.model import MigrationDestination, VmConfig
from virtplane_common.errors import AlreadyExists, ResourceExhausted, VirtplaneError

CALL_TIMEOUT_SECONDS = 15.0
"""A peer's hostd answers these calls at once; past this it counts as unreachable."""
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Peers(Protocol):
    async def prepare_incoming(
        self, address: str, config: VmConfig, source_address: str
    ) -> MigrationDestination:
        """Asks the hostd at address to expect the VM; returns where to send it."""
        ...

    async def cancel_incoming(self, address: str, vm_id: str) -> None:
        """Tells the hostd at address that the VM will not arrive."""
        ...


class GrpcPeers:
    def __init__(self, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout

    async def prepare_incoming(
        self, address: str, config: VmConfig, source_address: str
    ) -> MigrationDestination:
        request = pb.HostAgentServicePrepareIncomingMigrationRequest(
            config=convert.config_to_proto(config), source_address=source_address
        )
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            try:
                response = await stub.PrepareIncomingMigration(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(address, exc) from exc
        return convert.destination_from_proto(response.destination)

    async def cancel_incoming(self, address: str, vm_id: str) -> None:
        request = pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            try:
                await stub.CancelMigration(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(address, exc) from exc


def _translate(address: str, exc: grpc.aio.AioRpcError) -> VirtplaneError:
    code, details = exc.code(), exc.details() or ""
    if code in _UNREACHABLE:
        return PeerUnavailable(
            f"the destination hostd at {address} cannot be reached ({code.name}: {details})"
        )
    message = f"the destination hostd at {address} refused: {details}"
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message)
    return PeerRefused(f"{message} ({code.name})")
