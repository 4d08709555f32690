"""A host's certificate as the hosts table records it: serial (decimal),
dates, and the fingerprint of its key (sha256 of the SubjectPublicKeyInfo
DER, hex), which no two hosts share."""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.enrollment.errors import KeyEnrolled
from controller.enrollment.tokens import aware
from controller.pki.ca import CLOCK_SKEW
from controller.pki.store import RENEW_AFTER
from db.models import Host


def fingerprint(public_key: PublicKeyTypes) -> str:
    """The sha256 (hex) of a public key's SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def check_key_free(session: Session, key_fingerprint: str, host_id: str) -> None:
    """KeyEnrolled when another host holds the key."""
    holder = session.scalars(
        select(Host).where(Host.key_fingerprint == key_fingerprint, Host.id != host_id)
    ).first()
    if holder is not None:
        raise KeyEnrolled(holder.name, holder.id)


def record(session: Session, host: Host, cert: x509.Certificate) -> None:
    """Makes cert the host's current certificate; the one it replaces stays
    on record as the previous, revoked with the current if the host is removed."""
    host.previous_cert_serial = host.cert_serial
    host.previous_cert_not_after = host.cert_not_after
    host.cert_serial = str(cert.serial_number)
    host.cert_not_before = cert.not_valid_before_utc
    host.cert_not_after = cert.not_valid_after_utc
    host.key_fingerprint = fingerprint(cert.public_key())


def renew_at(host: Host) -> dt.datetime | None:
    """When the host's certificate is due for renewal (as controller.pki.store.due:
    after RENEW_AFTER of its lifetime); None for a host not enrolled. The
    lifetime counts from when the CA signed it, CLOCK_SKEW after its
    notBefore, so that short lifetimes (seconds, in tests) renew on time
    rather than at once."""
    if host.cert_not_before is None or host.cert_not_after is None:
        return None
    end = aware(host.cert_not_after)
    start = min(aware(host.cert_not_before) + CLOCK_SKEW, end)
    return start + (end - start) * RENEW_AFTER
