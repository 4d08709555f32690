"""The controller's TLS edges: clients -> controller (its own CA, or the
operator's; its certificate renewed while it serves) and controller -> hostd
(mutual TLS that completes only with the host whose certificate names the
expected id). A small gRPC server with a TestPki host pair stands in for
hostd here; hostd's own tests cover its side."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import socket
import ssl
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from virtplane.v1 import host_agent_service_pb2 as agent_pb
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.app import Controller
from controller.auth.principals import ADMIN_TOKEN_FILE
from controller.errors import HostUnreachable
from controller.hosts import HostClients
from controller.main import parse
from controller.pki.ca import CertificateAuthority
from controller.tls import server_names
from tests.support.controller_rig import Rig, boot_source, close_rig, config, open_rig, spec
from tests.support.pki import TestPki
from tests.support.stack import start_hostd
from virtplane_common.tls.credentials import ServingCertificate
from virtplane_common.tls.files import write_private, write_public
from virtplane_common.tls.names import Identity, Role, peer_identity

Context = grpc.aio.ServicerContext[Any, Any]
SHORT = 6 / 86400
"""A lifetime of 6 s: the controller renews its pair after 4 s."""


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/c.db"


@pytest.fixture
async def tls_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    opened = await open_rig(config(_sqlite(tmp_path), state_dir=tmp_path / "state"))
    yield opened
    await close_rig(opened)


def served_serial(address: str, ca: bytes) -> int:
    """The serial of the certificate a new TLS handshake with address gets."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def _code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await vm_grpc.VmServiceStub(channel).ListVms(vm_api.ListVmsRequest(), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_a_plaintext_client_is_refused(tls_rig: Rig) -> None:
    async with grpc.aio.insecure_channel(tls_rig.address) as plain:
        assert await _code(plain) is grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_is_refused(tls_rig: Rig, tmp_path: Path) -> None:
    other = TestPki(tmp_path / "other", "another CA")
    token = tls_rig.credentials.token
    creds = vp.Credentials(ca=other.ca_pem, token=token).channel_credentials()
    async with grpc.aio.secure_channel(tls_rig.address, creds) as channel:
        assert await _code(channel) is grpc.StatusCode.UNAVAILABLE
    async with tls_rig.open_channel() as trusted:
        assert await _code(trusted) is grpc.StatusCode.OK


async def test_tls_means_authentication_unless_turned_off(tls_rig: Rig) -> None:
    ca = tls_rig.credentials.ca
    async with grpc.aio.secure_channel(
        tls_rig.address, vp.Credentials(ca=ca).channel_credentials()
    ) as anonymous:
        assert await _code(anonymous) is grpc.StatusCode.UNAUTHENTICATED


def test_the_ca_key_the_pair_key_and_the_admin_token_are_0600(tls_rig: Rig) -> None:
    state = tls_rig.controller.config.state_dir
    for secret in (
        state / "pki/ca.key",
        state / "pki/controller/key.pem",
        state / ADMIN_TOKEN_FILE,
    ):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert (state / "pki/ca.pem").read_bytes() == tls_rig.controller.tls.ca.cert_pem  # type: ignore[union-attr]


async def test_the_controller_renews_its_certificate_while_it_serves(tmp_path: Path) -> None:
    rig = await open_rig(
        config(_sqlite(tmp_path), state_dir=tmp_path / "state", controller_cert_days=SHORT)
    )
    try:
        ca = rig.controller.tls.ca.cert_pem  # type: ignore[union-attr]
        first = await asyncio.to_thread(served_serial, rig.address, ca)
        stream = rig.vms.WatchVms(vm_api.WatchVmsRequest())  # raw: no reconnection
        changes = aiter(stream)
        assert (await anext(changes)).kind == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE
        for _ in range(100):
            await asyncio.sleep(0.2)
            if await asyncio.to_thread(served_serial, rig.address, ca) != first:
                break
        else:
            raise AssertionError("the certificate was not renewed within 20 s")
        assert rig.controller.tls.serial != first  # type: ignore[union-attr]
        # The stream opened before the renewal still delivers.
        await rig.vms.CreateVm(
            vm_api.CreateVmRequest(name="after", spec=spec(boot_source(tmp_path)))
        )
        change = await asyncio.wait_for(anext(changes), 10)
        assert change.kind == vm_api.WatchVmsResponse.KIND_CHANGED
        assert change.vm.name == "after"
        async with rig.open_channel() as fresh:  # a new handshake, with the new certificate
            assert await _code(fresh) is grpc.StatusCode.OK
        stream.cancel()
    finally:
        await close_rig(rig)


class _FakeAgent:
    """Answers GetHostCapabilities and remembers who asked."""

    def __init__(self) -> None:
        self.callers: list[Identity | None] = []

    async def capabilities(
        self, request: agent_pb.GetHostCapabilitiesRequest, context: Context
    ) -> agent_pb.GetHostCapabilitiesResponse:
        self.callers.append(peer_identity(context.auth_context()))
        return agent_pb.GetHostCapabilitiesResponse()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        method = grpc.unary_unary_rpc_method_handler(
            self.capabilities,
            request_deserializer=agent_pb.GetHostCapabilitiesRequest.FromString,
            response_serializer=agent_pb.GetHostCapabilitiesResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "virtplane.v1.HostAgentService", {"GetHostCapabilities": method}
        )


async def _fake_host(pki: TestPki, host_id: str) -> tuple[grpc.aio.Server, int, _FakeAgent]:
    """A mutual-TLS server presenting a host pair that names host_id."""
    agent = _FakeAgent()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((agent.handler(),))
    serving = ServingCertificate(pki.pair(Role.HOST, host_id))
    port = server.add_secure_port("127.0.0.1:0", serving.credentials(require_client_auth=True))
    await server.start()
    return server, port, agent


async def test_the_controller_talks_only_to_the_host_it_expects(tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    ctl = Controller(config(_sqlite(tmp_path), state_dir=tmp_path / "s"), ca=pki.ca)
    assert ctl.tls is not None
    server, port, agent = await _fake_host(pki, "h-right")
    clients = HostClients(5.0, ctl.tls.host_credentials())
    try:
        right = clients.get("h-right", "right", f"127.0.0.1:{port}")
        await right.capabilities()
        (caller,) = agent.callers
        assert caller is not None and caller.role is Role.CONTROLLER
        impostor = clients.get("h-other", "other", f"127.0.0.1:{port}")
        with pytest.raises(HostUnreachable):
            await impostor.capabilities()
        assert len(agent.callers) == 1
        # After a renewal of the controller's pair: new channels, still verified.
        assert ctl.tls.renew() is False
        clients.renew(ctl.tls.host_credentials())
        await right.capabilities()
        with pytest.raises(HostUnreachable):
            await impostor.capabilities()
    finally:
        await clients.close()
        await server.stop(0)
        ctl.db.close()


async def test_a_host_signed_by_another_ca_is_refused(tmp_path: Path) -> None:
    pki, other = TestPki(tmp_path / "pki"), TestPki(tmp_path / "other", "another CA")
    ctl = Controller(config(_sqlite(tmp_path), state_dir=tmp_path / "s"), ca=pki.ca)
    assert ctl.tls is not None
    server, port, agent = await _fake_host(other, "h1")
    clients = HostClients(5.0, ctl.tls.host_credentials())
    try:
        with pytest.raises(HostUnreachable):
            await clients.get("h1", "h1", f"127.0.0.1:{port}").capabilities()
        assert agent.callers == []
    finally:
        await clients.close()
        await server.stop(0)
        ctl.db.close()


async def test_bring_your_own_ca(tmp_path: Path) -> None:
    own = CertificateAuthority.create("the operator's CA", dt.timedelta(days=9))
    write_public(tmp_path / "own.pem", own.cert_pem)
    write_private(tmp_path / "own.key", own.key_pem)
    state = tmp_path / "state"
    cfg = config(
        _sqlite(tmp_path),
        state_dir=state,
        ca_cert=tmp_path / "own.pem",
        ca_key=tmp_path / "own.key",
    )
    rig = await open_rig(cfg)
    try:
        assert not (state / "pki/ca.key").exists()  # the operator's key is not copied
        assert await asyncio.to_thread(served_serial, rig.address, own.cert_pem)
        async with rig.open_channel() as channel:
            assert await _code(channel) is grpc.StatusCode.OK
    finally:
        await close_rig(rig)


async def test_insecure_development_is_plaintext_and_loud(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, _ = parse(
        ["--insecure-plaintext-dev", "--database", _sqlite(tmp_path), "--listen", "127.0.0.1:0"]
    )
    assert cfg.insecure_plaintext_dev and not cfg.auth_required
    with caplog.at_level(logging.WARNING):
        rig = await open_rig(config(_sqlite(tmp_path), insecure_plaintext_dev=True))
    try:
        assert "INSECURE DEVELOPMENT MODE" in caplog.text
        async with grpc.aio.insecure_channel(rig.address) as plain:
            assert await _code(plain) is grpc.StatusCode.OK
    finally:
        await close_rig(rig)


def test_the_command_line_defaults_to_tls_and_authentication() -> None:
    cfg, _ = parse(["--listen", "10.1.2.3:7000", "--controller-cert-days", "0.5"])
    assert not cfg.insecure_plaintext_dev and cfg.auth_required
    assert cfg.controller_cert_days == 0.5
    off, _ = parse(["--no-require-auth"])
    assert not off.auth_required
    assert server_names(cfg) == ("localhost", "127.0.0.1", "::1", "10.1.2.3")


async def test_the_controller_reaches_a_real_hostd_over_mutual_tls(tmp_path: Path) -> None:
    ctl = Controller(config(_sqlite(tmp_path), state_dir=tmp_path / "s"))
    assert ctl.tls is not None
    pki = TestPki.of(ctl.tls.ca, tmp_path / "pki")
    workdir = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths must fit
    hostd = await asyncio.to_thread(
        start_hostd, workdir, "test:///default", pki=pki, host_id="h-real"
    )
    clients = HostClients(10.0, ctl.tls.host_credentials())
    try:
        caps = await clients.get("h-real", "real", hostd.address).capabilities()
        assert caps.cpus > 0
        with pytest.raises(HostUnreachable):
            await clients.get("h-other", "other", hostd.address).capabilities()
    finally:
        await clients.close()
        hostd.stop()
        ctl.db.close()
        shutil.rmtree(workdir, ignore_errors=True)
