"""One-time enrollment tokens.

A secret is ``vpe_`` and 32 random bytes (secrets.token_urlsafe); the
database keeps only its SHA-256, like an API token's (controller.auth.tokens).
A token is redeemed once, in the transaction that enrolls its host: an
enrollment that fails (a bad request, a key held by another host) rolls the
redemption back, so the same token can be tried again until it expires.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from controller.auth.tokens import digest
from controller.enrollment.errors import TokenRefused
from db.models import EnrollmentToken, utcnow

PREFIX = "vpe_"


@dataclass(frozen=True)
class IssuedToken:
    """A new token: its secret (shown once) and until when it is valid."""

    host_id: str
    secret: str
    expires_at: dt.datetime


def aware(when: dt.datetime) -> dt.datetime:
    """when in UTC (SQLite gives back naive datetimes; they were stored in UTC)."""
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def issue(session: Session, host_id: str, lifetime: dt.timedelta) -> IssuedToken:
    """A new token for host_id, stored hashed in the caller's transaction."""
    secret = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        EnrollmentToken(
            digest=digest(secret), host_id=host_id, created_at=now, expires_at=now + lifetime
        )
    )
    return IssuedToken(host_id, secret, now + lifetime)


def redeem(session: Session, secret: str, now: dt.datetime) -> EnrollmentToken:
    """Marks the token used and returns it; TokenRefused for an unknown,
    used or expired one. The row stays locked until the transaction ends, so
    of two concurrent redemptions only one finds it unused."""
    row = session.scalars(
        select(EnrollmentToken)
        .where(EnrollmentToken.digest == digest(secret))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None or row.used_at is not None or aware(row.expires_at) <= now:
        raise TokenRefused()
    row.used_at = now
    return row


def discard_unused(session: Session, host_id: str) -> None:
    """Drops the host's tokens not used yet (it has enrolled)."""
    session.execute(
        delete(EnrollmentToken).where(
            EnrollmentToken.host_id == host_id, EnrollmentToken.used_at.is_(None)
        )
    )
