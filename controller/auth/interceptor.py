"""The server interceptor that authenticates each call and authorizes it
against controller.auth.permissions.

A call is authenticated by an ``authorization: Bearer <token>`` header, or
by the client certificate TLS verified on the mutual-TLS port: a user
certificate names its principal; a host's or the controller's certificate
names no client principal, and a revoked certificate is refused. Then:

- no credential, or one unknown, expired or revoked: UNAUTHENTICATED, with
  one message that never repeats the credential;
- a principal whose role lacks the method's permission: PERMISSION_DENIED,
  naming the permission;
- a method missing from the table: PERMISSION_DENIED (never open by mistake).

The gRPC health service stays open (virtplane_common.guard.OPEN_SERVICES), so that
probes need no credential. Unary and streaming calls (WatchVms) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controller.auth import caller
from controller.auth.caller import Principal
from controller.auth.permissions import METHODS, Permission, allows
from controller.auth.tokens import TokenCache
from virtplane_common.errors import PermissionDenied, Unauthenticated
from virtplane_common.guard import Context as _Context
from virtplane_common.guard import GuardInterceptor
from virtplane_common.status import status_code
from virtplane_common.tls.names import Role as CertRole
from virtplane_common.tls.names import peer_identity

NOT_AUTHENTICATED = (
    "not authenticated: send a valid token (authorization: Bearer …) or a client certificate"
)

Revoked = Callable[[int], bool]
"""Whether the certificate with this serial number was revoked."""


def _bearer(metadata: Mapping[str, str | bytes]) -> str | None:
    value = metadata.get("authorization")
    if not isinstance(value, str):
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    """Who a call's credentials name."""

    def __init__(self, tokens: TokenCache, users: TokenCache, revoked: Revoked) -> None:
        self._tokens = tokens
        self._users = users
        self._revoked = revoked

    def forget(self) -> None:
        """Drops what the caches hold: a token was revoked or a principal deleted."""
        self._tokens.clear()
        self._users.clear()

    async def principal(self, context: _Context) -> Principal:
        metadata = {key: value for key, value in (context.invocation_metadata() or ())}
        token = _bearer(metadata)
        if token is not None:
            found = await self._tokens.principal(token)
            if found is None:
                raise Unauthenticated(NOT_AUTHENTICATED)
            return found
        identity = peer_identity(context.auth_context())
        if identity is None or identity.role is not CertRole.USER:
            raise Unauthenticated(NOT_AUTHENTICATED)
        if self._revoked(identity.serial):
            raise Unauthenticated(NOT_AUTHENTICATED)
        user = await self._users.holder(identity.name)
        if user is None:
            raise Unauthenticated(NOT_AUTHENTICATED)
        return user.principal


async def authorize(auth: Authenticator, method: str, context: _Context) -> Principal | None:
    """The principal the call runs as (None for an OPEN method); raises
    Unauthenticated or PermissionDenied."""
    permission = METHODS.get(method)
    if permission is Permission.OPEN:
        return None
    principal = await auth.principal(context)
    if permission is None or not allows(principal.role, permission):
        raise PermissionDenied(str(principal), permission.value if permission else method)
    return principal


async def _refuse(context: _Context, exc: Unauthenticated | PermissionDenied) -> None:
    await context.abort(status_code(exc), str(exc))


class AuthInterceptor(GuardInterceptor):
    """Authenticates and authorizes every call but those of OPEN_SERVICES;
    the principal is the call's caller.current."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        super().__init__(self._check)

    async def _check(self, method: str, context: _Context) -> None:
        try:
            principal = await authorize(self.auth, method, context)
        except (Unauthenticated, PermissionDenied) as exc:
            await _refuse(context, exc)
        caller.current.set(principal)
