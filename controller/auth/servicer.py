"""PrincipalService: principals, their tokens and client certificates, on
the wire. Admin only (controller.auth.permissions) but GetCurrentPrincipal,
which any principal may ask about itself; each mutation is in the audit log
with the principal that asked for it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session
from virtplane.v1 import principal_service_pb2 as api
from virtplane.v1 import principal_service_pb2_grpc as api_grpc

from controller import audit
from controller.auth import caller, principals
from controller.auth.permissions import Role
from controller.convert import timestamp
from controller.pki.ca import CertificateAuthority, InvalidRequest
from controller.requests import call_of
from db.models import ApiToken
from db.models import Principal as PrincipalRow
from db.session import Database
from virtplane_common.errors import FailedPrecondition, InvalidArgument
from virtplane_common.tls.keys import cert_pem
from virtplane_common.tls.names import Role as CertRole

_ROLES = {
    api.ROLE_VIEWER: Role.VIEWER,
    api.ROLE_OPERATOR: Role.OPERATOR,
    api.ROLE_ADMIN: Role.ADMIN,
}
_ROLE_PROTOS = {role: value for value, role in _ROLES.items()}
_KINDS = {api.PRINCIPAL_KIND_USER: "user", api.PRINCIPAL_KIND_SERVICE_ACCOUNT: "service_account"}
_KIND_PROTOS = {kind: value for value, kind in _KINDS.items()}


def principal_proto(row: PrincipalRow) -> api.Principal:
    return api.Principal(
        name=row.name,
        kind=_KIND_PROTOS[row.kind],
        role=_ROLE_PROTOS[Role(row.role)],
        created_at=timestamp(row.created_at),
    )


def token_proto(row: ApiToken) -> api.Token:
    return api.Token(
        id=row.id,
        principal=row.principal,
        created_at=timestamp(row.created_at),
        expires_at=timestamp(row.expires_at),
        revoked=row.revoked_at is not None,
    )


class PrincipalServicer(api_grpc.PrincipalServiceServicer):
    def __init__(
        self,
        db: Database,
        forget: Callable[[], None],
        ca: CertificateAuthority | None,
        token_ttl: dt.timedelta,
        cert_lifetime: dt.timedelta,
        *,
        authenticates: bool = True,
    ) -> None:
        self._db = db
        self._authenticates = authenticates
        self._forget = forget
        self._ca = ca
        self._token_ttl = token_ttl
        self._cert_lifetime = cert_lifetime

    async def CreatePrincipal(
        self, request: api.CreatePrincipalRequest, context: Any
    ) -> api.CreatePrincipalResponse:
        role = _ROLES.get(request.role)
        kind = _KINDS.get(request.kind)
        if role is None:
            raise InvalidArgument("role", "must be ROLE_VIEWER, ROLE_OPERATOR or ROLE_ADMIN")
        if kind is None:
            raise InvalidArgument("kind", "must be PRINCIPAL_KIND_USER or _SERVICE_ACCOUNT")
        call = call_of("CreatePrincipal", request)

        def work(session: Session) -> api.Principal:
            row = principals.create(session, request.name, kind, role)
            audit.mutation(session, call, f"{row.name} ({role.value})")
            return principal_proto(row)

        return api.CreatePrincipalResponse(principal=await self._db.run(work))

    async def ListPrincipals(
        self, request: api.ListPrincipalsRequest, context: Any
    ) -> api.ListPrincipalsResponse:
        def work(session: Session) -> list[api.Principal]:
            return [principal_proto(row) for row in principals.listed(session)]

        return api.ListPrincipalsResponse(principals=await self._db.run(work))

    async def DeletePrincipal(
        self, request: api.DeletePrincipalRequest, context: Any
    ) -> api.DeletePrincipalResponse:
        call = call_of("DeletePrincipal", request)

        def work(session: Session) -> None:
            principals.delete(session, request.name)
            audit.mutation(session, call, request.name)

        await self._db.run(work)
        self._forget()
        return api.DeletePrincipalResponse()

    async def CreateToken(
        self, request: api.CreateTokenRequest, context: Any
    ) -> api.CreateTokenResponse:
        ttl = dt.timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else self._token_ttl
        call = call_of("CreateToken", request)

        def work(session: Session) -> api.CreateTokenResponse:
            row, secret = principals.add_token(session, request.principal, ttl)
            audit.mutation(session, call, f"token {row.id} of {row.principal}")
            return api.CreateTokenResponse(token=token_proto(row), secret=secret)

        return await self._db.run(work)

    async def ListTokens(
        self, request: api.ListTokensRequest, context: Any
    ) -> api.ListTokensResponse:
        def work(session: Session) -> list[api.Token]:
            return [token_proto(row) for row in principals.tokens(session, request.principal)]

        return api.ListTokensResponse(tokens=await self._db.run(work))

    async def RevokeToken(
        self, request: api.RevokeTokenRequest, context: Any
    ) -> api.RevokeTokenResponse:
        call = call_of("RevokeToken", request)

        def work(session: Session) -> None:
            principals.revoke(session, request.id)
            audit.mutation(session, call, f"token {request.id}")

        await self._db.run(work)
        self._forget()
        return api.RevokeTokenResponse()

    async def IssueClientCertificate(
        self, request: api.IssueClientCertificateRequest, context: Any
    ) -> api.IssueClientCertificateResponse:
        if self._ca is None:
            raise FailedPrecondition("this controller has no certificate authority")
        ca = self._ca
        call = call_of("IssueClientCertificate", request)

        def work(session: Session) -> x509.Certificate:
            principals.get(session, request.principal)
            try:
                cert = ca.sign(
                    request.csr_pem.encode(), CertRole.USER, request.principal, self._cert_lifetime
                )
            except InvalidRequest as exc:
                raise InvalidArgument("csr_pem", str(exc)) from exc
            note = f"certificate {cert.serial_number:x} of {request.principal}"
            audit.mutation(session, call, note)
            return cert

        cert = await self._db.run(work)
        return api.IssueClientCertificateResponse(
            certificate_pem=cert_pem(cert).decode(), ca_pem=ca.cert_pem.decode()
        )

    async def GetCurrentPrincipal(
        self, request: api.GetCurrentPrincipalRequest, context: Any
    ) -> api.GetCurrentPrincipalResponse:
        """The caller's name and role; without authentication, everyone may
        do everything: an unnamed admin."""
        if not self._authenticates:
            return api.GetCurrentPrincipalResponse(
                principal=api.Principal(role=api.ROLE_ADMIN), authentication_required=False
            )
        principal = caller.current.get()
        if principal is None:  # the interceptor sets it for every authenticated call
            raise FailedPrecondition("the call has no principal")
        return api.GetCurrentPrincipalResponse(
            principal=api.Principal(name=principal.name, role=_ROLE_PROTOS[principal.role]),
            authentication_required=True,
        )
