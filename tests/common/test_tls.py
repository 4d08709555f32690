"""virtplane_common.tls and controller.pki: the CA, identities in certificates,
CRLs, files, and real TLS handshakes through gRPC with them."""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller.pki.ca import CertificateAuthority, InvalidRequest
from controller.pki.store import PkiSettings, controller_pair, due, open_ca
from tests.support.pki import TestPki
from virtplane_common.tls.credentials import ServingCertificate, channel_credentials, host_options
from virtplane_common.tls.files import KeyPair, TlsFiles
from virtplane_common.tls.keys import load_key, new_key, same_key, signing_request
from virtplane_common.tls.names import Identity, Role, identity_of, parse_uri, peer_identity
from virtplane_common.tls.revocation import InvalidCrl, Revocations


def _identity(pem: bytes) -> Identity | None:
    return identity_of(x509.load_pem_x509_certificate(pem))


def test_identities_named_once(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    assert _identity(pki.pair(Role.CONTROLLER).cert) is not None
    host = _identity(pki.pair(Role.HOST, "5f0c").cert)
    assert host is not None and (host.role, host.name) == (Role.HOST, "5f0c")
    user = _identity(pki.pair(Role.USER, "alice").cert)
    assert user is not None and str(user) == "user alice"
    assert parse_uri("urn:virtplane:controller:x") is None
    assert parse_uri("urn:virtplane:root:x") is None
    assert parse_uri("urn:virtplane:host:") is None
    with pytest.raises(ValueError):
        pki.pair(Role.HOST, "")


def test_csr_gives_only_its_key(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    key = new_key()
    cert = pki.ca.sign(
        signing_request(key, "i am the controller"), Role.HOST, "h1", dt.timedelta(hours=1)
    )
    assert same_key(cert, key)
    named = identity_of(cert)
    assert named is not None and (named.role, named.name) == (Role.HOST, "h1")
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert dns.get_values_for_type(x509.DNSName) == ["h1.hosts.virtplane"]
    with pytest.raises(InvalidRequest):
        pki.ca.sign(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", Role.HOST, "h1", dt.timedelta(1)
        )


def test_lifetime_never_passes_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("short", dt.timedelta(hours=1))
    pair = ca.issue(Role.HOST, "h1", dt.timedelta(days=400))
    cert = x509.load_pem_x509_certificate(pair.cert)
    assert cert.not_valid_after_utc <= ca.cert.not_valid_after_utc


def test_ca_made_once_with_a_private_key(tmp_path: Path) -> None:
    settings = PkiSettings(folder=tmp_path / "pki")
    first = open_ca(settings)
    assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
    assert open_ca(settings).cert_pem == first.cert_pem
    pair = controller_pair(first, settings)
    assert stat.S_IMODE(settings.controller_files.key.stat().st_mode) == 0o600
    assert controller_pair(first, settings) == pair
    renamed = PkiSettings(folder=settings.folder, server_names=("ctl.example", "10.0.0.5"))
    assert controller_pair(first, renamed).cert != pair.cert


def test_brought_ca(tmp_path: Path) -> None:
    theirs = CertificateAuthority.create("their CA", dt.timedelta(days=10))
    (tmp_path / "c.pem").write_bytes(theirs.cert_pem)
    (tmp_path / "c.key").write_bytes(theirs.key_pem)
    settings = PkiSettings(tmp_path / "pki", ca_cert=tmp_path / "c.pem", ca_key=tmp_path / "c.key")
    assert open_ca(settings).cert_pem == theirs.cert_pem
    assert not (tmp_path / "pki" / "ca.key").exists()
    with pytest.raises(ValueError, match="both"):
        open_ca(PkiSettings(tmp_path / "pki", ca_cert=tmp_path / "c.pem"))
    leaf = theirs.issue(Role.USER, "bob", dt.timedelta(hours=1))
    (tmp_path / "leaf.pem").write_bytes(leaf.cert)
    (tmp_path / "leaf.key").write_bytes(leaf.key)
    with pytest.raises(ValueError, match="not a CA"):
        open_ca(
            PkiSettings(tmp_path / "p", ca_cert=tmp_path / "leaf.pem", ca_key=tmp_path / "leaf.key")
        )


def test_due_after_two_thirds() -> None:
    ca = CertificateAuthority.create("t", dt.timedelta(days=10))
    cert = x509.load_pem_x509_certificate(ca.issue(Role.HOST, "h", dt.timedelta(hours=3)).cert)
    start = cert.not_valid_before_utc
    span = cert.not_valid_after_utc - start
    assert not due(cert, start + span * 0.6)
    assert due(cert, start + span * 0.7)


def test_revocations(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    pair = pki.pair(Role.HOST, "h1")
    serial = x509.load_pem_x509_certificate(pair.cert).serial_number
    held = Revocations(pki.ca_pem)
    assert held.load(pki.crl(1))
    assert not held.revoked(serial)
    pki.revoke(pair)
    assert held.load(pki.crl(2))
    assert held.revoked(serial)
    with pytest.raises(InvalidCrl, match="older"):
        held.load(pki.crl(1))
    with pytest.raises(InvalidCrl, match="not signed"):
        held.load(TestPki(tmp_path / "other").crl(5))
    with pytest.raises(InvalidCrl, match="PEM"):
        held.load(b"garbage")


def test_files_written_private(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    files = pki.files("h1", pki.pair(Role.HOST, "h1"))
    assert files.complete()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.cert.stat().st_mode) == 0o644
    pair = KeyPair.read(files)
    assert same_key(x509.load_pem_x509_certificate(pair.cert), load_key(pair.key))
    assert not TlsFiles(tmp_path / "none").complete()


async def _serve(
    serving: ServingCertificate, require: bool
) -> tuple[grpc.aio.Server, int, list[Identity | None]]:
    seen: list[Identity | None] = []

    class Recording(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
        async def Check(self, request, context):  # noqa: N802
            seen.append(peer_identity(context.auth_context()))
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Recording(), server)
    port = server.add_secure_port("127.0.0.1:0", serving.credentials(require_client_auth=require))
    await server.start()
    return server, port, seen


async def _check(port: int, creds: grpc.ChannelCredentials, host_id: str) -> grpc.StatusCode:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=host_options(host_id)
    ) as ch:
        try:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_mutual_tls_names_and_renewal(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    serving = ServingCertificate(pki.pair(Role.HOST, "h1"))
    server, port, seen = await _serve(serving, require=True)
    try:
        controller = channel_credentials(pki.ca_pem, pki.pair(Role.CONTROLLER))
        assert await _check(port, controller, "h1") is grpc.StatusCode.OK
        assert seen[-1] is not None and seen[-1].role is Role.CONTROLLER
        # Another host's name: TLS refuses the handshake itself.
        assert await _check(port, controller, "h2") is grpc.StatusCode.UNAVAILABLE
        # No client certificate, or one from another CA: refused.
        assert (
            await _check(port, channel_credentials(pki.ca_pem), "h1") is grpc.StatusCode.UNAVAILABLE
        )
        stranger = TestPki(tmp_path / "x").pair(Role.CONTROLLER)
        assert (
            await _check(port, channel_credentials(pki.ca_pem, stranger), "h1")
            is grpc.StatusCode.UNAVAILABLE
        )
        # An expired client certificate: refused.
        expired = CertificateAuthority.load(pki.ca.cert_pem, pki.ca.key_pem).issue(
            Role.CONTROLLER, "", dt.timedelta(seconds=-1)
        )
        assert (
            await _check(port, channel_credentials(pki.ca_pem, expired), "h1")
            is grpc.StatusCode.UNAVAILABLE
        )
        # Renewed while serving: a new connection gets the new certificate.
        serving.replace(pki.pair(Role.HOST, "h9"))
        assert await _check(port, controller, "h9") is grpc.StatusCode.OK
        assert await _check(port, controller, "h1") is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_server_only_tls_sees_no_peer(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    server, port, seen = await _serve(ServingCertificate(pki.pair(Role.CONTROLLER)), require=False)
    try:
        creds = channel_credentials(pki.ca_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
            await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert seen == [None]
        # A plaintext client cannot talk to a TLS port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
    await asyncio.sleep(0)
