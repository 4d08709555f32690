"""hostd's exceptions, each derived from an API error category (virtplane_common.errors).

libvirt errors are translated into these once, in hostd.libvirt_driver; the
gRPC boundary (virtplane_common.status.ErrorInterceptor) maps the category to a
status code::

    VirtplaneError
    ├── InvalidArgument          a VmConfig field is wrong (raised as is, naming the field)
    ├── NotFound
    │   ├── VmNotFound           no VM with this id is registered on this host
    │   └── DomainNotFound       libvirt has no domain with this UUID
    ├── AlreadyExists
    │   ├── VmAlreadyExists      a VM with this id is registered already
    │   └── DomainAlreadyExists  libvirt has a domain with this name or UUID
    ├── FailedPrecondition
    │   ├── VmStateConflict      the VM's state forbids the verb ("cannot pause VM X: it is PAUSED")
    │   ├── OperationUnsupported the hypervisor cannot do this (libvirt's test driver: migrate)
    │   ├── PeerRefused          another hostd refused a request (a migration's destination)
    │   ├── ConsoleNotSupported  the console asked for is not one this host offers
    │   ├── DomainStateConflict  libvirt refused the operation in the domain's current state
    │   └── AgentRefused         the guest agent refused a command
    ├── ResourceExhausted
    │   └── TooManyMigrations    the host's cap of outgoing migrations is reached
    ├── Unavailable
    │   ├── HypervisorUnavailable  libvirtd cannot be reached
    │   ├── PeerUnavailable      a migration's destination (its hostd or libvirt) is unreachable
    │   └── AgentUnavailable     the guest agent is not connected or did not answer
    └── HypervisorError          any other libvirt failure (INTERNAL, message kept)
        └── JobAborted           the domain's job (a migration) was cancelled
"""

from __future__ import annotations

from virtplane_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    VirtplaneError,
)


class VmNotFound(NotFound):
    """No VM with this id is registered on this host."""

    def __init__(self, vm_id: str) -> None:
        super().__init__("VM", vm_id)
        self.vm_id = vm_id


class DomainNotFound(NotFound):
    """libvirt has no domain with this UUID."""

    def __init__(self, uuid: str) -> None:
        super().__init__("domain", uuid)
        self.uuid = uuid


class VmAlreadyExists(AlreadyExists):
    """A VM with this id is registered already."""

    def __init__(self, vm_id: str, state: str = "") -> None:
        detail = f" ({state})" if state else ""
        super().__init__(f"VM {vm_id!r} already exists on this host{detail}")
        self.vm_id = vm_id


class DomainAlreadyExists(AlreadyExists):
    """libvirt has a domain with this name or UUID already."""


class VmStateConflict(FailedPrecondition):
    """The VM's state forbids the verb; the message names the state."""

    def __init__(self, verb: str, vm_id: str, state: str) -> None:
        super().__init__(f"cannot {verb} VM {vm_id}: it is {state}")
        self.vm_id = vm_id
        self.state = state


class ConsoleNotSupported(FailedPrecondition):
    """The console asked for is not one this host offers; the message lists those it does."""


class DomainStateConflict(FailedPrecondition):
    """libvirt refused the operation in the domain's current state."""


class HypervisorUnavailable(Unavailable):
    """libvirtd cannot be reached."""


class HypervisorError(VirtplaneError):
    """libvirt failed for a reason no other category describes."""


class AgentUnavailable(Unavailable):
    """The VM's guest agent is not connected, or did not answer in time."""

    def __init__(self, vm_id: str, why: str) -> None:
        super().__init__(f"guest agent of VM {vm_id!r} unavailable: {why}")
        self.vm_id = vm_id


class AgentRefused(FailedPrecondition):
    """The guest agent answered a command with a refusal."""

    def __init__(self, vm_id: str, command: str, error: str) -> None:
        super().__init__(f"guest agent of VM {vm_id!r} refused {command}: {error or 'no reason'}")
        self.vm_id = vm_id


class OperationUnsupported(FailedPrecondition):
    """The hypervisor does not support the operation (libvirt's test driver cannot migrate)."""


class JobAborted(HypervisorError):
    """The domain's job, a migration, was cancelled; the domain runs where it ran."""


class TooManyMigrations(ResourceExhausted):
    """This host already runs its cap of outgoing migrations, or holds its
    cap of prepared incoming ones."""


class PeerUnavailable(Unavailable):
    """A migration's destination, its hostd or its hypervisor, cannot be reached."""


class PeerRefused(FailedPrecondition):
    """Another hostd refused a request; the message is its own."""
