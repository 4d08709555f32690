"""This host's identity: its key pair from the controller's CA, the CRL it
checks its peers against, and the renewal of its certificate.

On disk it is ``<state_dir>/tls/`` (virtplane_common.tls.files.TlsFiles):
``ca.pem``, ``cert.pem``, ``key.pem`` (0600) and ``crl.pem``; during a
renewal, the new key waits in ``pending-key.pem`` (0600) until the
controller's certificate for it is installed. Installing writes the new
certificate first, then the key: a hostd stopped in between finds a
certificate for its pending key at the next start and finishes the job.

The pair is served through a ServingCertificate: a renewal reaches new
connections at once and leaves open ones (watch streams) as they are.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from virtplane_common.errors import FailedPrecondition, InvalidArgument, VirtplaneError
from virtplane_common.tls.credentials import ServingCertificate
from virtplane_common.tls.files import KeyPair, TlsFiles, write_private, write_public
from virtplane_common.tls.keys import (
    PrivateKey,
    key_pem,
    load_key,
    new_key,
    same_key,
    signing_request,
)
from virtplane_common.tls.names import Role, identity_of
from virtplane_common.tls.revocation import InvalidCrl, Revocations

log = logging.getLogger(__name__)

TLS_FOLDER = "tls"
PENDING_KEY = "pending-key.pem"
NO_IDENTITY = (
    "hostd has no identity: start it once with --controller, --controller-ca and "
    "--enroll-token-file (SECURITY.md)"
)

Renewed = Callable[[KeyPair], None]
"""Told the new pair after each renewal (e.g. to hand it to QEMU)."""


class IdentityError(VirtplaneError):
    """This host's identity on disk is missing or unusable; hostd cannot serve."""


def tls_files(state_dir: Path) -> TlsFiles:
    return TlsFiles(state_dir / TLS_FOLDER)


def host_id_of(cert_pem: bytes) -> str | None:
    """The host id a certificate names, or None when it names no host."""
    try:
        named = identity_of(x509.load_pem_x509_certificate(cert_pem))
    except ValueError:
        return None
    if named is None or named.role is not Role.HOST:
        return None
    return named.name


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class HostIdentity:
    """The host's pair (served, renewable) and the revocations it holds."""

    def __init__(self, files: TlsFiles, pair: KeyPair, host_id: str) -> None:
        self.files = files
        self.host_id = host_id
        self.serving = ServingCertificate(pair)
        self.revocations = Revocations(pair.ca)
        self._ca = x509.load_pem_x509_certificate(pair.ca)
        self._renewed: list[Renewed] = []
        self._renewal = threading.Lock()

    @classmethod
    def load(cls, state_dir: Path) -> HostIdentity:
        """The identity under state_dir/tls; IdentityError when there is none."""
        files = tls_files(state_dir)
        if not files.complete():
            raise IdentityError(NO_IDENTITY)
        _finish_install(files)
        pair = KeyPair.read(files)
        host_id = _checked(pair, files)
        identity = cls(files, pair, host_id)
        if files.crl.is_file():
            try:
                identity.revocations.load(files.crl.read_bytes())
            except InvalidCrl as exc:
                raise IdentityError(f"{files.crl}: {exc}") from exc
        return identity

    @property
    def pair(self) -> KeyPair:
        """The pair served now (and presented to peers)."""
        return self.serving.pair

    @property
    def pending_key_path(self) -> Path:
        return self.files.folder / PENDING_KEY

    def on_renewed(self, callback: Renewed) -> None:
        self._renewed.append(callback)

    # -- renewal

    def prepare_renewal(self) -> bytes:
        """A new pending key (replacing any) and a CSR for it (PEM)."""
        key = new_key()
        with self._renewal:
            write_private(self.pending_key_path, key_pem(key))
        return signing_request(key, f"host {self.host_id}")

    def install(self, cert_pem: bytes) -> None:
        """Installs the CA's certificate for the pending key; raises
        FailedPrecondition without one, InvalidArgument for a wrong one."""
        with self._renewal:
            key = self._pending_key()
            cert = self._valid_certificate(cert_pem, key)
            pair = KeyPair(ca=self.pair.ca, cert=cert_pem, key=key_pem(key))
            write_public(self.files.cert, pair.cert)
            write_private(self.files.key, pair.key)
            self.pending_key_path.unlink(missing_ok=True)
            self.serving.replace(pair)
        log.info(
            "certificate renewed: serial %x, valid until %s",
            cert.serial_number,
            cert.not_valid_after_utc.isoformat(),
        )
        for callback in self._renewed:
            callback(pair)

    def _pending_key(self) -> PrivateKey:
        try:
            return load_key(self.pending_key_path.read_bytes())
        except FileNotFoundError:
            raise FailedPrecondition("no renewal is pending: call PrepareRenewal first") from None
        except ValueError as exc:
            raise FailedPrecondition(f"the pending key is unusable ({exc}): prepare again") from exc

    def _valid_certificate(self, cert_pem: bytes, key: PrivateKey) -> x509.Certificate:
        field = "certificate_pem"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise InvalidArgument(field, "not a PEM certificate") from exc
        if not signed_by(cert, self._ca):
            raise InvalidArgument(field, "not signed by this host's CA")
        if not same_key(cert, key):
            raise InvalidArgument(field, "not a certificate for the pending key")
        named = host_id_of(cert_pem)
        if named != self.host_id:
            raise InvalidArgument(
                field, f"names {'host ' + named if named else 'no host'}, not host {self.host_id}"
            )
        if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
            raise InvalidArgument(field, "expired already")
        return cert

    # -- revocations

    def set_revocation_list(self, crl_pem: bytes) -> bool:
        """Takes the CA's CRL; one older than the CRL held is ignored.
        InvalidArgument unless the CA signed it. Returns whether it changed."""
        try:
            changed = self.revocations.load(crl_pem)
        except InvalidCrl as exc:
            if _older(crl_pem, self._ca, self.revocations.number):
                log.info("revocation list ignored: %s", exc)
                return False
            raise InvalidArgument("revocation_list_pem", str(exc)) from exc
        if changed:
            write_public(self.files.crl, crl_pem)
            log.info("revocation list %d installed", self.revocations.number)
        return changed


def _older(crl_pem: bytes, ca: x509.Certificate, held: int) -> bool:
    """Whether crl_pem is a CRL the CA signed, numbered below held."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        public = ca.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            return False
        return number < held and crl.is_signature_valid(public)
    except (ValueError, x509.ExtensionNotFound):
        return False


def _checked(pair: KeyPair, files: TlsFiles) -> str:
    """The host id of a pair on disk that hangs together; IdentityError otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert)
        ca = x509.load_pem_x509_certificate(pair.ca)
        key = load_key(pair.key)
    except ValueError as exc:
        raise IdentityError(f"the identity in {files.folder} is unreadable: {exc}") from exc
    host_id = host_id_of(pair.cert)
    if host_id is None:
        raise IdentityError(f"{files.cert} is not a host's certificate")
    if not same_key(cert, key):
        raise IdentityError(f"{files.cert} is not the certificate of {files.key}")
    if not signed_by(cert, ca):
        raise IdentityError(f"{files.cert} is not signed by the CA of {files.ca}")
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        log.warning(
            "this host's certificate expired at %s: enroll it again",
            cert.not_valid_after_utc.isoformat(),
        )
    return host_id


def _finish_install(files: TlsFiles) -> None:
    """Completes an install stopped between its certificate and its key."""
    pending = files.folder / PENDING_KEY
    if not pending.is_file():
        return
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        key = load_key(pending.read_bytes())
    except ValueError:
        return
    if same_key(cert, key):
        write_private(files.key, pending.read_bytes())
        pending.unlink()
        log.info("finished installing the renewed certificate")
