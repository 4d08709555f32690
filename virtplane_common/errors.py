"""The error categories of the virtplane API, shared by the controller and hostd.

Each daemon raises its own exceptions, derived from these categories; the
gRPC boundary (virtplane_common.status) turns a category into its status code, once::

    VirtplaneError
    ├── InvalidArgument      INVALID_ARGUMENT     a request field is missing or wrong
    ├── NotFound             NOT_FOUND            a named resource does not exist
    ├── AlreadyExists        ALREADY_EXISTS       a create repeats an existing resource
    ├── FailedPrecondition   FAILED_PRECONDITION  the resource's state forbids the verb
    ├── Aborted              ABORTED              a concurrent change won (e.g. a stale version)
    ├── ResourceExhausted    RESOURCE_EXHAUSTED   no capacity for the request
    ├── Unavailable          UNAVAILABLE          a host or service cannot be reached
    ├── Unauthenticated      UNAUTHENTICATED      no credential, or one not valid
    └── PermissionDenied     PERMISSION_DENIED    the principal's role lacks the permission

Anything else escaping a servicer is a bug and becomes INTERNAL.
"""

from __future__ import annotations


class VirtplaneError(Exception):
    """Base of every error the API reports to its clients."""


class InvalidArgument(VirtplaneError):
    """A request field is missing or invalid; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(VirtplaneError):
    """A resource named in the request does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class AlreadyExists(VirtplaneError):
    """A create names a resource that exists already."""


class FailedPrecondition(VirtplaneError):
    """The resource's current state does not allow the verb."""


class Aborted(VirtplaneError):
    """A concurrent change won: the request was based on a stale version."""


class ResourceExhausted(VirtplaneError):
    """There is no capacity for the request."""


class Unavailable(VirtplaneError):
    """A host or service the request needs cannot be reached."""


class Unauthenticated(VirtplaneError):
    """The caller presented no credential, or one that is unknown, expired or
    revoked. The message never repeats the credential."""


class PermissionDenied(VirtplaneError):
    """The caller is known, but its role lacks the permission the call needs;
    the message names the permission."""

    def __init__(self, principal: str, permission: str) -> None:
        super().__init__(f"{principal} lacks the permission {permission!r}")
        self.principal = principal
        self.permission = permission
