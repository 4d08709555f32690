"""`client.principals`: the principals of the API, their roles, tokens and
client certificates (PrincipalService; admin only)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import principal_service_pb2 as api
from virtplane.v1 import principal_service_pb2_grpc as api_grpc

from virtplane_client._rpc import call


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class PrincipalKind(enum.StrEnum):
    USER = "user"
    SERVICE_ACCOUNT = "service_account"


_ROLES = {
    Role.VIEWER: api.ROLE_VIEWER,
    Role.OPERATOR: api.ROLE_OPERATOR,
    Role.ADMIN: api.ROLE_ADMIN,
}
_KINDS = {
    PrincipalKind.USER: api.PRINCIPAL_KIND_USER,
    PrincipalKind.SERVICE_ACCOUNT: api.PRINCIPAL_KIND_SERVICE_ACCOUNT,
}


@dataclass(frozen=True)
class Principal:
    name: str
    kind: PrincipalKind
    role: Role
    created_at: dt.datetime | None


@dataclass(frozen=True)
class Token:
    """A token as listed: never its secret."""

    id: str
    principal: str
    created_at: dt.datetime | None
    expires_at: dt.datetime | None
    revoked: bool


@dataclass(frozen=True)
class NewToken:
    """A token just made, and its secret: shown this once."""

    token: Token
    secret: str = field(repr=False)


def _time(ts: Timestamp, present: bool) -> dt.datetime | None:
    return ts.ToDatetime(dt.UTC) if present else None


def _principal(p: api.Principal) -> Principal:
    role = next(r for r, v in _ROLES.items() if v == p.role)
    kind = next(k for k, v in _KINDS.items() if v == p.kind)
    return Principal(p.name, kind, role, _time(p.created_at, p.HasField("created_at")))


def _token(t: api.Token) -> Token:
    return Token(
        t.id,
        t.principal,
        _time(t.created_at, t.HasField("created_at")),
        _time(t.expires_at, t.HasField("expires_at")),
        t.revoked,
    )


class AsyncPrincipals:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = api_grpc.PrincipalServiceStub(channel)

    async def create(
        self, name: str, role: Role, kind: PrincipalKind = PrincipalKind.USER
    ) -> Principal:
        request = api.CreatePrincipalRequest(name=name, role=_ROLES[role], kind=_KINDS[kind])
        return _principal((await call(self._stub.CreatePrincipal, request)).principal)

    async def list(self) -> tuple[Principal, ...]:
        reply = await call(self._stub.ListPrincipals, api.ListPrincipalsRequest())
        return tuple(_principal(p) for p in reply.principals)

    async def delete(self, name: str) -> None:
        await call(self._stub.DeletePrincipal, api.DeletePrincipalRequest(name=name))

    async def create_token(self, principal: str, ttl: dt.timedelta | None = None) -> NewToken:
        """A new token; ttl None: the controller's default lifetime."""
        seconds = int(ttl.total_seconds()) if ttl is not None else 0
        request = api.CreateTokenRequest(principal=principal, ttl_seconds=seconds)
        reply = await call(self._stub.CreateToken, request)
        return NewToken(_token(reply.token), reply.secret)

    async def tokens(self, principal: str = "") -> tuple[Token, ...]:
        reply = await call(self._stub.ListTokens, api.ListTokensRequest(principal=principal))
        return tuple(_token(t) for t in reply.tokens)

    async def revoke_token(self, token_id: str) -> None:
        await call(self._stub.RevokeToken, api.RevokeTokenRequest(id=token_id))

    async def issue_certificate(self, principal: str, csr_pem: bytes) -> tuple[bytes, bytes]:
        """The certificate the controller's CA signs for csr_pem's key, and the CA."""
        request = api.IssueClientCertificateRequest(principal=principal, csr_pem=csr_pem.decode())
        reply = await call(self._stub.IssueClientCertificate, request)
        return reply.certificate_pem.encode(), reply.ca_pem.encode()
