"""The server interceptors that observe calls (virtplane_common.rpc_metrics,
virtplane_common.rpc_context) and the client one that sends the request id,
on a real gRPC server and channel with a small test service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.waiting import until
from virtplane_common import errors, log_context
from virtplane_common.rpc_context import BindRequest, SendRequest
from virtplane_common.rpc_metrics import RpcMetrics
from virtplane_common.status import ErrorInterceptor

Request = vm_api.StartVmRequest  # any message with a request_id and a VM


async def _context(request: Request, _context: object) -> bytes:
    """What the call's log records would carry."""
    return json.dumps(log_context.current()).encode()


async def _missing(request: Request, _context: object) -> bytes:
    raise errors.NotFound("vm", request.vm)


async def _count(request: Request, _context: object) -> AsyncIterator[bytes]:
    for n in range(int(request.vm or "0")):
        yield str(n).encode()


def _service() -> grpc.GenericRpcHandler[Any, Any]:
    def unary(behaviour: Callable[..., Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=Request.FromString, response_serializer=bytes
        )

    count = grpc.unary_stream_rpc_method_handler(
        _count, request_deserializer=Request.FromString, response_serializer=bytes
    )
    return grpc.method_handlers_generic_handler(
        "test.Echo", {"Context": unary(_context), "Missing": unary(_missing), "Count": count}
    )


class Served:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.server = grpc.aio.server(
            interceptors=[BindRequest(), RpcMetrics(self.registry), ErrorInterceptor()]
        )
        self.server.add_generic_rpc_handlers([_service()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{self.port}",
            interceptors=[SendRequest()],  # type: ignore[list-item]
        )

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[Request, bytes]:
        return self.channel.unary_unary(
            f"/test.Echo/{method}",
            request_serializer=Request.SerializeToString,
            response_deserializer=None,
        )

    def handled(self, method: str, code: str) -> float:
        labels = {"service": "test.Echo", "method": method, "code": code}
        value = self.registry.get_sample_value("virtplane_grpc_server_handled_total", labels)
        return value or 0.0

    def timed(self, method: str) -> float:
        labels = {"service": "test.Echo", "method": method}
        name = "virtplane_grpc_server_handling_seconds_count"
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    served = Served()
    await served.server.start()
    yield served
    await served.channel.close(None)
    await served.server.stop(None)


async def _bound(served: Served, request: Request) -> dict[str, str]:
    return dict(json.loads(await served.unary("Context")(request)))


async def test_a_call_without_an_id_gets_a_new_one(served: Served) -> None:
    first = await _bound(served, Request(vm="v1"))
    second = await _bound(served, Request(vm="v1"))
    assert first["vm"] == "v1"
    assert len(first["request_id"]) == 16
    assert first["request_id"] != second["request_id"]
    assert "operation_id" not in first


async def test_the_request_id_field_is_the_call_s_id(served: Served) -> None:
    bound = await _bound(served, Request(vm="v1", request_id="client-key"))
    assert bound == {"request_id": "client-key", "vm": "v1"}


async def test_the_caller_s_bound_ids_travel_with_its_call(served: Served) -> None:
    with log_context.bound(request_id="from-caller", operation_id="op-1", vm="elsewhere"):
        bound = await _bound(served, Request(vm="v1", request_id="client-key"))
    # The caller's request id wins over the message's; the VM is the request's.
    assert bound == {"request_id": "from-caller", "operation_id": "op-1", "vm": "v1"}
    assert log_context.current() == {}  # bound() ended


async def test_calls_are_counted_by_method_and_code(served: Served) -> None:
    for _ in range(2):
        await served.unary("Context")(Request())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await served.unary("Missing")(Request(vm="v9"))
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    # An abort sends the status before the handler unwinds: counted just after.
    await until(lambda: served.handled("Missing", "NOT_FOUND"), what="the refusal counted")
    assert served.handled("Context", "OK") == 2
    assert served.handled("Missing", "NOT_FOUND") == 1
    assert served.handled("Missing", "OK") == 0
    assert served.timed("Context") == 2
    assert served.timed("Missing") == 1


async def test_streams_are_counted_as_they_end_and_not_timed(served: Served) -> None:
    count = served.channel.unary_stream(
        "/test.Echo/Count", request_serializer=Request.SerializeToString, response_deserializer=None
    )
    assert [item async for item in count(Request(vm="3"))] == [b"0", b"1", b"2"]
    assert served.handled("Count", "OK") == 1

    endless = count(Request(vm="1000000"))
    async for _ in endless:
        break
    endless.cancel()
    await until(lambda: served.handled("Count", "CANCELLED"), what="the cancelled stream counted")
    assert served.timed("Count") == 0
