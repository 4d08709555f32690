"""Renewing a host's certificate while it runs (HostIdentityService).

hostd makes a new key and sends a signing request for it; the CA signs the
key for the same host id; hostd installs the certificate (new connections
get it, open ones keep theirs); the hosts table records it. A certificate
whose installation failed is revoked at once: the host may or may not hold
it, and no valid certificate may exist that the record does not name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from cryptography import x509
from sqlalchemy.orm import Session

from controller import audit
from controller.enrollment import records
from controller.enrollment.authority import Authority
from controller.enrollment.revocation import RevocationList
from controller.host_client import HostClient
from controller.pki.ca import InvalidRequest
from db.models import Host
from db.session import Database
from virtplane_common.errors import InvalidArgument, VirtplaneError
from virtplane_common.tls.keys import cert_pem
from virtplane_common.tls.names import Role

log = logging.getLogger(__name__)

HOST_CERT_RENEWED = "HOST_CERT_RENEWED"


class Renewal:
    def __init__(
        self,
        db: Database,
        authority: Authority,
        revocations: RevocationList,
        lifetime: dt.timedelta,
    ) -> None:
        self._db = db
        self._authority = authority
        self._revocations = revocations
        self._lifetime = lifetime

    async def renew(self, host_id: str, client: HostClient) -> x509.Certificate:
        """Gives the host a new certificate for a new key of its own."""
        csr_pem = await client.prepare_renewal()
        try:
            cert = self._authority.get().sign(csr_pem, Role.HOST, host_id, self._lifetime)
        except InvalidRequest as exc:
            raise InvalidArgument("csr_pem", f"host {client.name!r} sent {exc}") from exc
        key = records.fingerprint(cert.public_key())
        await self._db.run(lambda s: records.check_key_free(s, key, host_id))
        # Once sent, the certificate is recorded or revoked, even if the
        # monitor is cancelled meanwhile (its host went away).
        await asyncio.shield(self._install(host_id, client, cert))
        log.info("host %s: certificate renewed (serial %d)", client.name, cert.serial_number)
        return cert

    async def _install(self, host_id: str, client: HostClient, cert: x509.Certificate) -> None:
        try:
            await client.install_certificate(cert_pem(cert))
        except VirtplaneError:
            await self._revoke(cert, f"host {client.name} ({host_id}), not installed")
            raise
        if not await self._db.run(lambda s: self._record(s, host_id, cert)):
            await self._revoke(cert, f"host {client.name} ({host_id}), removed while renewed")

    def _record(self, session: Session, host_id: str, cert: x509.Certificate) -> bool:
        host = session.get(Host, host_id)
        if host is None:
            return False
        records.record(session, host, cert)
        audit.record(
            session,
            HOST_CERT_RENEWED,
            f"host {host.name!r}: certificate {cert.serial_number} until "
            f"{cert.not_valid_after_utc.isoformat()}",
            host_id=host.id,
        )
        return True

    async def _revoke(self, cert: x509.Certificate, subject: str) -> None:
        serial = await self._db.run(
            lambda s: self._revocations.revoke(
                s, cert.serial_number, subject, cert.not_valid_after_utc
            )
        )
        self._revocations.noted(serial)
