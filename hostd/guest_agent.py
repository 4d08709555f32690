"""What the controller may ask of a VM's guest agent besides power: a fresh
report, and the last report as it arrived (for debugging).

The report and the channel's statistics stay the guest channel's messages
(the guest's wire protocol), answered as they are.
"""

from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import guest_info
from hostd.guest_channel import GuestChannel
from hostd.registry import VmRegistry
from virtplane_common.errors import FailedPrecondition


class GuestAgentQueries:
    def __init__(self, registry: VmRegistry) -> None:
        self._registry = registry

    def _channel(self, vm_id: str) -> GuestChannel:
        vm = self._registry.lookup(vm_id)
        if vm.channel is None:
            raise FailedPrecondition(f"VM {vm_id} has no guest channel: its domain is not running")
        return vm.channel

    async def refresh(self, vm_id: str) -> None:
        """Asks the agent for a full report; it arrives as a guest report event."""
        channel = self._channel(vm_id)
        if channel.version is None:
            raise FailedPrecondition(f"the guest agent of VM {vm_id} is not connected")
        await channel.refresh()

    def last_report(self, vm_id: str) -> pb.HostAgentServiceGetVmGuestReportResponse:
        channel = self._channel(vm_id)
        text, truncated, received = channel.last_report()
        reply = pb.HostAgentServiceGetVmGuestReportResponse(
            report_json=text, truncated=truncated, channel=channel.stats()
        )
        if received:
            reply.received_time.CopyFrom(guest_info.timestamp(received))
        return reply
