"""HostIdentityService over gRPC: the controller renews this host's
certificate and keeps its revocation list (hostd.identity does the work).

Only the controller reaches it (hostd.peer_auth); errors become status
codes in virtplane_common.status.ErrorInterceptor.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf.descriptor import FileDescriptor
from virtplane.v1 import host_identity_service_pb2 as api
from virtplane.v1 import host_identity_service_pb2_grpc as api_grpc

from hostd.identity import HostIdentity

Context = grpc.aio.ServicerContext[Any, Any]


class HostIdentityServicer(api_grpc.HostIdentityServiceServicer):
    def __init__(self, identity: HostIdentity) -> None:
        self._identity = identity

    async def PrepareRenewal(
        self, request: api.PrepareRenewalRequest, context: Context
    ) -> api.PrepareRenewalResponse:
        csr = await asyncio.to_thread(self._identity.prepare_renewal)
        return api.PrepareRenewalResponse(csr_pem=csr.decode())

    async def InstallCertificate(
        self, request: api.InstallCertificateRequest, context: Context
    ) -> api.InstallCertificateResponse:
        await asyncio.to_thread(self._identity.install, request.certificate_pem.encode())
        return api.InstallCertificateResponse()

    async def SetRevocationList(
        self, request: api.SetRevocationListRequest, context: Context
    ) -> api.SetRevocationListResponse:
        await asyncio.to_thread(
            self._identity.set_revocation_list, request.revocation_list_pem.encode()
        )
        return api.SetRevocationListResponse()


def add_identity_service(server: grpc.aio.Server, identity: HostIdentity) -> FileDescriptor:
    """Adds HostIdentityService to server; returns its proto file (for health)."""
    api_grpc.add_HostIdentityServiceServicer_to_server(HostIdentityServicer(identity), server)
    return api.DESCRIPTOR
