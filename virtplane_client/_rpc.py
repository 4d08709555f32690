"""The boundary with gRPC: every unary call goes through `call`, which turns a
failed call into the client's exception (virtplane_client.errors) once; and
mutations get their idempotency key from `idempotency_key`."""

from __future__ import annotations

import uuid
from typing import TypeVar

import grpc

from virtplane_client import errors

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def call(method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req) -> Resp:
    """method(request); a failure raised as the client's exception."""
    try:
        return await method(request)
    except grpc.aio.AioRpcError as exc:
        raise errors.from_rpc_error(exc) from exc


def idempotency_key(given: str | None) -> str:
    """The caller's request_id, else (None) a fresh one: every mutation the
    client sends can be repeated safely with the key it carried. An empty
    string sends none."""
    return str(uuid.uuid4()) if given is None else given
