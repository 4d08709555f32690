"""The certificate authority: signs identities and the revocation list.

It signs what it decides, not what a request asks: from a CSR it takes only
the public key (after checking the request's own signature, which proves its
sender holds the key); the names, the lifetime and the uses come from the
caller (controller.pki's callers know whom they enroll).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.keys import PrivateKey, cert_pem, key_pem, load_key, new_key, same_key
from virtplane_common.tls.names import Role, host_dns_name, identity_uri

CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates are valid from this long before they are made."""
_MIN_RSA_BITS = 2048


class InvalidRequest(ValueError):
    """A certificate signing request that cannot be signed; says why."""


@dataclass(frozen=True)
class Names:
    """Extra names a server certificate answers to (its addresses)."""

    dns: Sequence[str] = ()
    ips: Sequence[str] = ()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        if not same_key(cert, key):
            raise ValueError("the CA key does not match the CA certificate")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound as exc:
            raise ValueError("the CA certificate has no basic constraints") from exc
        if not constraints.ca:
            raise ValueError("the CA certificate is not a CA's (basicConstraints CA:FALSE)")
        self.cert = cert
        self._key = key

    @classmethod
    def create(cls, common_name: str, lifetime: dt.timedelta) -> CertificateAuthority:
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert: bytes, key: bytes) -> CertificateAuthority:
        return cls(x509.load_pem_x509_certificate(cert), load_key(key))

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        return key_pem(self._key)

    def sign(
        self,
        csr_pem: bytes,
        role: Role,
        name: str,
        lifetime: dt.timedelta,
        names: Names = Names(),
    ) -> x509.Certificate:
        """Certifies the key of csr_pem as role/name for lifetime."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise InvalidRequest("not a PEM certificate signing request") from exc
        if not csr.is_signature_valid:
            raise InvalidRequest("the request's signature does not match its key")
        public = csr.public_key()
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < _MIN_RSA_BITS:
            raise InvalidRequest(f"RSA keys must have at least {_MIN_RSA_BITS} bits")
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise InvalidRequest("the key must be ECDSA or RSA")
        return self._certify(public, role, name, lifetime, names)

    def issue(
        self, role: Role, name: str, lifetime: dt.timedelta, names: Names = Names()
    ) -> KeyPair:
        """A new key and its certificate, for an identity whose key the
        controller itself holds (its own, or one handed to an operator)."""
        key = new_key()
        cert = self._certify(key.public_key(), role, name, lifetime, names)
        return KeyPair(ca=self.cert_pem, cert=cert_pem(cert), key=key_pem(key))

    def _certify(
        self,
        public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        role: Role,
        name: str,
        lifetime: dt.timedelta,
        names: Names,
    ) -> x509.Certificate:
        now = _now()
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity_uri(role, name))]
        if role is Role.HOST:
            sans.append(x509.DNSName(host_dns_name(name)))
        sans += [x509.DNSName(dns) for dns in names.dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ips]
        uses = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role is not Role.USER:
            uses.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        subject = f"{role.value} {name}".strip()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(uses), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
            .sign(self._key, hashes.SHA256())
        )

    def revocation_list(
        self, revoked: Iterable[tuple[int, dt.datetime]], number: int, valid_for: dt.timedelta
    ) -> bytes:
        """A signed CRL listing the (serial, revoked at) pairs, numbered number."""
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(now + valid_for)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for serial, when in revoked:
            entry = (
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)
