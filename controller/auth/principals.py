"""Principals and their tokens in the database (tables principals and
api_tokens), and the bootstrap admin of a new controller."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import uuid
from pathlib import Path

from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.auth.caller import Principal
from controller.auth.permissions import Role
from controller.auth.tokens import Holder, new_secret
from controller.auth.tokens import digest as digest_of
from db.models import ApiToken, utcnow
from db.models import Principal as PrincipalRow
from db.session import Database
from virtplane_common.errors import AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger(__name__)

KINDS = ("user", "service_account")
NAME = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")
BOOTSTRAP_ADMIN = "admin"
ADMIN_TOKEN_FILE = "admin.token"
MAX_TTL = dt.timedelta(days=3650)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidArgument(
            "name", "must be 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter"
        )
    return name


def create(session: Session, name: str, kind: str, role: Role) -> PrincipalRow:
    if kind not in KINDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(KINDS)}")
    if session.get(PrincipalRow, check_name(name)) is not None:
        raise AlreadyExists(f"principal {name!r} already exists")
    row = PrincipalRow(name=name, kind=kind, role=role.value, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def get(session: Session, name: str) -> PrincipalRow:
    row = session.get(PrincipalRow, name)
    if row is None:
        raise NotFound("principal", name)
    return row


def listed(session: Session) -> list[PrincipalRow]:
    return list(session.scalars(select(PrincipalRow).order_by(PrincipalRow.name)))


def delete(session: Session, name: str) -> None:
    row = get(session, name)
    session.execute(delete_rows(ApiToken).where(ApiToken.principal == name))
    session.delete(row)


def add_token(session: Session, principal: str, ttl: dt.timedelta) -> tuple[ApiToken, str]:
    """A new token of principal, valid for ttl, and its secret (kept nowhere)."""
    get(session, principal)
    if not dt.timedelta(0) < ttl <= MAX_TTL:
        raise InvalidArgument("ttl_seconds", f"must be positive and at most {MAX_TTL.days} days")
    secret = new_secret()
    now = utcnow()
    row = ApiToken(
        id=str(uuid.uuid4()),
        principal=principal,
        digest=digest_of(secret),
        created_at=now,
        expires_at=now + ttl,
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    return row, secret


def tokens(session: Session, principal: str = "") -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at)
    if principal:
        query = query.where(ApiToken.principal == principal)
    return list(session.scalars(query))


def revoke(session: Session, token_id: str) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFound("token", token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()


def holder(session: Session, digest: str) -> Holder | None:
    """The holder of the unrevoked token with this digest, or None."""
    found = session.execute(
        select(ApiToken.expires_at, PrincipalRow.name, PrincipalRow.role)
        .join(PrincipalRow, PrincipalRow.name == ApiToken.principal)
        .where(ApiToken.digest == digest, ApiToken.revoked_at.is_(None))
    ).first()
    if found is None:
        return None
    expires_at, name, role = found
    if expires_at.tzinfo is None:  # SQLite keeps no zone; the column is UTC
        expires_at = expires_at.replace(tzinfo=dt.UTC)
    return Holder(Principal(name, Role(role)), expires_at)


def user(session: Session, name: str) -> Holder | None:
    """The principal a user certificate names, or None; its certificate's
    own expiry is TLS's to check."""
    row = session.get(PrincipalRow, name)
    if row is None:
        return None
    return Holder(Principal(row.name, Role(row.role)), dt.datetime.max.replace(tzinfo=dt.UTC))


def bootstrap(db: Database, state_dir: Path, ttl: dt.timedelta) -> Path | None:
    """At the first start (no principals yet): creates principal admin and
    writes its token's secret, once, to state_dir/admin.token (mode 0600).
    Returns the file's path, or None when there were principals already."""

    def work(session: Session) -> str | None:
        if session.scalar(select(func.count()).select_from(PrincipalRow)):
            return None
        create(session, BOOTSTRAP_ADMIN, "user", Role.ADMIN)
        return add_token(session, BOOTSTRAP_ADMIN, ttl)[1]

    secret = db.transaction(work)
    if secret is None:
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / ADMIN_TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    os.chmod(path, 0o600)
    log.warning("first start: the token of principal %r is in %s", BOOTSTRAP_ADMIN, path)
    return path
