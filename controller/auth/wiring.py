"""What the controller's app installs for authentication: the interceptor,
PrincipalService, and the bootstrap admin of a first start."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy.orm import Session
from virtplane.v1 import principal_service_pb2_grpc

from controller.auth import principals
from controller.auth.interceptor import Authenticator, AuthInterceptor, Revoked
from controller.auth.servicer import PrincipalServicer
from controller.auth.tokens import Holder, Lookup, TokenCache
from controller.config import ControllerConfig
from controller.pki.ca import CertificateAuthority
from db.session import Database

DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class AuthSettings:
    state_dir: Path
    token_ttl: dt.timedelta = 90 * DAY
    admin_token_ttl: dt.timedelta = 365 * DAY
    client_cert_lifetime: dt.timedelta = 398 * DAY


def _never_revoked(serial: int) -> bool:
    return False


def _lookup(db: Database, find: Callable[[Session, str], Holder | None]) -> Lookup:
    async def lookup(key: str) -> Holder | None:
        return await db.run(lambda session: find(session, key))

    return lookup


def authenticator(db: Database, revoked: Revoked | None) -> Authenticator:
    return Authenticator(
        TokenCache(_lookup(db, principals.holder)),
        TokenCache(_lookup(db, principals.user)),
        revoked or _never_revoked,
    )


def interceptors(config: ControllerConfig, auth: Authenticator) -> list[AuthInterceptor]:
    """The interceptor, when config requires authentication."""
    return [AuthInterceptor(auth)] if config.auth_required else []


def install(
    servers: Sequence[grpc.aio.Server],
    db: Database,
    auth: Authenticator,
    ca: CertificateAuthority | None,
    config: ControllerConfig,
) -> None:
    """Adds PrincipalService to the servers; with authentication required, makes
    the bootstrap admin at the first start."""
    settings = AuthSettings(
        config.state_dir,
        token_ttl=dt.timedelta(days=config.token_ttl_days),
        client_cert_lifetime=dt.timedelta(days=config.client_cert_days),
    )
    servicer = PrincipalServicer(
        db,
        auth.forget,
        ca,
        settings.token_ttl,
        settings.client_cert_lifetime,
        authenticates=config.auth_required,
    )
    for server in servers:
        principal_service_pb2_grpc.add_PrincipalServiceServicer_to_server(servicer, server)
    if config.auth_required:
        principals.bootstrap(db, settings.state_dir, settings.admin_token_ttl)
