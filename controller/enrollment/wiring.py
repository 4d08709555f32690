"""What controller.app builds for host identity, and what the host verbs
and monitors call (HostIdentity)."""

from __future__ import annotations

import datetime as dt

import grpc
from sqlalchemy.orm import Session
from virtplane.v1 import enrollment_service_pb2_grpc

from controller.auth.interceptor import Revoked
from controller.config import ControllerConfig
from controller.enrollment.authority import Authority, pki_settings
from controller.enrollment.enroll import Enrollment, EnrollmentSettings
from controller.enrollment.keeper import IdentityKeeper
from controller.enrollment.renewal import Renewal
from controller.enrollment.revocation import RevocationList
from controller.enrollment.servicer import EnrollmentServicer
from controller.enrollment.tokens import IssuedToken
from controller.host_client import HostClient
from controller.pki.ca import CertificateAuthority
from db.models import Host
from db.session import Database


class HostIdentity:
    """Enrollment, revocation and renewal, as the controller's parts use them."""

    def __init__(self, db: Database, config: ControllerConfig, ca: CertificateAuthority | None):
        self.authority = Authority(pki_settings(config), ca)
        if config.auth_required or config.ca_cert or config.ca_key:
            self.authority.get()  # at start: a CA brought that does not load fails here
        self.revocations = RevocationList(db, self.authority)
        lifetime = dt.timedelta(days=config.host_cert_days)
        settings = EnrollmentSettings(
            token_lifetime=dt.timedelta(minutes=config.enrollment_token_minutes),
            host_cert_lifetime=lifetime,
        )
        self.enrollment = Enrollment(db, self.authority, self.revocations, settings)
        self.renewal = Renewal(db, self.authority, self.revocations, lifetime)
        self.keeper = IdentityKeeper(db, self.revocations, self.renewal, config.host_retry_seconds)

    def first_token(self, session: Session, host_id: str) -> IssuedToken:
        """AddHost's token, in its transaction."""
        return self.enrollment.first_token(session, host_id)

    def revoke(self, session: Session, host: Host) -> list[int]:
        """RemoveHost: revokes the host's certificates in its transaction."""
        return self.revocations.revoke_host(session, host)

    async def revoked_now(self, serials: list[int]) -> None:
        """After RemoveHost committed: the serials are refused from now on
        and every connected host gets the new CRL."""
        if not serials:
            return
        self.revocations.noted(*serials)
        await self.keeper.publish()

    async def keep(self, host_id: str, client: HostClient) -> None:
        """A host's monitor runs this while connected (controller.enrollment.keeper)."""
        await self.keeper.keep(host_id, client)

    def revoked(self, also: Revoked | None = None) -> Revoked:
        """The interceptor's check: revoked here, or by also."""
        if also is None:
            return self.revocations.revoked
        mine = self.revocations.revoked
        return lambda serial: mine(serial) or also(serial)

    def install(self, server: grpc.aio.Server) -> None:
        servicer = EnrollmentServicer(self.enrollment)
        enrollment_service_pb2_grpc.add_EnrollmentServiceServicer_to_server(servicer, server)
