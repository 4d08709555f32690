"""The VM list hostd hands out (ListVms, WatchEvents' snapshot), bounded in size.

Every VM is listed with its state; guest facts ride along only while the
list stays under GUEST_BUDGET_BYTES. A VM whose facts are left out is listed
without them (HostVm.guest unset), which the controller takes as "nothing
new": it keeps the facts it stored, and the VM's next guest report comes as
an event. However large its guests' reports, a host's list thus stays far
under the gRPC message limit (virtplane_common.grpc_limits), and a guest can
never make its host look dead.
"""

from __future__ import annotations

from collections.abc import Iterable

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import convert
from hostd.model import VmStatus

GUEST_BUDGET_BYTES = 2 * 1024 * 1024
"""The most the guest facts of one list may weigh, serialised."""


def listed_vms(
    statuses: Iterable[VmStatus], budget: int = GUEST_BUDGET_BYTES
) -> tuple[list[pb.HostVm], int]:
    """The VMs as listed, and how many were listed without their guest facts."""
    out: list[pb.HostVm] = []
    left_out = 0
    for status in statuses:
        vm = convert.status_to_proto(status)
        if vm.HasField("guest"):
            size = vm.guest.ByteSize()
            if size > budget:
                vm.ClearField("guest")
                left_out += 1
            else:
                budget -= size
        out.append(vm)
    return out, left_out
