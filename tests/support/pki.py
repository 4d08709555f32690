"""A test CA: key pairs for the controller, hosts and users, written where a
daemon reads them (virtplane_common.tls.files), and CRLs.

It is the controller's own CertificateAuthority (controller.pki.ca), made in
a temporary folder, so a test can stand up a hostd with an identity without
enrolling it, or hand a client a certificate of any role.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from controller.pki.ca import CertificateAuthority, Names
from virtplane_common.tls.files import KeyPair, TlsFiles
from virtplane_common.tls.names import Role

LIFETIME = dt.timedelta(days=1)
LOCAL = Names(dns=("localhost",), ips=("127.0.0.1",))


class TestPki:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(
        self,
        folder: Path,
        common_name: str = "virtplane test CA",
        ca: CertificateAuthority | None = None,
    ) -> None:
        self.folder = folder
        self.ca = ca or CertificateAuthority.create(common_name, dt.timedelta(days=30))
        self._revoked: list[tuple[int, dt.datetime]] = []

    @classmethod
    def of(cls, ca: CertificateAuthority, folder: Path) -> TestPki:
        """A TestPki issuing from an existing CA (a controller's)."""
        return cls(folder, ca=ca)

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def pair(
        self, role: Role, name: str = "", lifetime: dt.timedelta = LIFETIME, names: Names = LOCAL
    ) -> KeyPair:
        return self.ca.issue(role, name, lifetime, names)

    def files(self, label: str, pair: KeyPair) -> TlsFiles:
        """Writes pair into a folder of its own and returns where."""
        files = TlsFiles(self.folder / label)
        pair.write(files)
        return files

    def revoke(self, pair: KeyPair) -> None:
        serial = x509.load_pem_x509_certificate(pair.cert).serial_number
        self._revoked.append((serial, dt.datetime.now(dt.UTC)))

    def crl(self, number: int) -> bytes:
        return self.ca.revocation_list(self._revoked, number, dt.timedelta(days=1))
