"""Any RPC of a service, called by its descriptor over a real channel, and
the property every call must keep: never INTERNAL or UNKNOWN, and a success
answers a well-formed response. Used by the property tests of the public
APIs (tests/controller/test_api_properties.py, tests/hostd/...), which draw
the requests with tests.support.proto_strategies and run the cases with
`drive`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.proto_strategies import Pool, requests

T = TypeVar("T")

FORBIDDEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

FIRST_ITEM_SECONDS = 0.3
"""How long a stream is given for its first message before it is cancelled
(a watch may have nothing to say yet: that is no failure)."""

CALL_SECONDS = 20.0
"""The deadline of a call: far above any answer the cases need."""


def methods(module: Any, service: str) -> list[MethodDescriptor]:
    """The RPCs of service in a generated *_pb2 module."""
    descriptor: FileDescriptor = module.DESCRIPTOR
    return list(descriptor.services_by_name[service].methods)


def calls(
    rpcs: list[MethodDescriptor], pool: Pool
) -> st.SearchStrategy[tuple[MethodDescriptor, Message]]:
    """An RPC and a request for it."""
    return st.one_of([st.tuples(st.just(rpc), requests(rpc.input_type, pool)) for rpc in rpcs])


@dataclass
class Tally:
    """What the cases got: status codes by RPC."""

    codes: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def cases(self) -> int:
        return sum(self.codes.values())

    def summary(self) -> str:
        by_code: Counter[str] = Counter()
        for (_, code), n in self.codes.items():
            by_code[code] += n
        rpcs = len({rpc for rpc, _ in self.codes})
        codes = ", ".join(f"{code} {n}" for code, n in by_code.most_common())
        return f"{self.cases} cases over {rpcs} RPCs ({codes})"


async def call(
    channel: grpc.aio.Channel, rpc: MethodDescriptor, request: Message
) -> tuple[grpc.StatusCode, str]:
    """Calls rpc with request; the status code and details it ends with. A
    stream is read for its first message, then cancelled. Fails when the
    code is INTERNAL or UNKNOWN, or a success answers a malformed response."""
    path = f"/{rpc.containing_service.full_name}/{rpc.name}"
    response_class = message_factory.GetMessageClass(rpc.output_type)
    serialize: Callable[[Message], bytes] = type(request).SerializeToString
    try:
        if rpc.server_streaming:
            stream = channel.unary_stream(path, serialize, response_class.FromString)(
                request, timeout=CALL_SECONDS
            )
            try:
                first = await asyncio.wait_for(stream.read(), FIRST_ITEM_SECONDS)
            except TimeoutError:
                first = None  # nothing to say yet
            finally:
                stream.cancel()
            if first is not None and first is not grpc.aio.EOF:  # type: ignore[attr-defined]
                _check_response(rpc, first)
        else:
            unary = channel.unary_unary(path, serialize, response_class.FromString)
            _check_response(rpc, await unary(request, timeout=CALL_SECONDS))
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
        assert code not in FORBIDDEN, f"{rpc.name}({request!r:.2000}) -> {code.name}: {details}"
        return code, details
    return grpc.StatusCode.OK, ""


def _check_response(rpc: MethodDescriptor, response: object) -> None:
    """A response of the RPC's type that survives a round trip, and for a
    GetX or a CreateX, with its X set (GetVm's vm, CreateAffinityGroup's group)."""
    cls = message_factory.GetMessageClass(rpc.output_type)
    assert isinstance(response, cls), f"{rpc.name} answered a {type(response).__name__}"
    assert cls.FromString(response.SerializeToString()) == response
    resource = rpc.name.removeprefix("Get").removeprefix("Create")
    for field_descriptor in rpc.output_type.fields:
        kind = field_descriptor.message_type
        if resource != rpc.name and kind is not None and kind.name == resource:
            assert response.HasField(field_descriptor.name), (
                f"{rpc.name} answered without {field_descriptor.name}: {response}"
            )


def drive(strategy: st.SearchStrategy[T], case: Callable[[T], None], examples: int) -> None:
    """Runs case on examples values of strategy, reproducibly (derandomized,
    no example database); a failing case is shrunk and raised."""

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: T) -> None:
        case(value)

    run()


async def drive_async(
    strategy: st.SearchStrategy[T], case: Callable[[T], Awaitable[None]], examples: int
) -> None:
    """drive, for a case that runs on this event loop: hypothesis runs in a
    worker thread and hands each case to the loop, waiting for its end."""
    loop = asyncio.get_running_loop()

    def blocking(value: T) -> None:
        asyncio.run_coroutine_threadsafe(_awaited(case(value)), loop).result()

    await asyncio.to_thread(drive, strategy, blocking, examples)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable
