"""What the controller may ask of a VM's guest agent besides power: a fresh
report, and the last report as it arrived (for debugging).

The channel's statistics stay the guest channel's message, answered as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtplane.v1.host_agent_service_pb2 import GuestChannelStats

from hostd.guest_channel import GuestChannel
from hostd.registry import VmRegistry
from virtplane_common.errors import FailedPrecondition


@dataclass(frozen=True)
class GuestReport:
    """The last report a guest agent sent, as it arrived, and what its channel cost."""

    json: str
    """protobuf's JSON of the report message; empty before the first report."""
    truncated: bool
    received_ns: int
    """When hostd received it (Unix ns); 0 before the first report."""
    channel: GuestChannelStats


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

    def last_report(self, vm_id: str) -> GuestReport:
        channel = self._channel(vm_id)
        text, truncated, received_ns = channel.last_report()
        return GuestReport(text, truncated, received_ns, channel.stats())
