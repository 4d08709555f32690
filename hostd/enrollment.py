"""Enrollment: how hostd gets its identity from the controller, once.

Started with --controller, --controller-ca and a one-time token
(--enroll-token-file, or VIRTPLANE_ENROLL_TOKEN), hostd takes its key (the
``tls/key.pem`` it has, else a new one, written 0600 before anything is
sent: the key never leaves the host), sends a CSR for it with the token to
the controller's EnrollmentService.EnrollHost over TLS trusting the
controller's CA, and writes what comes back into ``tls/``: the CA, its
certificate and the CRL. Reusing the key lets the controller recognise a
host enrolled already under another name (it refuses, naming it).

The controller's refusals (an unknown, used or expired token; a host
enrolled already) end hostd's start with the controller's own words.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from cryptography import x509
from virtplane.v1 import enrollment_service_pb2 as api
from virtplane.v1 import enrollment_service_pb2_grpc as api_grpc

from hostd.config import EnrollmentConfig
from hostd.identity import PENDING_KEY, IdentityError, host_id_of, signed_by, tls_files
from virtplane_common.grpc_limits import MESSAGE_SIZE_OPTIONS
from virtplane_common.tls.credentials import channel_credentials
from virtplane_common.tls.files import TlsFiles, write_private, write_public
from virtplane_common.tls.keys import (
    PrivateKey,
    key_pem,
    load_key,
    new_key,
    same_key,
    signing_request,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "VIRTPLANE_ENROLL_TOKEN"


class EnrollmentFailed(IdentityError):
    """The controller refused to enroll this host, or could not be reached."""


def read_token(path: Path | None, environ: dict[str, str]) -> str:
    """The enrollment token from the file (first line) or the environment."""
    if path is not None:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise EnrollmentFailed(f"cannot read the enrollment token file {path}: {exc}") from exc
    return environ.get(TOKEN_ENV, "").strip()


def _host_key(files: TlsFiles) -> PrivateKey:
    """The host's key: the one it has, else a new one written now (0600)."""
    if files.key.is_file():
        try:
            return load_key(files.key.read_bytes())
        except ValueError as exc:
            raise EnrollmentFailed(f"{files.key} is not a usable key: {exc}") from exc
    key = new_key()
    write_private(files.key, key_pem(key))
    return key


def _controller_ca(settings: EnrollmentConfig) -> bytes:
    if not settings.controller or settings.controller_ca is None:
        raise EnrollmentFailed(
            "enrolling needs --controller (the controller's host:port) and --controller-ca"
            " (its CA certificate)"
        )
    try:
        return settings.controller_ca.read_bytes()
    except OSError as exc:
        raise EnrollmentFailed(f"cannot read --controller-ca: {exc}") from exc


async def _ask(settings: EnrollmentConfig, ca: bytes, csr: bytes) -> api.EnrollHostResponse:
    request = api.EnrollHostRequest(token=settings.token, csr_pem=csr.decode())
    address = settings.controller
    async with grpc.aio.secure_channel(
        address, channel_credentials(ca), options=MESSAGE_SIZE_OPTIONS
    ) as channel:
        stub = api_grpc.EnrollmentServiceStub(channel)
        try:
            return await stub.EnrollHost(request, timeout=settings.timeout_seconds)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise EnrollmentFailed(
                    f"the controller at {address} cannot be reached ({code.name}: {details})"
                ) from exc
            raise EnrollmentFailed(
                f"the controller at {address} refused to enroll this host: {details} ({code.name})"
            ) from exc


def _checked(reply: api.EnrollHostResponse, key: PrivateKey) -> tuple[bytes, bytes]:
    """The certificate and CA of the reply, once they hang together."""
    cert_pem, ca_pem = reply.certificate_pem.encode(), reply.ca_certificate_pem.encode()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as exc:
        raise EnrollmentFailed(f"the controller's answer holds no certificate: {exc}") from exc
    if not same_key(cert, key):
        raise EnrollmentFailed("the controller certified another key than this host's")
    if not signed_by(cert, ca):
        raise EnrollmentFailed("the controller's certificate for this host is not its CA's")
    if host_id_of(cert_pem) != reply.host_id:
        raise EnrollmentFailed(f"the certificate does not name host {reply.host_id}")
    return cert_pem, ca_pem


async def enroll(state_dir: Path, settings: EnrollmentConfig) -> str:
    """Enrolls this host with the controller; returns its host id."""
    files = tls_files(state_dir)
    ca = _controller_ca(settings)
    key = _host_key(files)
    reply = await _ask(settings, ca, signing_request(key, "virtplane host"))
    cert_pem, ca_pem = _checked(reply, key)
    write_public(files.ca, ca_pem)
    write_public(files.cert, cert_pem)
    if reply.revocation_list_pem:
        write_public(files.crl, reply.revocation_list_pem.encode())
    else:
        files.crl.unlink(missing_ok=True)
    (files.folder / PENDING_KEY).unlink(missing_ok=True)
    log.info(
        "enrolled as host %r (%s) with the controller at %s",
        reply.host_name,
        reply.host_id,
        settings.controller,
    )
    return reply.host_id
