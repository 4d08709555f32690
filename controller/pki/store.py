"""The CA and the controller's own certificate in the controller's state folder.

Layout of ``<state>/pki``: ``ca.pem`` and ``ca.key`` (0600), made at first
start unless the operator brings a CA of their own (its files are then read
where they are and never copied); ``controller/`` holds the controller's key
pair (virtplane_common.tls.files), issued again when it is missing, signed by
another CA, for other names, or past two thirds of its lifetime.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from controller.pki.ca import CLOCK_SKEW, CertificateAuthority, Names
from virtplane_common.tls.files import KeyPair, TlsFiles, write_private, write_public
from virtplane_common.tls.names import Role

RENEW_AFTER = 2 / 3
"""A certificate is renewed once this share of its lifetime has passed."""


@dataclass(frozen=True)
class PkiSettings:
    folder: Path
    """``<state>/pki``."""
    ca_cert: Path | None = None
    """The operator's own CA certificate and key; None: the controller's own."""
    ca_key: Path | None = None
    ca_lifetime: dt.timedelta = dt.timedelta(days=3650)
    controller_lifetime: dt.timedelta = dt.timedelta(days=398)
    host_lifetime: dt.timedelta = dt.timedelta(days=398)
    user_lifetime: dt.timedelta = dt.timedelta(days=398)
    server_names: Sequence[str] = field(default=("localhost", "127.0.0.1", "::1"))
    """The DNS names and IP addresses clients reach the controller by."""

    @property
    def controller_files(self) -> TlsFiles:
        return TlsFiles(self.folder / "controller")


def split_names(names: Sequence[str]) -> Names:
    """Names as DNS names and IP addresses."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return Names(dns=tuple(dns), ips=tuple(ips))


def open_ca(settings: PkiSettings) -> CertificateAuthority:
    """The operator's CA, the one made before, or a new one written now."""
    if settings.ca_cert is not None or settings.ca_key is not None:
        if settings.ca_cert is None or settings.ca_key is None:
            raise ValueError("bring both the CA certificate and its key, or neither")
        brought = settings.ca_cert.read_bytes(), settings.ca_key.read_bytes()
        return CertificateAuthority.load(*brought)
    cert, key = settings.folder / "ca.pem", settings.folder / "ca.key"
    if cert.is_file() and key.is_file():
        return CertificateAuthority.load(cert.read_bytes(), key.read_bytes())
    ca = CertificateAuthority.create("virtplane CA", settings.ca_lifetime)
    write_private(key, ca.key_pem)
    write_public(cert, ca.cert_pem)
    return ca


def renewal_time(cert: x509.Certificate) -> dt.datetime:
    """When cert is to be renewed: after RENEW_AFTER of the lifetime it was
    issued for (its notBefore lies CLOCK_SKEW before it was issued, which
    would make a short lifetime due at once)."""
    end = cert.not_valid_after_utc
    start = min(cert.not_valid_before_utc + CLOCK_SKEW, end)
    return start + (end - start) * RENEW_AFTER


def due(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    """Whether cert has passed the share of its lifetime after which it is renewed."""
    return (now or dt.datetime.now(dt.UTC)) >= renewal_time(cert)


def controller_pair(ca: CertificateAuthority, settings: PkiSettings) -> KeyPair:
    """The controller's key pair: the one on disk while it still serves, else a new one."""
    files = settings.controller_files
    names = split_names(settings.server_names)
    if files.complete():
        pair = KeyPair.read(files)
        if pair.ca == ca.cert_pem and not _stale(x509.load_pem_x509_certificate(pair.cert), names):
            return pair
    pair = ca.issue(Role.CONTROLLER, "", settings.controller_lifetime, names)
    pair.write(files)
    return pair


def _stale(cert: x509.Certificate, names: Names) -> bool:
    if due(cert):
        return True
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return dns != set(names.dns) or ips != set(names.ips)
