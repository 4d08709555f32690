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

from virtplane_common.errors import PermissionDenied, Unauthenticated
from virtplane_common.guard import Context as _Context
from virtplane_common.guard import GuardInterceptor
from virtplane_common.tls.names import Identity, Role, peer_identity
from virtplane_common.tls.revocation import Revocations

CONTROLLER_PERMISSION = "host.manage"
"""What every method but the health service needs: the controller's role."""
MIGRATION_PERMISSION = "host.migrate.peer"
"""What a migration's source needs on its destination."""
_AGENT = "/virtplane.v1.HostAgentService/"
PEER_METHODS = frozenset({_AGENT + "PrepareIncomingMigration", _AGENT + "CancelMigration"})
"""The methods another host (role host) may call."""
NOT_AUTHENTICATED = "not authenticated: a client certificate naming a virtplane identity is needed"
REVOKED = "certificate revoked"


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


class PeerAuthInterceptor(GuardInterceptor):
    """Checks the peer of every call but those of OPEN_SERVICES."""

    def __init__(self, revocations: Revocations) -> None:
        self._revocations = revocations
        super().__init__(self._check)

    async def _check(self, method: str, context: _Context) -> None:
        authorize(self._revocations, method, context)
