"""Who may call hostd: the one server interceptor that checks each call's peer.

hostd serves mutual TLS only, so TLS has already checked that the peer's
certificate is the CA's and in date. Then, per call:

- a certificate naming no virtplane identity: UNAUTHENTICATED;
- a certificate whose serial the held CRL lists: UNAUTHENTICATED
  ("certificate revoked");
- the controller: every method;
- another host (a migration's source): HostAgentService's
  PrepareIncomingMigration and CancelMigration only, else PERMISSION_DENIED
  naming the permission the method needs;
- a user: PERMISSION_DENIED (users call the controller, never a host).

The gRPC health service (and reflection, which describes the public protos)
answers any peer TLS let in. Refusals are raised as virtplane errors and
become status codes in virtplane_common.status.ErrorInterceptor, which must
come before this interceptor in the server's list (it wraps what this returns).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from virtplane_common.errors import PermissionDenied, Unauthenticated
from virtplane_common.tls.names import Identity, Role, peer_identity
from virtplane_common.tls.revocation import Revocations

CONTROLLER_PERMISSION = "host.manage"
"""What every method but the health service needs: the controller's role."""
MIGRATION_PERMISSION = "host.migrate.peer"
"""What a migration's source needs on its destination."""
_AGENT = "/virtplane.v1.HostAgentService/"
PEER_METHODS = frozenset({_AGENT + "PrepareIncomingMigration", _AGENT + "CancelMigration"})
"""The methods another host (role host) may call."""
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
NOT_AUTHENTICATED = "not authenticated: a client certificate naming a virtplane identity is needed"
REVOKED = "certificate revoked"

if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Context = grpc.aio.ServicerContext[Any, Any]
else:  # grpc's classes are generic only in their type stubs
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _Context = grpc.aio.ServicerContext


def service_of(method: str) -> str:
    """The service of a full method name (/package.Service/Method)."""
    return method.strip("/").partition("/")[0]


def permission_of(method: str) -> str:
    return MIGRATION_PERMISSION if method in PEER_METHODS else CONTROLLER_PERMISSION


def allowed(identity: Identity, method: str) -> bool:
    if identity.role is Role.CONTROLLER:
        return True
    return identity.role is Role.HOST and method in PEER_METHODS


def authorize(revocations: Revocations, method: str, context: _Context) -> Identity:
    """The call's peer, if it may call method; raises Unauthenticated or PermissionDenied."""
    identity = peer_identity(context.auth_context())
    if identity is None:
        raise Unauthenticated(NOT_AUTHENTICATED)
    if revocations.revoked(identity.serial):
        raise Unauthenticated(REVOKED)
    if not allowed(identity, method):
        raise PermissionDenied(str(identity), permission_of(method))
    return identity


def _unary(revocations: Revocations, behavior: Any, method: str) -> Any:
    async def call(request: Any, context: _Context) -> Any:
        authorize(revocations, method, context)
        return await behavior(request, context)

    return call


def _stream(revocations: Revocations, behavior: Any, method: str) -> Any:
    if not inspect.isasyncgenfunction(behavior):
        return _unary(revocations, behavior, method)

    async def call(request: Any, context: _Context) -> AsyncIterator[Any]:
        authorize(revocations, method, context)
        async for item in behavior(request, context):
            yield item

    return call


class PeerAuthInterceptor(_ServerInterceptor):
    """Checks the peer of every call but the health service's."""

    def __init__(self, revocations: Revocations) -> None:
        self._revocations = revocations

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or service_of(method) in OPEN_SERVICES:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(self._revocations, handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(self._revocations, handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # no other kind of call is served: UNIMPLEMENTED, never unchecked
