"""RPC metrics of a gRPC server, from one interceptor: every call counted by
method and status code, unary calls' latency as a histogram by method.

    virtplane_grpc_server_handled_total{service,method,code}
    virtplane_grpc_server_handling_seconds{service,method}   (unary calls only)

Put it first in the server's interceptor list, outside the error
interceptor (virtplane_common.status), so that it sees the status code each
call ends with, errors translated and authentication refusals included.

A call is counted as its handler unwinds. An aborted call's status is sent
by the abort itself, so its client may see the status a moment before the
count moves; a successful call's answer is sent after it is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from virtplane_common.interceptors import Call, ServerInterceptor, wrap

# Seconds: from a cached read (~1 ms) to a verb that waits on a host.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _code(context: Any) -> grpc.StatusCode:
    """The code a handler ended its call with (set by abort or set_code)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions keep the raw integer
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    return grpc.StatusCode.OK if code is None else grpc.StatusCode.UNKNOWN


class RpcMetrics(ServerInterceptor):
    """Counts and times every call the server handles."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.handled = Counter(
            "virtplane_grpc_server_handled",
            "RPCs completed, by method and status code",
            ["service", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "virtplane_grpc_server_handling_seconds",
            "Time to answer a unary RPC, by method",
            ["service", "method"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    @asynccontextmanager
    async def _observe(self, call: Call) -> AsyncIterator[None]:
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            yield
            code = _code(call.context)
        except grpc.aio.AbortError:
            code = _code(call.context)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self.handled.labels(call.service, call.name, code.name).inc()
            if not call.streaming:
                self.latency.labels(call.service, call.name).observe(time.perf_counter() - started)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        return wrap(handler, handler_call_details.method, self._observe)
