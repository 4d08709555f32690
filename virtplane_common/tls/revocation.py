"""The serials the CA has revoked, as its signed CRL lists them.

hostd keeps the controller's latest CRL and checks each caller's certificate
against it (TLS has already checked the chain and the dates); a CRL not
signed by the CA, or older than the one held, is refused.
"""

from __future__ import annotations

import threading

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa


class InvalidCrl(ValueError):
    """A CRL that is not PEM, not the CA's, or older than the one held."""


class Revocations:
    def __init__(self, ca_pem: bytes) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._lock = threading.Lock()
        self._serials: frozenset[int] = frozenset()
        self._number = -1

    def load(self, crl_pem: bytes) -> bool:
        """Takes crl_pem if it is the CA's and not older than the CRL held;
        returns whether it replaced it. Raises InvalidCrl otherwise."""
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
        except ValueError as exc:
            raise InvalidCrl("not a PEM certificate revocation list") from exc
        public = self._ca.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidCrl("the CA's key is neither ECDSA nor RSA")
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(public):
            raise InvalidCrl("the revocation list is not signed by this CA")
        number = _crl_number(crl)
        with self._lock:
            if number < self._number:
                raise InvalidCrl(f"revocation list {number} is older than {self._number}")
            changed = number != self._number
            self._number = number
            self._serials = frozenset(entry.serial_number for entry in crl)
        return changed

    def revoked(self, serial: int) -> bool:
        with self._lock:
            return serial in self._serials

    @property
    def number(self) -> int:
        """The CRL number held; -1 before the first."""
        with self._lock:
            return self._number


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0
