"""What the controller's app installs for authentication: the interceptor,
PrincipalService, and the bootstrap admin of a first start."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from controller.auth import principals
from controller.auth.interceptor import Authenticator, Revoked
from controller.auth.servicer import PrincipalServicer
from controller.auth.tokens import Holder, Lookup, TokenCache
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


def servicer(
    db: Database, auth: Authenticator, ca: CertificateAuthority | None, settings: AuthSettings
) -> PrincipalServicer:
    return PrincipalServicer(db, auth.forget, ca, settings.token_ttl, settings.client_cert_lifetime)


def bootstrap(db: Database, settings: AuthSettings) -> Path | None:
    return principals.bootstrap(db, settings.state_dir, settings.admin_token_ttl)
