"""The certificates the CA revoked, and its revocation list.

Rows of revoked_certificates are never deleted, so the CRL's number (how
many it lists) only grows: hostd takes a list only if it is not older than
the one it holds (virtplane_common.tls.revocation). The serials are also
kept in memory for revoked(), which the authentication interceptor calls on
the event loop for every client certificate.
"""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.enrollment.authority import Authority
from controller.enrollment.tokens import aware
from db.models import Host, RevokedCertificate, utcnow
from db.session import Database

CRL_VALID_FOR = dt.timedelta(days=7)
"""The nextUpdate of each CRL made; hosts get a fresh one at every (re)connect."""


class RevocationList:
    def __init__(self, db: Database, authority: Authority) -> None:
        self._db = db
        self._authority = authority
        self._lock = threading.Lock()
        rows = db.transaction(lambda s: s.scalars(select(RevokedCertificate.serial)).all())
        self._serials = frozenset(int(serial) for serial in rows)

    def revoked(self, serial: int) -> bool:
        """Whether the certificate with this serial was revoked."""
        with self._lock:
            return serial in self._serials

    def revoke_host(self, session: Session, host: Host) -> list[int]:
        """Revokes the host's current certificate, and the one its last
        renewal replaced while it is still valid, in the caller's
        transaction; their serials (none for a host never enrolled). Call
        noted() once the transaction committed."""
        now = utcnow()
        held = [
            (host.cert_serial, host.cert_not_after),
            (host.previous_cert_serial, host.previous_cert_not_after),
        ]
        subject = f"host {host.name} ({host.id})"
        return [
            self.revoke(session, int(serial), subject, aware(not_after) if not_after else now)
            for serial, not_after in held
            if serial is not None and (not_after is None or aware(not_after) > now)
        ]

    def revoke(self, session: Session, serial: int, subject: str, not_after: dt.datetime) -> int:
        if session.get(RevokedCertificate, str(serial)) is None:
            session.add(
                RevokedCertificate(
                    serial=str(serial), subject=subject, revoked_at=utcnow(), not_after=not_after
                )
            )
        return serial

    def noted(self, *serials: int) -> None:
        """Adds committed revocations to what revoked() answers."""
        with self._lock:
            self._serials = self._serials | set(serials)

    def pem(self, session: Session) -> bytes:
        """The CA's current CRL (PEM), numbered by how many it lists."""
        rows = session.scalars(select(RevokedCertificate)).all()
        entries = [(int(row.serial), aware(row.revoked_at)) for row in rows]
        return self._authority.get().revocation_list(entries, len(entries), CRL_VALID_FOR)

    async def current(self) -> bytes:
        return await self._db.run(self.pem)
