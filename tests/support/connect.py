"""A test hostd's identity, and channels to it over mutual TLS as the
controller dials it.

A hostd in the tests has an identity written by TestPki (give_identity) or
got by enrollment; a test reaches it with a controller-role certificate from
the same TestPki, and TLS accepts only the hostd whose certificate names
host_id (host_options).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import uuid
import weakref
from pathlib import Path

import grpc
from cryptography import x509
from virtplane.v1 import host_identity_service_pb2 as idp
from virtplane.v1 import host_identity_service_pb2_grpc as idp_grpc

from hostd.identity import tls_files
from tests.support.pki import TestPki
from virtplane_common.tls.credentials import channel_credentials, host_options
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.keys import cert_pem
from virtplane_common.tls.names import Role, host_dns_name

TEST_HOST_ID = "host-under-test"
"""The host id of a test hostd given its identity by TestPki."""


def give_identity(pki: TestPki, state_dir: Path, host_id: str = TEST_HOST_ID) -> KeyPair:
    """Writes a host pair of pki for host_id into state_dir/tls, as enrollment
    would; a hostd started on state_dir serves mutual TLS with it."""
    pair = pki.pair(Role.HOST, host_id)
    pair.write(tls_files(state_dir))
    return pair


def new_identity(state_dir: Path, host_id: str = TEST_HOST_ID) -> TestPki:
    """A new TestPki (beside state_dir) and a host identity of it in state_dir."""
    pki = TestPki(state_dir.parent / f"{state_dir.name}-pki")
    give_identity(pki, state_dir, host_id)
    return pki


_CONTROLLERS: weakref.WeakKeyDictionary[TestPki, KeyPair] = weakref.WeakKeyDictionary()


def controller_pair(pki: TestPki) -> KeyPair:
    """A controller's pair from pki (made once per TestPki)."""
    pair = _CONTROLLERS.get(pki)
    if pair is None:
        pair = _CONTROLLERS[pki] = pki.pair(Role.CONTROLLER)
    return pair


def hostd_channel(
    address: str, pki: TestPki, host_id: str, pair: KeyPair | None = None
) -> grpc.aio.Channel:
    """An aio channel to the hostd at address that names host_id, presenting
    pair (by default a controller's)."""
    pair = pair or controller_pair(pki)
    return grpc.aio.secure_channel(
        address, channel_credentials(pki.ca_pem, pair), options=host_options(host_id)
    )


def hostd_sync_channel(
    address: str, pki: TestPki, host_id: str, pair: KeyPair | None = None
) -> grpc.Channel:
    """hostd_channel, blocking (for readiness waits outside an event loop)."""
    pair = pair or controller_pair(pki)
    return grpc.secure_channel(
        address, channel_credentials(pki.ca_pem, pair), options=host_options(host_id)
    )


async def renew(
    channel: grpc.aio.Channel,
    pki: TestPki,
    host_id: str,
    lifetime: dt.timedelta = dt.timedelta(hours=1),
) -> x509.Certificate:
    """What the controller does to renew a host's certificate, over channel
    (a controller's): PrepareRenewal, sign with pki's CA, InstallCertificate."""
    stub = idp_grpc.HostIdentityServiceStub(channel)
    csr = (await stub.PrepareRenewal(idp.PrepareRenewalRequest())).csr_pem
    cert = pki.ca.sign(csr.encode(), Role.HOST, host_id, lifetime)
    request = idp.InstallCertificateRequest(certificate_pem=cert_pem(cert).decode())
    await stub.InstallCertificate(request)
    return cert


def served_certificate(address: str, pki: TestPki, host_id: str) -> x509.Certificate:
    """The certificate a hostd presents to a new connection now (a TLS
    handshake of its own, as a controller; blocking: call it in a thread)."""
    files = pki.files(f"probe-{uuid.uuid4().hex[:8]}", controller_pair(pki))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=pki.ca_pem.decode())
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    host, _, port = address.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host_dns_name(host_id)) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
