"""Other hosts' hostd, as a migration's source reaches its destination: over gRPC.

A Peers value is what hostd.migration calls; GrpcPeers is the real one. It
dials the destination over mutual TLS, presenting this host's pair as it is
now (a channel per call, so a renewed pair is used from the next call on),
and TLS accepts only the host whose certificate names the destination's host
id (host_options); without an identity (plaintext dev) it dials in plaintext.

The libvirt URI a source opens for its destination is derived here from the
source's own template (peer_hypervisor_uri), never from the destination's
answer. The
destination's gRPC errors become hostd errors here, once, and its messages
hostd's domain types (hostd.convert): unreachable is
PeerUnavailable, a refusal keeps its category where the API has one
(ALREADY_EXISTS, RESOURCE_EXHAUSTED) and is PeerRefused otherwise, always
with the destination's own message.
"""

from __future__ import annotations

import string
from typing import Protocol

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd import convert
from hostd.errors import PeerRefused, PeerUnavailable
from hostd.identity import HostIdentity
from hostd.model import MigrationDestination, PeerHost, VmConfig
from virtplane_common.errors import (
    AlreadyExists,
    InvalidArgument,
    ResourceExhausted,
    VirtplaneError,
)
from virtplane_common.grpc_limits import MESSAGE_SIZE_OPTIONS
from virtplane_common.tls.credentials import channel_credentials, host_options

CALL_TIMEOUT_SECONDS = 15.0
"""A peer's hostd answers these calls at once; past this it counts as unreachable."""
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
PLACEHOLDERS = frozenset({"host_id", "address_host"})


class Peers(Protocol):
    async def prepare_incoming(
        self, peer: PeerHost, config: VmConfig, source_address: str
    ) -> MigrationDestination:
        """Asks the peer's hostd to expect the VM; returns where to send it."""
        ...

    async def cancel_incoming(self, peer: PeerHost, vm_id: str) -> None:
        """Tells the peer's hostd that the VM will not arrive."""
        ...


class GrpcPeers:
    def __init__(
        self, identity: HostIdentity | None = None, timeout: float = CALL_TIMEOUT_SECONDS
    ) -> None:
        self._identity = identity
        self._timeout = timeout

    def _channel(self, peer: PeerHost) -> grpc.aio.Channel:
        if self._identity is None:
            return grpc.aio.insecure_channel(peer.address, options=MESSAGE_SIZE_OPTIONS)
        if not peer.host_id:
            raise InvalidArgument("destination_host_id", "required: the destination's host id")
        pair = self._identity.pair
        return grpc.aio.secure_channel(
            peer.address,
            channel_credentials(pair.ca, pair),
            options=[*MESSAGE_SIZE_OPTIONS, *host_options(peer.host_id)],
        )

    async def prepare_incoming(
        self, peer: PeerHost, config: VmConfig, source_address: str
    ) -> MigrationDestination:
        request = pb.HostAgentServicePrepareIncomingMigrationRequest(
            config=convert.config_to_proto(config), source_address=source_address
        )
        async with self._channel(peer) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            try:
                response = await stub.PrepareIncomingMigration(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(peer.address, exc, peer.host_id) from exc
        return convert.destination_from_proto(response.destination)

    async def cancel_incoming(self, peer: PeerHost, vm_id: str) -> None:
        request = pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)
        async with self._channel(peer) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            try:
                await stub.CancelMigration(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _translate(peer.address, exc, peer.host_id) from exc


def check_template(template: str) -> None:
    """Refuses a --peer-hypervisor-uri with placeholders other than PLACEHOLDERS."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InvalidArgument("peer_hypervisor_uri", f"{template!r}: {exc}") from exc
    unknown = fields - PLACEHOLDERS
    if unknown or not template:
        raise InvalidArgument(
            "peer_hypervisor_uri",
            f"{template!r} may use only the placeholders {{host_id}} and {{address_host}}"
            + (f" (not {', '.join(sorted(unknown))})" if unknown else ""),
        )


def address_host(address: str) -> str:
    """The host part of host:port (an IPv6 address keeps its brackets)."""
    if address.startswith("["):
        return address[: address.find("]") + 1] or address
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() and ":" not in host else address


def peer_hypervisor_uri(template: str, peer: PeerHost) -> str:
    """The libvirt URI of the peer's hypervisor, from this host's template."""
    if "{host_id}" in template and not peer.host_id:
        raise InvalidArgument(
            "destination_host_id", "required: the peer hypervisor URI template names {host_id}"
        )
    return template.format(host_id=peer.host_id, address_host=address_host(peer.address))


def _translate(address: str, exc: grpc.aio.AioRpcError, host_id: str = "") -> VirtplaneError:
    code, details = exc.code(), exc.details() or ""
    if code in _UNREACHABLE:
        expected = f"as host {host_id}; " if host_id else ""
        return PeerUnavailable(
            f"the destination hostd at {address} cannot be reached"
            f" ({expected}{code.name}: {details})"
        )
    message = f"the destination hostd at {address} refused: {details}"
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return AlreadyExists(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message)
    return PeerRefused(f"{message} ({code.name})")
