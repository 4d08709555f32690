"""HostAgentService over gRPC: proto in, a call on hostd's parts, proto out.

Errors are raised as hostd/virtplane errors and become status codes in
virtplane.status.ErrorInterceptor, installed on the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.hypervisor import Hypervisor
from hostd.journal import Journal
from hostd.virt_type import VirtType
from hostd.vms import VmRegistry

Context = grpc.aio.ServicerContext[Any, Any]


class HostAgentServicer(pb_grpc.HostAgentServiceServicer):
    def __init__(
        self, vms: VmRegistry, journal: Journal, hypervisor: Hypervisor, virt_type: VirtType
    ) -> None:
        self._vms = vms
        self._journal = journal
        self._hypervisor = hypervisor
        self._virt_type = virt_type

    async def CreateVm(
        self, request: pb.HostAgentServiceCreateVmRequest, context: Context
    ) -> pb.HostAgentServiceCreateVmResponse:
        vm = await self._vms.create(request.config)
        return pb.HostAgentServiceCreateVmResponse(vm=vm)

    async def DestroyVm(
        self, request: pb.HostAgentServiceDestroyVmRequest, context: Context
    ) -> pb.HostAgentServiceDestroyVmResponse:
        await self._vms.destroy(request.vm_id)
        return pb.HostAgentServiceDestroyVmResponse()

    async def ListVms(
        self, request: pb.HostAgentServiceListVmsRequest, context: Context
    ) -> pb.HostAgentServiceListVmsResponse:
        return pb.HostAgentServiceListVmsResponse(
            vms=self._vms.list(),
            host_epoch=self._journal.epoch,
            sequence=self._journal.last_sequence,
        )

    async def GetHostCapabilities(
        self, request: pb.GetHostCapabilitiesRequest, context: Context
    ) -> pb.GetHostCapabilitiesResponse:
        capacity = await self._hypervisor.capacity()
        return pb.GetHostCapabilitiesResponse(
            hostname=capacity.hostname,
            cpus=capacity.cpus,
            memory_total_mib=capacity.memory_total_mib,
            memory_free_mib=capacity.memory_free_mib,
            hypervisor_type=self._virt_type.value,
        )

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        async for event in self._journal.follow(request.after_sequence):
            yield pb.WatchEventsResponse(event=event)
