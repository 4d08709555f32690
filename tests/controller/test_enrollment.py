"""Host enrollment on a controller serving TLS with authentication on: a
one-time token (stored hashed) buys one certificate naming the host's id
for a key the host made; a key enrolled once cannot be enrolled as another
host; RemoveHost revokes the certificate (the CRL lists it, the controller
refuses it). Renewal and the CRL push run against IdentityDouble, a small
HostIdentityService that keeps keys and takes certificates (it signs
nothing); against a live hostd they run in the end-to-end tests."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from sqlalchemy import select, text
from virtplane.v1 import enrollment_service_pb2 as en
from virtplane.v1 import enrollment_service_pb2_grpc as en_grpc
from virtplane.v1 import host_agent_service_pb2 as agent
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import host_identity_service_pb2 as hid
from virtplane.v1 import host_identity_service_pb2_grpc as hid_grpc
from virtplane.v1 import host_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc

from controller.config import ControllerConfig
from controller.enrollment.errors import TOKEN_REFUSED
from controller.enrollment.wiring import HostIdentity
from controller.host_client import HostClient
from db import migrate
from db.models import EnrollmentToken, Host
from db.session import Database
from tests.support.auth_rig import AuthRig, auth, csr_for
from tests.support.controller_rig import error
from virtplane_client.cli.hosts import TOKEN_FILE
from virtplane_client.cli.main import parser, run_command
from virtplane_common.tls.credentials import ServingCertificate
from virtplane_common.tls.keys import (
    PrivateKey,
    cert_pem,
    key_pem,
    new_key,
    same_key,
    signing_request,
)
from virtplane_common.tls.names import Role, host_dns_name, identity_uri

__all__ = ["auth"]  # the fixture

NOWHERE = "127.0.0.1:9"
"""A hostd address nothing answers on: the host waits to enroll."""


def hosts(rig: AuthRig) -> host_grpc.HostServiceAsyncStub:
    return host_grpc.HostServiceStub(rig.channel(rig.admin_token))


def enrollment(rig: AuthRig, token: str | None = None) -> en_grpc.EnrollmentServiceAsyncStub:
    """EnrollmentService with no credential (hostd's view), or with token."""
    return en_grpc.EnrollmentServiceStub(rig.channel(token))


async def add(rig: AuthRig, name: str, request_id: str = "") -> host_api.AddHostResponse:
    request = host_api.AddHostRequest(name=name, address=NOWHERE, request_id=request_id)
    return await hosts(rig).AddHost(request)


def enroll(rig: AuthRig, token: str, csr: bytes) -> Any:
    request = en.EnrollHostRequest(token=token, csr_pem=csr.decode())
    return enrollment(rig).EnrollHost(request, timeout=10)


async def test_a_token_enrolls_its_host_once_without_a_principal(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    assert added.enrollment_token.startswith("vpe_")
    assert added.host.status.state == host_pb2.Host.STATE_CONNECTING  # nothing answers there yet
    _, csr = csr_for("h1")
    reply = await enroll(auth, added.enrollment_token, csr)
    host_id = added.host.id
    assert (reply.host_id, reply.host_name) == (host_id, "h1")
    cert = x509.load_pem_x509_certificate(reply.certificate_pem.encode())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        identity_uri(Role.HOST, host_id)
    ]
    assert sans.get_values_for_type(x509.DNSName) == [host_dns_name(host_id)]
    assert host_dns_name(host_id) == f"{host_id}.hosts.virtplane"
    assert reply.ca_certificate_pem.encode() == auth.pki.ca_pem
    x509.load_pem_x509_crl(reply.revocation_list_pem.encode())
    # Used: refused, whatever the request.
    code, details = await error(enroll(auth, added.enrollment_token, csr_for("h1")[1]))
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, TOKEN_REFUSED)
    row = await auth.controller.db.run(lambda s: s.get(Host, host_id))
    assert row is not None and row.cert_serial == str(cert.serial_number)
    assert row.enrolled_at is not None
    # Still not reached (nothing serves there): CONNECTING, not NON_RESPONSIVE.
    got = await hosts(auth).GetHost(host_api.GetHostRequest(host=host_id))
    assert got.host.status.state == host_pb2.Host.STATE_CONNECTING


async def test_unknown_and_expired_tokens_get_the_same_refusal(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    _, csr = csr_for("h1")
    assert await error(enroll(auth, "vpe_" + "x" * 43, csr)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        TOKEN_REFUSED,
    )
    assert await error(enroll(auth, "", csr)) == (grpc.StatusCode.UNAUTHENTICATED, TOKEN_REFUSED)
    brief = await enrollment(auth, auth.admin_token).CreateEnrollmentToken(
        en.CreateEnrollmentTokenRequest(host="h1", ttl_seconds=1)
    )
    assert brief.host_id == added.host.id
    await asyncio.sleep(1.2)
    assert await error(enroll(auth, brief.token, csr)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        TOKEN_REFUSED,
    )
    # The first token still works: an expired one changes nothing else.
    await enroll(auth, added.enrollment_token, csr)


async def test_of_two_enrollments_racing_with_one_token_one_wins(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    results = await asyncio.gather(
        *(enroll(auth, added.enrollment_token, csr_for(f"k{i}")[1]) for i in range(3)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 2
    assert {(e.code(), e.details()) for e in lost} == {
        (grpc.StatusCode.UNAUTHENTICATED, TOKEN_REFUSED)
    }


async def test_a_key_enrolled_as_one_host_is_refused_for_another(auth: AuthRig) -> None:
    first, second = await add(auth, "h1"), await add(auth, "h2")
    _, csr = csr_for("same")
    await enroll(auth, first.enrollment_token, csr)
    code, details = await error(enroll(auth, second.enrollment_token, csr))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert details == (f"this host is already enrolled as 'h1' ({first.host.id}); remove it first")
    # The refused token was not spent: with a key of its own, h2 enrolls.
    await enroll(auth, second.enrollment_token, csr_for("other")[1])


async def test_a_bad_request_is_invalid_and_spends_no_token(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    code, details = await error(enroll(auth, added.enrollment_token, b"not a request"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("csr_pem:")
    await enroll(auth, added.enrollment_token, csr_for("h1")[1])


async def test_tokens_for_hosts(auth: AuthRig) -> None:
    admin = enrollment(auth, auth.admin_token)
    code, _ = await error(admin.CreateEnrollmentToken(en.CreateEnrollmentTokenRequest(host="no")))
    assert code == grpc.StatusCode.NOT_FOUND
    added = await add(auth, "h1")
    again = await admin.CreateEnrollmentToken(en.CreateEnrollmentTokenRequest(host="h1"))
    assert again.token != added.enrollment_token
    await enroll(auth, again.token, csr_for("h1")[1])
    code, details = await error(
        admin.CreateEnrollmentToken(en.CreateEnrollmentTokenRequest(host=added.host.id))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "'h1' is enrolled already" in details
    # Enrolled: the host's other token went with the enrollment.
    assert await error(enroll(auth, added.enrollment_token, csr_for("x")[1])) == (
        grpc.StatusCode.UNAUTHENTICATED,
        TOKEN_REFUSED,
    )


async def test_an_operator_may_not_make_enrollment_tokens(auth: AuthRig) -> None:
    await add(auth, "h1")
    operator = enrollment(auth, await auth.token_of("op", "operator"))
    code, details = await error(
        operator.CreateEnrollmentToken(en.CreateEnrollmentTokenRequest(host="h1"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'hosts'" in details


async def test_a_repeated_add_host_returns_no_token(auth: AuthRig) -> None:
    first = await add(auth, "h1", request_id="add-h1")
    again = await add(auth, "h1", request_id="add-h1")
    assert first.enrollment_token and first.HasField("enrollment_token_expires_at")
    assert again.host.id == first.host.id
    assert not again.enrollment_token


async def test_tokens_are_stored_hashed(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    secret = added.enrollment_token
    rows = await auth.controller.db.run(lambda s: s.scalars(select(EnrollmentToken)).all())
    assert [r.digest for r in rows] == [hashlib.sha256(secret.encode()).hexdigest()]

    def dump(session: Any) -> str:
        tables = ("enrollment_tokens", "events", "api_requests", "hosts")
        return repr([session.execute(text(f"SELECT * FROM {t}")).all() for t in tables])

    assert secret not in await auth.controller.db.run(dump)


async def test_remove_host_revokes_its_certificate(auth: AuthRig) -> None:
    added = await add(auth, "h1")
    reply = await enroll(auth, added.enrollment_token, csr_for("h1")[1])
    serial = x509.load_pem_x509_certificate(reply.certificate_pem.encode()).serial_number
    identity = auth.controller.identity
    assert not identity.revocations.revoked(serial)
    await hosts(auth).RemoveHost(host_api.RemoveHostRequest(host="h1"))
    assert identity.revocations.revoked(serial)
    # The CRL a host enrolling now gets lists it, signed by the CA.
    later = await add(auth, "h2")
    crl_pem = (await enroll(auth, later.enrollment_token, csr_for("h2")[1])).revocation_list_pem
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.is_signature_valid(auth.pki.ca.cert.public_key())  # type: ignore[arg-type]
    assert [entry.serial_number for entry in crl] == [serial]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    # The key of a removed host may enroll again, as a new host.
    again = await add(auth, "h1")
    await enroll(auth, again.enrollment_token, csr_for("h1b")[1])


# Renewal and the CRL push, against a stand-in for hostd's HostIdentityService.


class IdentityDouble(hid_grpc.HostIdentityServiceServicer):
    """Keeps a pending key and the certificates installed for it, and the
    revocation lists it was sent; checks what it gets, signs nothing."""

    def __init__(self) -> None:
        self.key: PrivateKey = new_key()
        self.pending: PrivateKey | None = None
        self.installed: list[x509.Certificate] = []
        self.crls: list[bytes] = []
        self.fail_install = False

    def csr(self) -> bytes:
        return signing_request(self.key, "host")

    async def PrepareRenewal(self, request: Any, context: Any) -> hid.PrepareRenewalResponse:  # noqa: N802
        self.pending = new_key()
        return hid.PrepareRenewalResponse(csr_pem=signing_request(self.pending, "host").decode())

    async def InstallCertificate(  # noqa: N802
        self, request: Any, context: Any
    ) -> hid.InstallCertificateResponse:
        cert = x509.load_pem_x509_certificate(request.certificate_pem.encode())
        if self.pending is None or self.fail_install:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no renewal pending")
        assert self.pending is not None
        if not same_key(cert, self.pending):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not for the pending key")
        self.key, self.pending = self.pending, None
        self.installed.append(cert)
        return hid.InstallCertificateResponse()

    async def SetRevocationList(  # noqa: N802
        self, request: Any, context: Any
    ) -> hid.SetRevocationListResponse:
        self.crls.append(request.revocation_list_pem.encode())
        return hid.SetRevocationListResponse()


Connect = Callable[[str], HostClient]
"""The controller's client of the stand-in as a host id (its certificate then names it)."""


@pytest.fixture
async def double(auth: AuthRig) -> AsyncIterator[tuple[IdentityDouble, Connect]]:
    """The stand-in, serving mutual TLS with a host pair of the rig's CA."""
    serving = ServingCertificate(auth.pki.pair(Role.HOST, "double"))
    server = grpc.aio.server()
    servicer = IdentityDouble()
    hid_grpc.add_HostIdentityServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", serving.credentials(require_client_auth=True))
    await server.start()
    tls = auth.controller.tls
    assert tls is not None
    clients: list[HostClient] = []

    def connect(host_id: str) -> HostClient:
        serving.replace(auth.pki.pair(Role.HOST, host_id))
        credentials = tls.host_credentials()
        client = HostClient(
            "h1", f"127.0.0.1:{port}", 10.0, host_id=host_id, credentials=credentials
        )
        clients.append(client)
        return client

    yield servicer, connect
    for client in clients:
        await client.close()
    await server.stop(0)


async def _host_serial(auth: AuthRig, host_id: str) -> str | None:
    row = await auth.controller.db.run(lambda s: s.get(Host, host_id))
    return None if row is None else row.cert_serial


async def test_renewal_installs_and_records_a_new_certificate(
    auth: AuthRig, double: tuple[IdentityDouble, Connect]
) -> None:
    servicer, connect = double
    added = await add(auth, "h1")
    enrolled = await enroll(auth, added.enrollment_token, servicer.csr())
    first = x509.load_pem_x509_certificate(enrolled.certificate_pem.encode()).serial_number
    host_id = added.host.id
    client = connect(host_id)
    cert = await auth.controller.identity.renewal.renew(host_id, client)
    assert servicer.installed == [cert]
    assert await _host_serial(auth, host_id) == str(cert.serial_number)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [host_dns_name(host_id)]
    # A certificate the host did not take is revoked; the record keeps the old one.
    servicer.fail_install = True
    with pytest.raises(Exception, match="no renewal pending"):
        await auth.controller.identity.renewal.renew(host_id, client)
    assert await _host_serial(auth, host_id) == str(cert.serial_number)
    assert not auth.controller.identity.revocations.revoked(cert.serial_number)
    revoked = await auth.controller.db.run(
        lambda s: s.execute(text("SELECT subject FROM revoked_certificates")).scalars().all()
    )
    assert revoked == [f"host h1 ({host_id}), not installed"]
    # Removed: its certificate and the one the renewal replaced are revoked.
    await hosts(auth).RemoveHost(host_api.RemoveHostRequest(host="h1"))
    assert auth.controller.identity.revocations.revoked(cert.serial_number)
    assert auth.controller.identity.revocations.revoked(first)


async def test_the_keeper_pushes_the_crl_and_renews_when_due(
    auth: AuthRig, double: tuple[IdentityDouble, Connect]
) -> None:
    servicer, connect = double
    short = dataclasses.replace(auth.controller.config, host_cert_days=3 / 86400)
    identity = HostIdentity(auth.controller.db, short, auth.pki.ca)
    added = await add(auth, "h1")
    enrolled = await identity.enrollment.enroll(added.enrollment_token, servicer.csr())
    first = x509.load_pem_x509_certificate(enrolled.cert_pem)
    keeping = asyncio.create_task(identity.keep(added.host.id, connect(added.host.id)))
    try:
        for _ in range(100):
            if len(servicer.installed) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
    assert servicer.crls, "no revocation list pushed on connecting"
    assert len(x509.load_pem_x509_crl(servicer.crls[0])) == 0
    assert len(servicer.installed) >= 2, "not renewed twice in 10 s with 3 s certificates"
    assert servicer.installed[0].not_valid_before_utc >= first.not_valid_before_utc
    latest = servicer.installed[-1]
    assert same_key(latest, servicer.key)
    for _ in range(50):  # a renewal cancelled while installing is still recorded
        if await _host_serial(auth, added.host.id) == str(latest.serial_number):
            break
        await asyncio.sleep(0.1)
    assert await _host_serial(auth, added.host.id) == str(latest.serial_number)
    assert cert_pem(latest)


async def test_the_cli_prints_the_token_and_how_to_start_hostd(
    auth: AuthRig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(auth.pki.ca_pem)
    for name, value in (
        ("VIRTPLANE_CONFIG", str(tmp_path / "none.toml")),
        ("VIRTPLANE_ADDRESS", auth.tls),
        ("VIRTPLANE_CA", str(ca)),
        ("VIRTPLANE_TOKEN", auth.admin_token),
    ):
        monkeypatch.setenv(name, value)
    await run_command(parser().parse_args(["host", "add", "h1", NOWHERE]))
    printed = capsys.readouterr().out
    assert "h1" in printed.splitlines()[1]  # the host's table
    start = (
        f"virtplane-hostd --controller {auth.tls} --controller-ca {ca}"
        f" --enroll-token-file {TOKEN_FILE}"
    )
    assert start in printed
    first = next(w for w in printed.split() if w.startswith("vpe_"))
    await run_command(parser().parse_args(["host", "enroll-token", "h1", "--ttl-seconds", "60"]))
    second = next(w for w in capsys.readouterr().out.split() if w.startswith("vpe_"))
    assert second != first
    await enroll(auth, second, csr_for("h1")[1])


class AgentDouble(agent_grpc.HostAgentServiceServicer):
    """The few HostAgentService calls a monitor makes, answered for a host
    with no VMs whose event stream stays open."""

    async def GetHostCapabilities(self, request: Any, context: Any) -> Any:  # noqa: N802
        return agent.GetHostCapabilitiesResponse(
            hostname="double", cpus=2, memory_total_mib=1024, hypervisor_type="qemu"
        )

    async def ListVms(self, request: Any, context: Any) -> Any:  # noqa: N802
        return agent.HostAgentServiceListVmsResponse(host_epoch="e", sequence=0)

    async def WatchEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        await asyncio.Event().wait()
        yield agent.WatchEventsResponse()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_monitor_connecting_pushes_the_crl_and_remove_host_pushes_the_next(
    auth: AuthRig,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    added = await hosts(auth).AddHost(host_api.AddHostRequest(name="h1", address=address))
    identity = IdentityDouble()
    enrolled = await enroll(auth, added.enrollment_token, identity.csr())
    other = await add(auth, "h2")
    reply = await enroll(auth, other.enrollment_token, csr_for("h2")[1])
    h2_serial = x509.load_pem_x509_certificate(reply.certificate_pem.encode()).serial_number
    # hostd starts after enrolling: the monitor reaches it, and sends the CRL.
    server = grpc.aio.server()
    hid_grpc.add_HostIdentityServiceServicer_to_server(identity, server)
    agent_grpc.add_HostAgentServiceServicer_to_server(AgentDouble(), server)  # type: ignore[abstract]
    # It serves mutual TLS with the certificate its enrollment got.
    served = [(key_pem(identity.key), enrolled.certificate_pem.encode())]
    server.add_secure_port(
        address,
        grpc.ssl_server_credentials(
            served, root_certificates=auth.pki.ca_pem, require_client_auth=True
        ),
    )
    await server.start()
    try:
        await asyncio.wait_for(auth.controller.hosts.monitor(added.host.id).connected.wait(), 10)
        for _ in range(50):
            if identity.crls:
                break
            await asyncio.sleep(0.1)
        assert [len(x509.load_pem_x509_crl(pem)) for pem in identity.crls] == [0]
        await hosts(auth).RemoveHost(host_api.RemoveHostRequest(host="h2"))
        latest = x509.load_pem_x509_crl(identity.crls[-1])
        assert [entry.serial_number for entry in latest] == [h2_serial]
    finally:
        await server.stop(0)


def test_the_ca_is_opened_at_start_from_the_state_folder(tmp_path: Path) -> None:
    config = ControllerConfig(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        state_dir=tmp_path,
        require_auth=True,
        host_cert_days=2.0,
    )
    db = Database(config.database_url)
    try:
        migrate.upgrade(db.engine)
        identity = HostIdentity(db, config, None)
        assert (tmp_path / "pki" / "ca.pem").is_file()
        assert stat.S_IMODE((tmp_path / "pki" / "ca.key").stat().st_mode) == 0o600
        again = HostIdentity(db, config, None)  # the next start: the same CA
        assert again.authority.get().cert_pem == identity.authority.get().cert_pem
        assert identity.enrollment.settings.host_cert_lifetime == dt.timedelta(days=2)
    finally:
        db.close()
