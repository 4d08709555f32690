"""Client certificates on the controller's mutual-TLS port: a user
certificate the CA issued names its principal; one from another CA, an
expired, a revoked one, a host's, and one of an unknown user are refused."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from cryptography import x509
from virtplane.v1 import principal_service_pb2 as pr

from tests.support.auth_rig import (
    LONG_AGO,
    AuthRig,
    auth,
    csr_for,
    details_of,
    status_of,
)
from tests.support.pki import TestPki
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import Role

__all__ = ["auth"]  # the fixture

LIST_VMS = "/virtplane.v1.VmService/ListVms"


async def issued(auth: AuthRig, name: str, role: pr.Role.ValueType) -> KeyPair:
    """A key pair for principal name (made now, with role), its certificate
    issued through PrincipalService from a CSR."""
    admin = auth.principals()
    await admin.CreatePrincipal(
        pr.CreatePrincipalRequest(name=name, kind=pr.PRINCIPAL_KIND_SERVICE_ACCOUNT, role=role)
    )
    key, csr = csr_for(name)
    answer = await admin.IssueClientCertificate(
        pr.IssueClientCertificateRequest(principal=name, csr_pem=csr.decode())
    )
    assert answer.ca_pem.encode() == auth.pki.ca_pem
    return KeyPair(ca=answer.ca_pem.encode(), cert=answer.certificate_pem.encode(), key=key)


async def test_a_user_certificate_names_its_principal(auth: AuthRig) -> None:
    pair = await issued(auth, "robot", pr.ROLE_OPERATOR)
    channel = auth.cert_channel(pair)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.OK
    code, details = await details_of(channel, "/virtplane.v1.HostService/ConfirmHostDown")
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "'robot'" in details and "'fencing'" in details


async def test_a_revoked_certificate_is_refused(auth: AuthRig) -> None:
    pair = await issued(auth, "robot", pr.ROLE_VIEWER)
    auth.revoked.add(x509.load_pem_x509_certificate(pair.cert).serial_number)
    channel = auth.cert_channel(pair)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_certificate_of_another_ca_is_refused(auth: AuthRig, tmp_path: Path) -> None:
    await issued(auth, "robot", pr.ROLE_ADMIN)
    other = TestPki(tmp_path / "other", "another CA").pair(Role.USER, "robot")
    channel = auth.cert_channel(other, ca=auth.pki.ca_pem)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_certificate_is_refused(auth: AuthRig) -> None:
    await issued(auth, "robot", pr.ROLE_ADMIN)
    expired = auth.pki.pair(Role.USER, "robot", lifetime=LONG_AGO)
    channel = auth.cert_channel(expired)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("role", "name"), [(Role.HOST, "h1"), (Role.USER, "nobody")])
async def test_a_certificate_naming_no_principal_is_refused(
    auth: AuthRig, role: Role, name: str
) -> None:
    channel = auth.cert_channel(auth.pki.pair(role, name))
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_deleted_principal_is_refused_at_once(auth: AuthRig) -> None:
    pair = await issued(auth, "robot", pr.ROLE_VIEWER)
    channel = auth.cert_channel(pair)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.OK
    await auth.principals().DeletePrincipal(pr.DeletePrincipalRequest(name="robot"))
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bad_csr_is_invalid_argument(auth: AuthRig) -> None:
    admin = auth.principals()
    request = pr.IssueClientCertificateRequest(principal="admin", csr_pem="not a CSR")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.IssueClientCertificate(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
