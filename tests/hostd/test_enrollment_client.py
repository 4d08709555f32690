"""hostd's enrollment (hostd.enrollment), as a process: started with the
controller's address, its CA and a one-time token, it gets a certificate
for its own key and serves mutual TLS with it, across restarts.

The controller's side is a test double here (FakeEnrollmentController): a
real gRPC EnrollmentService over TLS that signs with a TestPki's CA and
keeps its tokens in memory; the controller's own implementation is tested
with the controller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from virtplane.v1 import enrollment_service_pb2 as api
from virtplane.v1 import enrollment_service_pb2_grpc as api_grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.identity import NO_IDENTITY, tls_files
from tests.support.connect import hostd_channel
from tests.support.pki import TestPki
from tests.support.stack import BIN, free_port
from tests.support.waiting import TIMEOUT
from virtplane_common.tls.credentials import ServingCertificate
from virtplane_common.tls.keys import cert_pem, load_key, same_key
from virtplane_common.tls.names import Role

HOSTD = BIN / "virtplane-hostd"
LIFETIME = dt.timedelta(days=1)


def _fingerprint(csr: x509.CertificateSigningRequest) -> str:
    der = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass
class FakeEnrollmentController(api_grpc.EnrollmentServiceServicer):
    """A test double of the controller's EnrollmentService: tokens in memory,
    one use each; a key enrolled as one host cannot be enrolled as another."""

    pki: TestPki
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    """token -> (host id, host name)"""
    used: set[str] = field(default_factory=set)
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    """key fingerprint -> (host id, host name)"""

    async def CreateEnrollmentToken(  # noqa: N802
        self, request: api.CreateEnrollmentTokenRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.CreateEnrollmentTokenResponse:
        raise NotImplementedError("the test double's tokens are set by the tests")

    async def EnrollHost(  # noqa: N802
        self, request: api.EnrollHostRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> api.EnrollHostResponse:
        host = self.tokens.get(request.token)
        if host is None or request.token in self.used:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "enrollment token unknown, used or expired"
            )
        assert host is not None
        host_id, name = host
        csr = x509.load_pem_x509_csr(request.csr_pem.encode())
        holder = self.keys.get(_fingerprint(csr))
        if holder is not None and holder[0] != host_id:
            await context.abort(
                grpc.StatusCode.ALREADY_EXISTS,
                f"this host is already enrolled as '{holder[1]}' ({holder[0]}); remove it first",
            )
        self.used.add(request.token)
        self.keys[_fingerprint(csr)] = host
        cert = self.pki.ca.sign(request.csr_pem.encode(), Role.HOST, host_id, LIFETIME)
        return api.EnrollHostResponse(
            host_id=host_id,
            host_name=name,
            certificate_pem=cert_pem(cert).decode(),
            ca_certificate_pem=self.pki.ca_pem.decode(),
            revocation_list_pem=self.pki.crl(1).decode(),
        )


@dataclass
class Controller:
    fake: FakeEnrollmentController
    address: str
    ca_file: Path


@pytest.fixture
async def controller(short_tmp: Path) -> AsyncIterator[Controller]:
    """The test double, served over TLS with a controller's certificate."""
    pki = TestPki(short_tmp / "pki")
    fake = FakeEnrollmentController(pki)
    server = grpc.aio.server()
    api_grpc.add_EnrollmentServiceServicer_to_server(fake, server)
    credentials = ServingCertificate(pki.pair(Role.CONTROLLER)).credentials(
        require_client_auth=False
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    ca_file = short_tmp / "controller-ca.pem"
    ca_file.write_bytes(pki.ca_pem)
    try:
        yield Controller(fake, f"127.0.0.1:{port}", ca_file)
    finally:
        await server.stop(0)


@dataclass
class Run:
    """A hostd process: its address, once it listens."""

    process: asyncio.subprocess.Process
    address: str
    log: list[str]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), TIMEOUT)


async def _start(
    state: Path, *extra: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(HOSTD),
        *("--listen", f"127.0.0.1:{free_port()}", "--libvirt-uri", "test:///default"),
        *("--state-dir", str(state), "--virt-type", "qemu"),
        *extra,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def _serving(process: asyncio.subprocess.Process) -> Run:
    """Reads the log until hostd listens (fails with the log if it exits)."""
    assert process.stderr is not None
    seen: list[str] = []

    async def listening() -> str:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode(errors="replace"):
            seen.append(line)
            if "hostd listening on " in line:
                return line.rsplit(" ", 1)[-1].strip()
        pytest.fail("hostd ended before listening:\n" + "".join(seen))

    address = await asyncio.wait_for(listening(), TIMEOUT)
    return Run(process, address, seen)


async def _failure(process: asyncio.subprocess.Process) -> str:
    """The log of a hostd that must exit 1."""
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 1, err.decode(errors="replace")
    text = err.decode(errors="replace")
    assert "Traceback" not in text
    return text


def _enroll_args(controller: Controller, token_file: Path) -> tuple[str, ...]:
    return (
        *("--controller", controller.address, "--controller-ca", str(controller.ca_file)),
        *("--enroll-token-file", str(token_file)),
    )


def _token(controller: Controller, folder: Path, host_id: str, name: str) -> Path:
    token = f"vpe_{host_id}-secret"
    controller.fake.tokens[token] = (host_id, name)
    path = folder / f"{host_id}.token"
    path.write_text(token + "\n")
    return path


async def _hypervisor_of(run: Run, pki: TestPki, host_id: str) -> str:
    async with hostd_channel(run.address, pki, host_id) as channel:
        caps = await pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(
            pb.GetHostCapabilitiesRequest()
        )
    return caps.hypervisor_type


async def test_enrolled_once_and_kept_across_restarts(
    controller: Controller, short_tmp: Path
) -> None:
    state = short_tmp / "state"
    token_file = _token(controller, short_tmp, "h-1", "h1")
    run = await _serving(await _start(state, *_enroll_args(controller, token_file)))
    try:
        assert await _hypervisor_of(run, controller.fake.pki, "h-1") == "qemu"
        assert any("enrolled as host 'h1' (h-1)" in line for line in run.log)
        assert not any("vpe_" in line for line in run.log), "the token is never logged"
    finally:
        await run.stop()
    files = tls_files(state)
    for path in (files.key, files.cert, files.ca, files.crl):
        assert path.is_file()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert same_key(cert, load_key(files.key.read_bytes()))
    key_before = files.key.read_bytes()
    # Again, without a token: the same identity.
    run = await _serving(await _start(state))
    try:
        assert await _hypervisor_of(run, controller.fake.pki, "h-1") == "qemu"
    finally:
        await run.stop()
    assert files.key.read_bytes() == key_before
    assert x509.load_pem_x509_certificate(files.cert.read_bytes()) == cert


async def test_no_identity_and_no_token_is_a_clear_exit(short_tmp: Path) -> None:
    log = await _failure(await _start(short_tmp / "state"))
    assert f"hostd cannot run: {NO_IDENTITY}" in log


async def test_the_controllers_refusal_is_passed_on(
    controller: Controller, short_tmp: Path
) -> None:
    token_file = _token(controller, short_tmp, "h-1", "h1")
    controller.fake.used.add(token_file.read_text().strip())
    log = await _failure(await _start(short_tmp / "state", *_enroll_args(controller, token_file)))
    assert "refused to enroll this host: enrollment token unknown, used or expired" in log
    assert "vpe_" not in log


async def test_a_host_enrolled_already_keeps_its_key_and_is_refused_another_name(
    controller: Controller, short_tmp: Path
) -> None:
    state = short_tmp / "state"
    first = _token(controller, short_tmp, "h-1", "h1")
    run = await _serving(await _start(state, *_enroll_args(controller, first)))
    await run.stop()
    key = tls_files(state).key.read_bytes()
    second = _token(controller, short_tmp, "h-2", "h2")
    log = await _failure(await _start(state, *_enroll_args(controller, second)))
    assert "this host is already enrolled as 'h1' (h-1); remove it first" in log
    assert tls_files(state).key.read_bytes() == key, "the key is kept, never replaced"


async def test_the_token_may_come_from_the_environment(
    controller: Controller, short_tmp: Path
) -> None:
    token_file = _token(controller, short_tmp, "h-3", "h3")
    env = dict(os.environ, VIRTPLANE_ENROLL_TOKEN=token_file.read_text().strip())
    process = await _start(
        short_tmp / "state",
        *("--controller", controller.address, "--controller-ca", str(controller.ca_file)),
        env=env,
    )
    run = await _serving(process)
    try:
        assert await _hypervisor_of(run, controller.fake.pki, "h-3") == "qemu"
    finally:
        await run.stop()
    assert run.process.returncode == 0
