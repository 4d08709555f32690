"""The controller's errors, each in one of the API's categories
(virtplane_common.errors), which the gRPC boundary maps to status codes::

    virtplane_common.errors.VirtplaneError
    ├── InvalidArgument
    ├── NotFound
    │   ├── VmNotFound
    │   ├── HostNotFound
    │   └── AffinityGroupNotFound
    ├── AlreadyExists
    │   ├── VmExists
    │   ├── HostExists
    │   └── AffinityGroupExists
    ├── FailedPrecondition
    │   ├── IllegalVmState        the verb does not fit the VM's state
    │   ├── IllegalHostState      the verb does not fit the host's state
    │   ├── HostHasVms            VMs on the host forbid the verb
    │   ├── CreateRefused         a host refused to create the VM (a start
    │   │                         tries the next host)
    │   ├── StartFailed           every host a start tried failed
    │   └── HostBusy              a host refused for now: one of its caps
    │                             (e.g. outgoing migrations) is reached
    ├── ResourceExhausted
    │   └── NoHostAvailable       every host was rejected by a filter
    └── Unavailable
        └── HostUnreachable       hostd did not answer
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from virtplane_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)


class VmNotFound(NotFound):
    def __init__(self, vm: str) -> None:
        super().__init__("VM", vm)


class HostNotFound(NotFound):
    def __init__(self, host: str) -> None:
        super().__init__("host", host)


class VmExists(AlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"a VM named {name!r} exists already")


class MacInUse(AlreadyExists):
    def __init__(self, field: str, mac: str, vm: str) -> None:
        super().__init__(f"{field}: MAC address {mac} is in use by VM {vm!r}")


class HostExists(AlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"a host named {name!r} exists already")


class IllegalVmState(FailedPrecondition):
    def __init__(self, vm: str, state: str, verb: str, allowed: str) -> None:
        super().__init__(f"cannot {verb} VM {vm!r}: it is {state}; {verb} needs it {allowed}")
        self.state = state


class IllegalHostState(FailedPrecondition):
    def __init__(self, host: str, state: str, verb: str, allowed: str) -> None:
        super().__init__(f"cannot {verb} host {host!r}: it is {state}; {verb} needs it {allowed}")
        self.state = state


class HostHasVms(FailedPrecondition):
    def __init__(self, host: str, verb: str, vms: Sequence[str], where: str) -> None:
        super().__init__(f"cannot {verb} host {host!r}: VMs {where}: {', '.join(vms)}")
        self.vms = list(vms)


class NoHostAvailable(ResourceExhausted):
    """No host passed the scheduler's filters; rejections names each host's reason."""

    def __init__(self, vm: str, rejections: Mapping[str, str]) -> None:
        if rejections:
            why = "; ".join(f"{host}: {reason}" for host, reason in sorted(rejections.items()))
        else:
            why = "no hosts are registered"
        super().__init__(f"no host can run VM {vm!r}: {why}")
        self.rejections = dict(rejections)


class HostUnreachable(Unavailable):
    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"host {host!r} cannot be reached: {detail}")


class AffinityGroupNotFound(NotFound):
    def __init__(self, group: str) -> None:
        super().__init__("affinity group", group)


class AffinityGroupExists(AlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"an affinity group named {name!r} exists already")


class CreateRefused(FailedPrecondition):
    """The host answered CreateVm with an error: the VM is not on it."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"host {host!r} refused the VM: {detail}")


class HostBusy(FailedPrecondition):
    """The host answered RESOURCE_EXHAUSTED: the same call may succeed once
    what holds its cap has ended."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"host {host!r} refused: RESOURCE_EXHAUSTED: {detail}")


class StartFailed(FailedPrecondition):
    """Every host a start tried failed; message lists each try."""

    def __init__(self, vm: str, tries: str) -> None:
        super().__init__(f"cannot start VM {vm!r}: {tries}")
