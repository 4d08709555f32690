"""What a log record is about: the request, the operation, the VM and the host.

Each is a context variable, bound where it becomes known (the RPC boundary
binds the request id: virtplane_common.rpc_context; a verb binds its
operation, VM and host once it has begun one). asyncio copies the context
into each task, so what a call binds stays with that call and the tasks it
starts. virtplane_common.logs puts the bound values on every record.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")

FIELDS = ("request_id", "operation_id", "vm", "host")

_VARS: dict[str, ContextVar[str]] = {
    name: ContextVar(f"virtplane_{name}", default="") for name in FIELDS
}


def bind(*, request_id: str = "", operation_id: str = "", vm: str = "", host: str = "") -> None:
    """Binds the given (non-empty) values for the rest of the current context."""
    for name, value in (
        ("request_id", request_id),
        ("operation_id", operation_id),
        ("vm", vm),
        ("host", host),
    ):
        if value:
            _VARS[name].set(value)


def only(*, request_id: str = "", operation_id: str = "", vm: str = "", host: str = "") -> None:
    """Binds exactly these values, clearing the others: for a long-lived task
    that a call started but that outlives it (a host's monitor)."""
    for name, value in (
        ("request_id", request_id),
        ("operation_id", operation_id),
        ("vm", vm),
        ("host", host),
    ):
        _VARS[name].set(value)


async def only_for(work: Callable[[], Awaitable[T]], *, vm: str = "", host: str = "") -> T:
    """Awaits work() with only vm and host bound: for long-lived work a call
    starts in a task of its own (its records then name no request). Await
    it as its task's whole coroutine: the binding stays with that task.
    (work is called here, so a task cancelled before it runs leaves no
    coroutine never awaited.)"""
    only(vm=vm, host=host)
    return await work()


@contextmanager
def bound(
    *, request_id: str = "", operation_id: str = "", vm: str = "", host: str = ""
) -> Iterator[None]:
    """Binds the given values inside the with block only."""
    tokens = [
        (_VARS[name], _VARS[name].set(value))
        for name, value in (
            ("request_id", request_id),
            ("operation_id", operation_id),
            ("vm", vm),
            ("host", host),
        )
        if value
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current() -> dict[str, str]:
    """The values bound now, by field name; unbound fields are left out."""
    return {name: value for name, var in _VARS.items() if (value := var.get())}


def request_id() -> str:
    return _VARS["request_id"].get()


def new_request_id() -> str:
    """A request id for a call that came without one."""
    return uuid.uuid4().hex[:16]
