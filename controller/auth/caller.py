"""The principal of the call being served.

The interceptor (controller.auth.interceptor) sets it for the task that runs
the call, the way gRPC scopes each call to its own task; controller.requests
reads it once, into the Call every mutation carries explicitly from there to
the audit log (controller.audit). It is empty outside a call, and for calls
served without authentication (require_auth off).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from controller.auth.permissions import Role


@dataclass(frozen=True)
class Principal:
    """A principal as a call is authorized against it."""

    name: str
    role: Role

    def __str__(self) -> str:
        return f"principal {self.name!r} ({self.role.value})"


current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "virtplane_principal", default=None
)


def name() -> str:
    """The name of the current call's principal; empty when there is none."""
    principal = current.get()
    return principal.name if principal is not None else ""
