"""What enrollment refuses::

virtplane_common.errors.VirtplaneError
├── Unauthenticated
│   └── TokenRefused     an enrollment token unknown, used or expired
├── AlreadyExists
│   └── KeyEnrolled      the key is another host's
└── FailedPrecondition
    └── HostEnrolled     the host has its identity already
"""

from __future__ import annotations

from virtplane_common.errors import AlreadyExists, FailedPrecondition, Unauthenticated

TOKEN_REFUSED = (
    "the enrollment token is not valid (unknown, used or expired): "
    "ask an admin for a new one (virtplane host enroll-token HOST)"
)


class TokenRefused(Unauthenticated):
    """One message for an unknown, a used and an expired token: the caller
    learns nothing about which tokens exist."""

    def __init__(self) -> None:
        super().__init__(TOKEN_REFUSED)


class KeyEnrolled(AlreadyExists):
    def __init__(self, name: str, host_id: str) -> None:
        super().__init__(f"this host is already enrolled as {name!r} ({host_id}); remove it first")
        self.host_id = host_id


class HostEnrolled(FailedPrecondition):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"host {name!r} is enrolled already; to enroll it anew, remove it and add it again"
        )
