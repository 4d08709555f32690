"""EnrollmentService: validate, call controller.enrollment.enroll, convert."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import enrollment_service_pb2 as api
from virtplane.v1 import enrollment_service_pb2_grpc as api_grpc

from controller.enrollment.enroll import Enrollment
from controller.enrollment.errors import TokenRefused
from controller.enrollment.tokens import IssuedToken
from controller.requests import call_of
from virtplane_common.errors import InvalidArgument

Context = grpc.aio.ServicerContext[Any, Any]


def timestamp(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def token_reply(issued: IssuedToken) -> api.CreateEnrollmentTokenResponse:
    return api.CreateEnrollmentTokenResponse(
        token=issued.secret, expires_at=timestamp(issued.expires_at), host_id=issued.host_id
    )


class EnrollmentServicer(api_grpc.EnrollmentServiceServicer):
    def __init__(self, enrollment: Enrollment) -> None:
        self._enrollment = enrollment

    async def CreateEnrollmentToken(
        self, request: api.CreateEnrollmentTokenRequest, context: Context
    ) -> api.CreateEnrollmentTokenResponse:
        if not request.host:
            raise InvalidArgument("host", "is required (an id or a name)")
        ttl = dt.timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
        call = call_of("CreateEnrollmentToken", request)
        return token_reply(await self._enrollment.create_token(request.host, ttl, call))

    async def EnrollHost(
        self, request: api.EnrollHostRequest, context: Context
    ) -> api.EnrollHostResponse:
        if not request.token:
            raise TokenRefused()
        if not request.csr_pem:
            raise InvalidArgument("csr_pem", "is required (a PEM certificate signing request)")
        enrolled = await self._enrollment.enroll(request.token, request.csr_pem.encode())
        return api.EnrollHostResponse(
            host_id=enrolled.host_id,
            host_name=enrolled.host_name,
            certificate_pem=enrolled.cert_pem.decode(),
            ca_certificate_pem=enrolled.ca_pem.decode(),
            revocation_list_pem=enrolled.crl_pem.decode(),
        )
