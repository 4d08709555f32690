"""The gRPC servicers: validate, call the service, convert back. Errors are
raised as virtplane errors and become status codes in virtplane.status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from virtplane.errors import InvalidArgument
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller.host_service import HostService
from controller.power import PowerVerbs
from controller.validation import check_address, check_create, check_list, check_name
from controller.vm_service import VmService
from controller.vm_store import VmStore
from controller.watch import Kind

Context = grpc.aio.ServicerContext[Any, Any]


def _ref(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required (an id or a name)")
    return value


class VmServicer(vm_grpc.VmServiceServicer):
    def __init__(self, vms: VmService, power: PowerVerbs, store: VmStore) -> None:
        self._vms = vms
        self._power = power
        self._store = store

    async def ShutdownVm(
        self, request: vm_api.ShutdownVmRequest, context: Context
    ) -> vm_api.ShutdownVmResponse:
        vm = await self._power.shutdown(_ref("vm", request.vm), request.timeout_seconds)
        return vm_api.ShutdownVmResponse(vm=vm)

    async def RebootVm(
        self, request: vm_api.RebootVmRequest, context: Context
    ) -> vm_api.RebootVmResponse:
        vm = await self._power.reboot(_ref("vm", request.vm), request.timeout_seconds)
        return vm_api.RebootVmResponse(vm=vm)

    async def ResetVm(
        self, request: vm_api.ResetVmRequest, context: Context
    ) -> vm_api.ResetVmResponse:
        return vm_api.ResetVmResponse(vm=await self._power.reset(_ref("vm", request.vm)))

    async def PauseVm(
        self, request: vm_api.PauseVmRequest, context: Context
    ) -> vm_api.PauseVmResponse:
        return vm_api.PauseVmResponse(vm=await self._power.pause(_ref("vm", request.vm)))

    async def ResumeVm(
        self, request: vm_api.ResumeVmRequest, context: Context
    ) -> vm_api.ResumeVmResponse:
        return vm_api.ResumeVmResponse(vm=await self._power.resume(_ref("vm", request.vm)))

    async def CreateVm(
        self, request: vm_api.CreateVmRequest, context: Context
    ) -> vm_api.CreateVmResponse:
        return vm_api.CreateVmResponse(vm=await self._vms.create(check_create(request)))

    async def GetVm(self, request: vm_api.GetVmRequest, context: Context) -> vm_api.GetVmResponse:
        return vm_api.GetVmResponse(vm=await self._vms.get(_ref("vm", request.vm)))

    async def ListVms(
        self, request: vm_api.ListVmsRequest, context: Context
    ) -> vm_api.ListVmsResponse:
        vms, next_page_token = await self._vms.list(check_list(request))
        return vm_api.ListVmsResponse(vms=vms, next_page_token=next_page_token)

    async def DeleteVm(
        self, request: vm_api.DeleteVmRequest, context: Context
    ) -> vm_api.DeleteVmResponse:
        await self._vms.delete(_ref("vm", request.vm))
        return vm_api.DeleteVmResponse()

    async def StartVm(
        self, request: vm_api.StartVmRequest, context: Context
    ) -> vm_api.StartVmResponse:
        return vm_api.StartVmResponse(vm=await self._vms.start(_ref("vm", request.vm)))

    async def StopVm(
        self, request: vm_api.StopVmRequest, context: Context
    ) -> vm_api.StopVmResponse:
        return vm_api.StopVmResponse(vm=await self._vms.stop(_ref("vm", request.vm)))

    async def GetVmGuestInfo(
        self, request: vm_api.GetVmGuestInfoRequest, context: Context
    ) -> vm_api.GetVmGuestInfoResponse:
        return await self._vms.guest_info(
            _ref("vm", request.vm), include_raw_report=request.include_raw_report
        )

    async def RefreshVmGuestInfo(
        self, request: vm_api.RefreshVmGuestInfoRequest, context: Context
    ) -> vm_api.RefreshVmGuestInfoResponse:
        await self._vms.guest_agent.refresh(_ref("vm", request.vm))
        return vm_api.RefreshVmGuestInfoResponse()

    async def ExplainPlacement(
        self, request: vm_api.ExplainPlacementRequest, context: Context
    ) -> vm_api.ExplainPlacementResponse:
        return await self._vms.explain_placement(_ref("vm", request.vm))

    async def WatchVms(
        self, request: vm_api.WatchVmsRequest, context: Context
    ) -> AsyncIterator[vm_api.WatchVmsResponse]:
        sub = self._store.hub.subscribe()
        try:
            seen: dict[str, int] = {}
            newest = 0
            for vm in await self._store.snapshot():
                seen[vm.id] = vm.status.revision
                newest = max(newest, vm.status.revision)
                yield vm_api.WatchVmsResponse(
                    kind=Kind.KIND_SNAPSHOT, vm=vm, revision=vm.status.revision
                )
            yield vm_api.WatchVmsResponse(kind=Kind.KIND_SNAPSHOT_COMPLETE, revision=newest)
            while True:
                change = await sub.next()
                if change.revision <= seen.get(change.vm.id, 0):
                    continue  # already in the snapshot, or older than what was sent
                # Changes committed in order may still be published out of
                # order by concurrent database workers: never send a VM back
                # to an older revision.
                seen[change.vm.id] = change.revision
                yield vm_api.WatchVmsResponse(
                    kind=change.kind, vm=change.vm, revision=change.revision
                )
        finally:
            sub.close()


class HostServicer(host_grpc.HostServiceServicer):
    def __init__(self, hosts: HostService) -> None:
        self._hosts = hosts

    async def AddHost(
        self, request: host_api.AddHostRequest, context: Context
    ) -> host_api.AddHostResponse:
        name = check_name("name", request.name)
        address = check_address("address", request.address)
        return host_api.AddHostResponse(host=await self._hosts.add(name, address))

    async def GetHost(
        self, request: host_api.GetHostRequest, context: Context
    ) -> host_api.GetHostResponse:
        return host_api.GetHostResponse(host=await self._hosts.get(_ref("host", request.host)))

    async def ListHosts(
        self, request: host_api.ListHostsRequest, context: Context
    ) -> host_api.ListHostsResponse:
        return host_api.ListHostsResponse(hosts=await self._hosts.list())

    async def RemoveHost(
        self, request: host_api.RemoveHostRequest, context: Context
    ) -> host_api.RemoveHostResponse:
        await self._hosts.remove(_ref("host", request.host))
        return host_api.RemoveHostResponse()

    async def SetHostMaintenance(
        self, request: host_api.SetHostMaintenanceRequest, context: Context
    ) -> host_api.SetHostMaintenanceResponse:
        host = await self._hosts.set_maintenance(_ref("host", request.host))
        return host_api.SetHostMaintenanceResponse(host=host)

    async def ActivateHost(
        self, request: host_api.ActivateHostRequest, context: Context
    ) -> host_api.ActivateHostResponse:
        host = await self._hosts.activate(_ref("host", request.host))
        return host_api.ActivateHostResponse(host=host)

    async def ConfirmHostDown(
        self, request: host_api.ConfirmHostDownRequest, context: Context
    ) -> host_api.ConfirmHostDownResponse:
        host, vm_ids = await self._hosts.confirm_down(_ref("host", request.host))
        return host_api.ConfirmHostDownResponse(host=host, vm_ids=vm_ids)
