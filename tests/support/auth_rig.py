"""A controller with authentication on, serving TLS from a test CA: its
--listen port for token clients (server-auth TLS) and its --listen-mtls port
for client certificates (mutual TLS); channels carrying a bearer token or a
client key pair; principals of each role."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import FileDescriptor
from virtplane.v1 import (
    affinity_group_service_pb2,
    host_service_pb2,
    operation_service_pb2,
    principal_service_pb2,
    vm_service_pb2,
)
from virtplane.v1 import principal_service_pb2 as pr
from virtplane.v1 import principal_service_pb2_grpc as pr_grpc

from controller.app import Controller
from controller.auth.principals import ADMIN_TOKEN_FILE
from tests.support.controller_rig import config
from tests.support.pki import TestPki
from virtplane_common.tls.credentials import channel_credentials
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.keys import key_pem, new_key

SERVICE_FILES: list[FileDescriptor] = [
    vm_service_pb2.DESCRIPTOR,
    host_service_pb2.DESCRIPTOR,
    operation_service_pb2.DESCRIPTOR,
    affinity_group_service_pb2.DESCRIPTOR,
    principal_service_pb2.DESCRIPTOR,
]
with contextlib.suppress(ImportError):  # the enrollment service, where it exists
    SERVICE_FILES.append(importlib.import_module("virtplane.v1.enrollment_service_pb2").DESCRIPTOR)


def controller_methods() -> list[tuple[str, bool]]:
    """The full name of every RPC of the controller's services, and whether
    it streams its responses."""
    return [
        (f"/{service.full_name}/{method.name}", method.server_streaming)
        for file in SERVICE_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    ]


def _raw(data: bytes) -> bytes:
    return data


def unary(channel: grpc.aio.Channel, method: str) -> Any:
    """method as a unary call of raw bytes."""
    return channel.unary_unary(method, request_serializer=_raw, response_deserializer=_raw)


def _stream(channel: grpc.aio.Channel, method: str) -> Any:
    return channel.unary_stream(method, request_serializer=_raw, response_deserializer=_raw)


async def status_of(channel: grpc.aio.Channel, method: str, streaming: bool) -> grpc.StatusCode:
    """The status an empty request to method ends with (OK if it answers)."""
    try:
        if streaming:
            async for _ in _stream(channel, method)(b"", timeout=5):
                break
        else:
            await unary(channel, method)(b"", timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def details_of(
    channel: grpc.aio.Channel, method: str, streaming: bool = False
) -> tuple[grpc.StatusCode, str]:
    """The status and details an empty request to method ends with."""
    try:
        if streaming:
            async for _ in _stream(channel, method)(b"", timeout=5):
                break
        else:
            await unary(channel, method)(b"", timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


ROLES = {"viewer": pr.ROLE_VIEWER, "operator": pr.ROLE_OPERATOR, "admin": pr.ROLE_ADMIN}


@dataclass
class AuthRig:
    controller: Controller
    pki: TestPki
    state_dir: Path
    tls: str
    """host:port of the server-auth TLS port (tokens)."""
    mtls: str
    """host:port of the mutual TLS port (client certificates)."""
    admin_token: str
    revoked: set[int] = field(default_factory=set)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def channel(self, token: str | None = None) -> grpc.aio.Channel:
        """A channel to the TLS port, sending token if given."""
        creds = channel_credentials(self.pki.ca_pem)
        if token is not None:
            creds = grpc.composite_channel_credentials(
                creds, grpc.access_token_call_credentials(token)
            )
        return self._keep(grpc.aio.secure_channel(self.tls, creds))

    def cert_channel(self, pair: KeyPair, ca: bytes | None = None) -> grpc.aio.Channel:
        """A channel to the mutual TLS port presenting pair."""
        creds = channel_credentials(ca or self.pki.ca_pem, pair)
        return self._keep(grpc.aio.secure_channel(self.mtls, creds))

    def _keep(self, channel: grpc.aio.Channel) -> grpc.aio.Channel:
        self.channels.append(channel)
        return channel

    def principals(self, token: str | None = None) -> pr_grpc.PrincipalServiceAsyncStub:
        return pr_grpc.PrincipalServiceStub(self.channel(token or self.admin_token))

    async def token_of(self, name: str, role: str, ttl_seconds: int = 0) -> str:
        """The secret of a new token of a new principal name with role."""
        admin = self.principals()
        await admin.CreatePrincipal(
            pr.CreatePrincipalRequest(name=name, kind=pr.PRINCIPAL_KIND_USER, role=ROLES[role])
        )
        made = await admin.CreateToken(
            pr.CreateTokenRequest(principal=name, ttl_seconds=ttl_seconds)
        )
        return made.secret


def csr_for(name: str) -> tuple[bytes, bytes]:
    """A new key (PEM) and a certificate signing request for it."""
    key = new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


async def open_auth_rig(database_url: str, folder: Path) -> AuthRig:
    pki = TestPki(folder / "pki")
    state_dir = folder / "state"
    revoked: set[int] = set()
    cfg = config(database_url, state_dir=state_dir, listen_mtls="127.0.0.1:0")
    ctl = Controller(cfg, ca=pki.ca, revoked=revoked.__contains__)
    await ctl.start()
    token = (state_dir / ADMIN_TOKEN_FILE).read_text().strip()
    tls, mtls = f"127.0.0.1:{ctl.port}", f"127.0.0.1:{ctl.mtls_port}"
    return AuthRig(ctl, pki, state_dir, tls, mtls, token, revoked)


async def close_auth_rig(rig: AuthRig) -> None:
    for channel in rig.channels:
        await channel.close(None)
    await rig.controller.stop(grace=0)


@pytest.fixture
async def auth(database_url: str, tmp_path: Path) -> AsyncIterator[AuthRig]:
    """A controller with authentication on, on a fresh database of each engine."""
    opened = await open_auth_rig(database_url, tmp_path)
    yield opened
    await close_auth_rig(opened)


LONG_AGO = dt.timedelta(minutes=-1)
"""A lifetime that makes a certificate expired when it is made."""
