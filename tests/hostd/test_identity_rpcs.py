"""HostIdentityService: renewing a host's certificate while it serves, and
its revocation list, as the controller calls them.

A real hostd on libvirt's test driver over mutual TLS (fixture served); the
controller's CA is a TestPki. Which certificate the hostd presents to a new
connection is read from a TLS handshake of the test's own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import host_identity_service_pb2 as idp
from virtplane.v1 import host_identity_service_pb2_grpc as idp_grpc

from hostd.identity import HostIdentity, IdentityError, tls_files
from tests.support import served as serving
from tests.support.connect import hostd_channel, new_identity, renew, served_certificate
from tests.support.hostd_rig import vm_config
from tests.support.pki import TestPki
from virtplane_common.tls.keys import (
    cert_pem,
    key_pem,
    load_key,
    new_key,
    same_key,
    signing_request,
)
from virtplane_common.tls.names import Role

HOUR = dt.timedelta(hours=1)


def _identity(served: serving.Served) -> idp_grpc.HostIdentityServiceAsyncStub:
    return idp_grpc.HostIdentityServiceStub(served.channel)


async def _presented(served: serving.Served) -> x509.Certificate:
    return await asyncio.to_thread(served_certificate, served.address, served.pki, served.host_id)


def _on_disk(served: serving.Served) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        tls_files(served.hostd.config.state_dir).cert.read_bytes()
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def _refused(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code(), caught.value.details() or ""


async def test_a_renewal_reaches_new_connections_and_spares_open_ones(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    files = tls_files(served.hostd.config.state_dir)
    before = await _presented(served)
    assert before.serial_number == _on_disk(served).serial_number
    async with serving.watching(served) as events:
        async with hostd_channel(served.address, served.pki, served.host_id) as channel:
            stub = idp_grpc.HostIdentityServiceStub(channel)
            csr = (await stub.PrepareRenewal(idp.PrepareRenewalRequest())).csr_pem
            pending = files.folder / "pending-key.pem"
            assert _mode(pending) == 0o600
            assert b"PRIVATE KEY" not in csr.encode()
            cert = served.pki.ca.sign(csr.encode(), Role.HOST, served.host_id, HOUR)
            await stub.InstallCertificate(
                idp.InstallCertificateRequest(certificate_pem=cert_pem(cert).decode())
            )
        assert cert.serial_number != before.serial_number
        assert (await _presented(served)).serial_number == cert.serial_number
        # On disk: the new pair, the key private, nothing pending.
        assert _on_disk(served).serial_number == cert.serial_number
        assert same_key(cert, load_key(files.key.read_bytes()))
        assert _mode(files.key) == 0o600
        assert not pending.exists()
        # The watch opened before the renewal goes on, and so does its connection.
        await serving.create_running(served, vm_config(boot_files[0]), events)
    async with hostd_channel(served.address, served.pki, served.host_id) as channel:
        caps = await pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(
            pb.GetHostCapabilitiesRequest()
        )
        assert caps.hypervisor_type == "qemu"
    # A restarted hostd serves the renewed pair.
    restarted = HostIdentity.load(served.hostd.config.state_dir)
    assert restarted.pair.cert == cert_pem(cert)


async def test_a_wrong_certificate_is_refused(served: serving.Served, tmp_path: Path) -> None:
    stub = _identity(served)
    code, details = await _refused(
        stub.InstallCertificate(idp.InstallCertificateRequest(certificate_pem="x"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "PrepareRenewal first" in details
    csr = (await stub.PrepareRenewal(idp.PrepareRenewalRequest())).csr_pem.encode()
    other_key = signing_request(new_key(), "somebody")
    stranger = TestPki(tmp_path / "other", "another CA")
    wrong = {
        "not a PEM certificate": b"-----BEGIN CERTIFICATE-----\nAAAA\n",
        "not a certificate for the pending key": cert_pem(
            served.pki.ca.sign(other_key, Role.HOST, served.host_id, HOUR)
        ),
        "not signed by this host's CA": cert_pem(
            stranger.ca.sign(csr, Role.HOST, served.host_id, HOUR)
        ),
        f"names host other, not host {served.host_id}": cert_pem(
            served.pki.ca.sign(csr, Role.HOST, "other", HOUR)
        ),
        f"names no host, not host {served.host_id}": cert_pem(
            served.pki.ca.sign(csr, Role.CONTROLLER, "", HOUR)
        ),
    }
    before = await _presented(served)
    for problem, pem in wrong.items():
        request = idp.InstallCertificateRequest(certificate_pem=pem.decode())
        code, details = await _refused(stub.InstallCertificate(request))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"certificate_pem: {problem}")
    assert (await _presented(served)).serial_number == before.serial_number
    assert _on_disk(served).serial_number == before.serial_number
    # The pending key is still there: the right certificate is taken.
    right = served.pki.ca.sign(csr, Role.HOST, served.host_id, HOUR)
    await stub.InstallCertificate(
        idp.InstallCertificateRequest(certificate_pem=cert_pem(right).decode())
    )
    assert (await _presented(served)).serial_number == right.serial_number


async def test_renewals_follow_one_another(served: serving.Served) -> None:
    serials = set()
    async with hostd_channel(served.address, served.pki, served.host_id) as channel:
        for _ in range(3):
            cert = await renew(channel, served.pki, served.host_id)
            serials.add(cert.serial_number)
            assert (await _presented(served)).serial_number == cert.serial_number
    assert len(serials) == 3


async def test_the_revocation_list_is_kept_and_an_older_one_ignored(
    served: serving.Served, tmp_path: Path
) -> None:
    stub = _identity(served)
    files = tls_files(served.hostd.config.state_dir)
    first = served.pki.crl(1)  # revokes nothing
    doomed = served.pki.pair(Role.CONTROLLER)
    served.pki.revoke(doomed)
    second = served.pki.crl(2)
    await stub.SetRevocationList(idp.SetRevocationListRequest(revocation_list_pem=second.decode()))
    assert files.crl.read_bytes() == second
    await stub.SetRevocationList(idp.SetRevocationListRequest(revocation_list_pem=first.decode()))
    assert files.crl.read_bytes() == second, "the older list is ignored"
    serial = x509.load_pem_x509_certificate(doomed.cert).serial_number
    async with hostd_channel(served.address, served.pki, served.host_id, doomed) as channel:
        code, details = await _refused(
            pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(
                pb.GetHostCapabilitiesRequest()
            )
        )
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
    # Another CA's list, or none at all, is refused.
    stranger = TestPki(tmp_path / "other", "another CA").crl(9).decode()
    for pem in (stranger, "not a list"):
        request = idp.SetRevocationListRequest(revocation_list_pem=pem)
        code, details = await _refused(stub.SetRevocationList(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("revocation_list_pem: ")
    assert files.crl.read_bytes() == second
    # A restarted hostd holds it still.
    assert HostIdentity.load(served.hostd.config.state_dir).revocations.revoked(serial)


def test_an_install_stopped_halfway_is_finished_at_the_next_start(tmp_path: Path) -> None:
    pki = new_identity(tmp_path / "state")
    identity = HostIdentity.load(tmp_path / "state")
    csr = identity.prepare_renewal()
    renewed = pki.ca.sign(csr, Role.HOST, identity.host_id, HOUR)
    files = identity.files
    files.cert.write_bytes(cert_pem(renewed))  # the certificate written, not yet the key
    restarted = HostIdentity.load(tmp_path / "state")
    assert restarted.pair.cert == cert_pem(renewed)
    assert same_key(renewed, load_key(files.key.read_bytes()))
    assert not identity.pending_key_path.exists()


def test_an_identity_that_does_not_hang_together_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="hostd has no identity: start it once with"):
        HostIdentity.load(tmp_path / "nothing")
    pki = new_identity(tmp_path / "state")
    files = tls_files(tmp_path / "state")
    files.key.write_bytes(key_pem(new_key()))
    with pytest.raises(IdentityError, match=r"cert.pem is not the certificate of .*key.pem"):
        HostIdentity.load(tmp_path / "state")
    pki.pair(Role.CONTROLLER).write(files)
    with pytest.raises(IdentityError, match="is not a host's certificate"):
        HostIdentity.load(tmp_path / "state")
