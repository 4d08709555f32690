"""Enrollment: a one-time token for an added host, and the certificate
hostd gets for its own key in exchange (EnrollmentService).

The CA signs only the request's key, for Role.HOST and the token's host id,
with the controller's host lifetime: nothing the request asks for is taken.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy.orm import Session

from controller import audit
from controller.enrollment import records, tokens
from controller.enrollment.authority import Authority
from controller.enrollment.errors import HostEnrolled
from controller.enrollment.revocation import RevocationList
from controller.enrollment.tokens import IssuedToken
from controller.errors import HostNotFound
from controller.pki.ca import InvalidRequest
from controller.requests import Call
from db import repositories as repo
from db.models import utcnow
from db.session import Database
from virtplane_common.errors import InvalidArgument
from virtplane_common.tls.keys import cert_pem
from virtplane_common.tls.names import Role

HOST_ENROLLED = "HOST_ENROLLED"
MAX_TOKEN_LIFETIME = dt.timedelta(days=30)


@dataclass(frozen=True)
class EnrollmentSettings:
    token_lifetime: dt.timedelta = dt.timedelta(minutes=60)
    host_cert_lifetime: dt.timedelta = dt.timedelta(days=398)


@dataclass(frozen=True)
class Enrolled:
    """What EnrollHost answers: the host, its certificate, the CA's, the CRL (PEM)."""

    host_id: str
    host_name: str
    cert_pem: bytes
    ca_pem: bytes
    crl_pem: bytes


def _request(csr_pem: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise InvalidArgument("csr_pem", "not a PEM certificate signing request") from exc


class Enrollment:
    def __init__(
        self,
        db: Database,
        authority: Authority,
        revocations: RevocationList,
        settings: EnrollmentSettings,
    ) -> None:
        self._db = db
        self._authority = authority
        self._revocations = revocations
        self.settings = settings

    def first_token(self, session: Session, host_id: str) -> IssuedToken:
        """AddHost's token for the host it adds, in AddHost's transaction."""
        return tokens.issue(session, host_id, self.settings.token_lifetime)

    async def create_token(
        self, host_ref: str, lifetime: dt.timedelta | None, call: Call
    ) -> IssuedToken:
        """A new token for a host not enrolled yet."""
        if lifetime is not None and lifetime > MAX_TOKEN_LIFETIME:
            raise InvalidArgument("ttl_seconds", f"must be at most {MAX_TOKEN_LIFETIME.days} days")

        def work(session: Session) -> IssuedToken:
            host = repo.find_host(session, host_ref)
            if host is None:
                raise HostNotFound(host_ref)
            if host.enrolled_at is not None:
                raise HostEnrolled(host.name)
            issued = tokens.issue(session, host.id, lifetime or self.settings.token_lifetime)
            audit.mutation(session, call, f"for {host.name}", host_id=host.id)
            return issued

        return await self._db.run(work)

    async def enroll(self, secret: str, csr_pem: bytes) -> Enrolled:
        """Redeems the token and certifies the request's key as its host."""
        # A concurrent enrollment that took the key first makes db.run run
        # this again, and check_key_free then names the host that has it.
        return await self._db.run(lambda s: self._enroll(s, secret, csr_pem))

    def _enroll(self, session: Session, secret: str, csr_pem: bytes) -> Enrolled:
        now = utcnow()
        token = tokens.redeem(session, secret, now)
        host = repo.lock_host(session, token.host_id)
        if host is None:  # the tokens of a removed host go with it; never here
            raise HostNotFound(token.host_id)
        if host.enrolled_at is not None:
            raise HostEnrolled(host.name)
        records.check_key_free(
            session, records.fingerprint(_request(csr_pem).public_key()), host.id
        )
        cert = self._sign(csr_pem, host.id)
        records.record(session, host, cert)
        host.enrolled_at = now
        tokens.discard_unused(session, host.id)
        audit.record(
            session,
            HOST_ENROLLED,
            f"host {host.name!r} enrolled (certificate {cert.serial_number})",
            host_id=host.id,
        )
        session.flush()
        return Enrolled(
            host.id,
            host.name,
            cert_pem(cert),
            self._authority.get().cert_pem,
            self._revocations.pem(session),
        )

    def _sign(self, csr_pem: bytes, host_id: str) -> x509.Certificate:
        try:
            return self._authority.get().sign(
                csr_pem, Role.HOST, host_id, self.settings.host_cert_lifetime
            )
        except InvalidRequest as exc:
            raise InvalidArgument("csr_pem", str(exc)) from exc
