"""The client's exceptions. A failed call is translated once, where it leaves
gRPC (`from_rpc_error`), into the class of its status code; every one carries
the code, the server's message and, when the message names one, the field::

    ClientError
    ├── RpcError                 a call failed: .code, .message, .field
    │   ├── InvalidArgument      INVALID_ARGUMENT     .field names the request field
    │   ├── NotFound             NOT_FOUND            .kind, .name of what is missing
    │   ├── AlreadyExists        ALREADY_EXISTS       a name, MAC or request_id in use
    │   ├── FailedPrecondition   FAILED_PRECONDITION  the state forbids the verb
    │   ├── Aborted              ABORTED              a concurrent change won
    │   ├── ResourceExhausted    RESOURCE_EXHAUSTED   no host fits; a watcher too slow
    │   ├── Unavailable          UNAVAILABLE          the controller or a host is unreachable
    │   ├── DeadlineExceeded     DEADLINE_EXCEEDED
    │   ├── Cancelled            CANCELLED
    │   └── Internal             any other code (INTERNAL, UNKNOWN, UNIMPLEMENTED…)
    ├── OperationFailed          an awaited operation ended FAILED: .operation
    └── WaitTimeout              (also a TimeoutError) the wait ended before its goal
"""

from __future__ import annotations

import re

import grpc

from virtplane_client.models import Operation

# "spec.nics[0].mac_address: is not a MAC address": the servers' way of
# naming the field a message is about (virtplane_common.errors.InvalidArgument).
_FIELD = re.compile(r"^([a-z_][a-z0-9_]*(?:\[\d+\])?(?:\.[a-z_][a-z0-9_]*(?:\[\d+\])?)*): ")
# "VM 'web' not found" (virtplane_common.errors.NotFound).
_MISSING = re.compile(r"^(?P<kind>.+?) (?P<q>['\"])(?P<name>.*)(?P=q) not found$")


class ClientError(Exception):
    """Base of every exception the client raises."""


class RpcError(ClientError):
    """A call the server answered with an error status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        found = _FIELD.match(message)
        self.field: str | None = found.group(1) if found else None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(RpcError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RpcError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message, code)
        found = _MISSING.match(message)
        self.kind = found.group("kind") if found else ""
        self.name = found.group("name") if found else ""


class AlreadyExists(RpcError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(RpcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(RpcError):
    code = grpc.StatusCode.ABORTED


class ResourceExhausted(RpcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(RpcError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(RpcError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(RpcError):
    code = grpc.StatusCode.CANCELLED


class Internal(RpcError):
    code = grpc.StatusCode.INTERNAL


class OperationFailed(ClientError):
    """An operation the caller awaited ended FAILED; .operation says why."""

    def __init__(self, operation: Operation) -> None:
        error = operation.error
        why = f"{error.code}: {error.message}" if error else "no reason given"
        super().__init__(f"operation {operation.id} ({operation.kind.name}) failed: {why}")
        self.operation = operation


class WaitTimeout(ClientError, TimeoutError):
    """A wait (wait_for, operations.result) ended before what it waited for."""


_BY_CODE: dict[grpc.StatusCode, type[RpcError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
    )
}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> RpcError:
    """The client's exception for a failed call."""
    code = exc.code()
    return _BY_CODE.get(code, Internal)(exc.details() or "", code)
