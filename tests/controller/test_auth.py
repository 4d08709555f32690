"""Authentication and roles on a controller serving TLS with require_auth:
every service refuses a call without credentials, each role is refused
what it lacks, tokens expire and are revoked, client certificates work only
when the CA signed them for a known user, unexpired and not revoked."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from virtplane.v1 import operation_service_pb2 as op
from virtplane.v1 import operation_service_pb2_grpc as op_grpc
from virtplane.v1 import principal_service_pb2 as pr
from virtplane.v1 import vm_service_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller.auth.permissions import METHODS, Permission, Role, allows
from tests.support.auth_rig import (
    AuthRig,
    auth,
    controller_methods,
    details_of,
    status_of,
    unary,
)
from tests.support.controller_rig import boot_source, spec

__all__ = ["auth"]  # the fixture

LIST_VMS = "/virtplane.v1.VmService/ListVms"
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_without_credentials_every_method_is_unauthenticated(auth: AuthRig) -> None:
    channel = auth.channel()
    for method, streaming in controller_methods():
        if METHODS[method] is Permission.OPEN:
            continue
        assert await status_of(channel, method, streaming) == grpc.StatusCode.UNAUTHENTICATED, (
            method
        )


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
async def test_a_role_is_refused_what_it_lacks(auth: AuthRig, role: Role) -> None:
    channel = auth.channel(await auth.token_of("someone", role.value))
    for method, streaming in controller_methods():
        permission = METHODS[method]
        if permission is Permission.OPEN or allows(role, permission):
            continue
        code, details = await details_of(channel, method, streaming)
        assert code == grpc.StatusCode.PERMISSION_DENIED, method
        assert repr(permission.value) in details and "someone" in details


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN])
async def test_a_role_is_let_through_to_what_it_may_do(auth: AuthRig, role: Role) -> None:
    channel = auth.channel(await auth.token_of("someone", role.value))
    for method, streaming in controller_methods():
        permission = METHODS[method]
        if streaming or permission is Permission.OPEN or not allows(role, permission):
            continue
        code = await status_of(channel, method, streaming)
        assert code not in (*REFUSED, grpc.StatusCode.INTERNAL), (method, code)


async def test_a_viewer_watches(auth: AuthRig) -> None:
    channel = auth.channel(await auth.token_of("watcher", "viewer"))
    code = await status_of(channel, "/virtplane.v1.VmService/WatchVms", True)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_health_stays_open(auth: AuthRig) -> None:
    health = health_pb2_grpc.HealthStub(auth.channel())
    answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_an_expired_token_is_refused(auth: AuthRig) -> None:
    channel = auth.channel(await auth.token_of("brief", "viewer", ttl_seconds=1))
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.OK
    await asyncio.sleep(1.2)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_revoked_token_is_refused_at_once(auth: AuthRig) -> None:
    token = await auth.token_of("gone", "operator")
    channel = auth.channel(token)
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.OK  # now cached
    admin = auth.principals()
    listed = await admin.ListTokens(pr.ListTokensRequest(principal="gone"))
    assert [t.revoked for t in listed.tokens] == [False]
    await admin.RevokeToken(pr.RevokeTokenRequest(id=listed.tokens[0].id))
    assert await status_of(channel, LIST_VMS, False) == grpc.StatusCode.UNAUTHENTICATED
    listed = await admin.ListTokens(pr.ListTokensRequest(principal="gone"))
    assert [t.revoked for t in listed.tokens] == [True]


async def test_an_unknown_token_and_a_wrong_scheme_are_refused(auth: AuthRig) -> None:
    assert await status_of(auth.channel("vp_nonsense"), LIST_VMS, False) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    wrong = auth.channel()
    try:
        await unary(wrong, LIST_VMS)(b"", metadata=(("authorization", "Basic x"),))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        pytest.fail("a Basic credential was accepted")


async def test_a_plaintext_client_is_refused(auth: AuthRig) -> None:
    async with grpc.aio.insecure_channel(auth.tls) as plain:
        try:
            await unary(plain, LIST_VMS)(b"", timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() != grpc.StatusCode.OK
        else:
            pytest.fail("a plaintext call was answered")


async def test_the_audit_log_names_the_principal(auth: AuthRig, tmp_path: Path) -> None:
    token = await auth.token_of("ops", "operator")
    vms = vm_grpc.VmServiceStub(auth.channel(token))
    await vms.CreateVm(vm_service_pb2.CreateVmRequest(name="web", spec=spec(boot_source(tmp_path))))
    ops = op_grpc.OperationServiceStub(auth.channel(auth.admin_token))
    events = (await ops.ListEvents(op.ListEventsRequest())).events
    made = [e for e in events if e.message.startswith("CreateVm")]
    assert [e.principal for e in made] == ["ops"]
    created = [e for e in events if e.message.startswith("CreatePrincipal")]
    assert created and all(e.principal == "admin" for e in created)


async def test_the_bootstrap_token_file(auth: AuthRig) -> None:
    path = auth.state_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = await auth.principals().ListPrincipals(pr.ListPrincipalsRequest())
    assert [(p.name, p.role) for p in listed.principals] == [("admin", pr.ROLE_ADMIN)]


async def test_tokens_never_reach_the_log_or_errors(
    auth: AuthRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = await auth.token_of("quiet", "viewer")
    bad = good[:-4] + "AAAA"
    code, details = await details_of(auth.channel(bad), LIST_VMS)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert bad not in details and good[3:12] not in details
    assert await status_of(auth.channel(good), LIST_VMS, False) == grpc.StatusCode.OK
    denied = await details_of(auth.channel(good), "/virtplane.v1.HostService/AddHost")
    assert good not in denied[1]
    for secret in (good, bad, auth.admin_token):
        assert secret not in caplog.text


async def test_a_principal_is_told_who_it_is(auth: AuthRig) -> None:
    token = await auth.token_of("looker", "viewer")
    got = await auth.principals(token).GetCurrentPrincipal(pr.GetCurrentPrincipalRequest())
    assert (got.principal.name, got.principal.role) == ("looker", pr.ROLE_VIEWER)
    assert got.authentication_required
