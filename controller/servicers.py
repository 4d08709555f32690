"""The gRPC servicers: validate, call the service, convert what it returns
to messages (controller.convert). Errors are raised as virtplane errors and
become status codes in virtplane_common.status."""

from __future__ import annotations

from typing import Any

import grpc
from virtplane.v1 import affinity_group_service_pb2 as affinity_api
from virtplane.v1 import affinity_group_service_pb2_grpc as affinity_grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import operation_service_pb2_grpc as op_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller import convert
from controller.affinity import AffinityGroups
from controller.balancing_loop import Balancer
from controller.host_service import HostService, HostView
from controller.lifecycle.crud import VmService
from controller.lifecycle.power import VmVerbs
from controller.lifecycle.updates import check_update
from controller.operation_service import OperationService
from controller.requests import call_of
from controller.stream_slots import StreamSlots, client_of
from controller.validation import (
    check_address,
    check_create,
    check_list,
    check_name,
    check_update_properties,
)
from controller.vm_store import Created
from controller.watch_stream import WatchStream
from virtplane_common.errors import InvalidArgument
from virtplane_common.properties import AllowedProperties
from virtplane_common.validation import check_reference

Context = grpc.aio.ServicerContext[Any, Any]


def _ref(field: str, value: str) -> str:
    return check_reference(field, value)


def _created(created: Created) -> vm_pb2.Vm:
    """CreateVm's answer: the new VM, or the answer stored for a repeat
    whose VM was deleted since."""
    if created.row is None:
        assert created.stored is not None
        return created.stored.decode(vm_pb2.Vm)
    return convert.vm(created.row)


class VmServicer(vm_grpc.VmServiceServicer):
    def __init__(
        self,
        vms: VmService,
        verbs: VmVerbs,
        watch: WatchStream,
        properties: AllowedProperties,
        slots: StreamSlots,
    ) -> None:
        self._vms = vms
        self._slots = slots
        self._verbs = verbs
        self._watch = watch
        self._properties = properties

    async def ShutdownVm(
        self, request: vm_api.ShutdownVmRequest, context: Context
    ) -> vm_api.ShutdownVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("ShutdownVm", request)
        vm, op = await self._verbs.shutdown(vm_ref, request.timeout_seconds, call)
        return vm_api.ShutdownVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def RebootVm(
        self, request: vm_api.RebootVmRequest, context: Context
    ) -> vm_api.RebootVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("RebootVm", request)
        vm, op = await self._verbs.reboot(vm_ref, request.timeout_seconds, call)
        return vm_api.RebootVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def ResetVm(
        self, request: vm_api.ResetVmRequest, context: Context
    ) -> vm_api.ResetVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("ResetVm", request)
        vm, op = await self._verbs.reset(vm_ref, call)
        return vm_api.ResetVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def PauseVm(
        self, request: vm_api.PauseVmRequest, context: Context
    ) -> vm_api.PauseVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("PauseVm", request)
        vm, op = await self._verbs.pause(vm_ref, call)
        return vm_api.PauseVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def ResumeVm(
        self, request: vm_api.ResumeVmRequest, context: Context
    ) -> vm_api.ResumeVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("ResumeVm", request)
        vm, op = await self._verbs.resume(vm_ref, call)
        return vm_api.ResumeVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def HibernateVm(
        self, request: vm_api.HibernateVmRequest, context: Context
    ) -> vm_api.HibernateVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("HibernateVm", request)
        vm, op = await self._verbs.hibernate(vm_ref, call)
        return vm_api.HibernateVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def MigrateVm(
        self, request: vm_api.MigrateVmRequest, context: Context
    ) -> vm_api.MigrateVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("MigrateVm", request)
        policy = request.policy if request.HasField("policy") else None
        vm, op = await self._verbs.migrate(vm_ref, request.destination_host, call, policy=policy)
        return vm_api.MigrateVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def CancelMigration(
        self, request: vm_api.CancelMigrationRequest, context: Context
    ) -> vm_api.CancelMigrationResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("CancelMigration", request)
        vm, op = await self._verbs.cancel_migration(vm_ref, call)
        return vm_api.CancelMigrationResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def CreateVm(
        self, request: vm_api.CreateVmRequest, context: Context
    ) -> vm_api.CreateVmResponse:
        spec, call = check_create(request, self._properties), call_of("CreateVm", request)
        return vm_api.CreateVmResponse(vm=_created(await self._vms.create(spec, call)))

    async def GetVm(self, request: vm_api.GetVmRequest, context: Context) -> vm_api.GetVmResponse:
        return vm_api.GetVmResponse(vm=convert.vm(await self._vms.get(_ref("vm", request.vm))))

    async def ListVms(
        self, request: vm_api.ListVmsRequest, context: Context
    ) -> vm_api.ListVmsResponse:
        page = await self._vms.list(check_list(request))
        return vm_api.ListVmsResponse(
            vms=[convert.vm(v) for v in page.vms], next_page_token=page.next_page_token
        )

    async def UpdateVm(
        self, request: vm_api.UpdateVmRequest, context: Context
    ) -> vm_api.UpdateVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("UpdateVm", request)
        update = check_update(request.vm_update, request.update_mask, request.expected_spec_version)
        check_update_properties(update.values, update.paths, self._properties)
        return vm_api.UpdateVmResponse(vm=convert.vm(await self._vms.update(vm_ref, update, call)))

    async def DeleteVm(
        self, request: vm_api.DeleteVmRequest, context: Context
    ) -> vm_api.DeleteVmResponse:
        await self._vms.delete(_ref("vm", request.vm), call_of("DeleteVm", request))
        return vm_api.DeleteVmResponse()

    async def StartVm(
        self, request: vm_api.StartVmRequest, context: Context
    ) -> vm_api.StartVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("StartVm", request)
        vm, op = await self._verbs.start(vm_ref, call)
        return vm_api.StartVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def StopVm(
        self, request: vm_api.StopVmRequest, context: Context
    ) -> vm_api.StopVmResponse:
        vm_ref, call = _ref("vm", request.vm), call_of("StopVm", request)
        vm, op = await self._verbs.stop(vm_ref, call)
        return vm_api.StopVmResponse(vm=convert.vm(vm), operation=convert.operation(op))

    async def GetVmGuestInfo(
        self, request: vm_api.GetVmGuestInfoRequest, context: Context
    ) -> vm_api.GetVmGuestInfoResponse:
        found = await self._vms.guest_info(
            _ref("vm", request.vm), include_raw_report=request.include_raw_report
        )
        stale = convert.guest_facts_stale(list(found.facts))
        return vm_api.GetVmGuestInfoResponse(
            guest=convert.guest_info(list(found.facts)),
            facts=[convert.guest_fact(f, stale) for f in found.facts],
            raw_report=found.raw_report,
        )

    async def RefreshVmGuestInfo(
        self, request: vm_api.RefreshVmGuestInfoRequest, context: Context
    ) -> vm_api.RefreshVmGuestInfoResponse:
        await self._vms.guest_agent.refresh(_ref("vm", request.vm))
        return vm_api.RefreshVmGuestInfoResponse()

    async def ExplainPlacement(
        self, request: vm_api.ExplainPlacementRequest, context: Context
    ) -> vm_api.ExplainPlacementResponse:
        explained = await self._vms.explain_placement(
            _ref("vm", request.vm), for_migration=request.for_migration
        )
        return convert.placement(explained)

    async def WatchVms(  # type: ignore[override]  # writes to its context (virtplane_common.status)
        self, request: vm_api.WatchVmsRequest, context: Context
    ) -> None:
        with self._slots.hold(client_of(context), "WatchVms"):
            await self._watch.serve(request, context)


class OperationServicer(op_grpc.OperationServiceServicer):
    def __init__(self, operations: OperationService, slots: StreamSlots) -> None:
        self._ops = operations
        self._slots = slots

    async def GetOperation(
        self, request: op_api.GetOperationRequest, context: Context
    ) -> op_api.GetOperationResponse:
        return op_api.GetOperationResponse(
            operation=convert.operation(await self._ops.get(_ref("id", request.id)))
        )

    async def ListOperations(
        self, request: op_api.ListOperationsRequest, context: Context
    ) -> op_api.ListOperationsResponse:
        ops, token = await self._ops.page(request)
        return op_api.ListOperationsResponse(
            operations=[convert.operation(op) for op in ops], next_page_token=token
        )

    async def WaitOperation(
        self, request: op_api.WaitOperationRequest, context: Context
    ) -> op_api.WaitOperationResponse:
        with self._slots.hold(client_of(context), "WaitOperation"):
            op = await self._ops.wait(_ref("id", request.id), request.timeout_seconds)
        return op_api.WaitOperationResponse(operation=convert.operation(op))

    async def ListEvents(
        self, request: op_api.ListEventsRequest, context: Context
    ) -> op_api.ListEventsResponse:
        events = await self._ops.events(request)
        return op_api.ListEventsResponse(events=[convert.event(e) for e in events])


class HostServicer(host_grpc.HostServiceServicer):
    def __init__(self, hosts: HostService, balancer: Balancer) -> None:
        self._hosts = hosts
        self._balancer = balancer

    async def AddHost(
        self, request: host_api.AddHostRequest, context: Context
    ) -> host_api.AddHostResponse:
        name = check_name("name", request.name)
        address = check_address("address", request.address)
        call = call_of("AddHost", request)
        answer = await self._hosts.add(name, address, call)
        reply = convert.host_reply(host_api.AddHostResponse, answer)
        if isinstance(answer, HostView) and answer.enrollment is not None:
            reply.enrollment_token = answer.enrollment.secret
            reply.enrollment_token_expires_at.FromDatetime(answer.enrollment.expires_at)
        return reply

    async def GetHost(
        self, request: host_api.GetHostRequest, context: Context
    ) -> host_api.GetHostResponse:
        found = await self._hosts.get(_ref("host", request.host))
        return host_api.GetHostResponse(host=convert.host_view(found))

    async def ListHosts(
        self, request: host_api.ListHostsRequest, context: Context
    ) -> host_api.ListHostsResponse:
        return host_api.ListHostsResponse(
            hosts=[convert.host_view(h) for h in await self._hosts.list()]
        )

    async def RemoveHost(
        self, request: host_api.RemoveHostRequest, context: Context
    ) -> host_api.RemoveHostResponse:
        await self._hosts.remove(_ref("host", request.host), call_of("RemoveHost", request))
        return host_api.RemoveHostResponse()

    async def SetHostMaintenance(
        self, request: host_api.SetHostMaintenanceRequest, context: Context
    ) -> host_api.SetHostMaintenanceResponse:
        call = call_of("SetHostMaintenance", request)
        answer = await self._hosts.set_maintenance(_ref("host", request.host), call)
        return convert.host_reply(host_api.SetHostMaintenanceResponse, answer)

    async def ActivateHost(
        self, request: host_api.ActivateHostRequest, context: Context
    ) -> host_api.ActivateHostResponse:
        call = call_of("ActivateHost", request)
        answer = await self._hosts.activate(_ref("host", request.host), call)
        return convert.host_reply(host_api.ActivateHostResponse, answer)

    async def ConfirmHostDown(
        self, request: host_api.ConfirmHostDownRequest, context: Context
    ) -> host_api.ConfirmHostDownResponse:
        call = call_of("ConfirmHostDown", request)
        return convert.fenced_host(await self._hosts.confirm_down(_ref("host", request.host), call))

    async def ExplainBalancing(
        self, request: host_api.ExplainBalancingRequest, context: Context
    ) -> host_api.ExplainBalancingResponse:
        decision = await self._balancer.explain()
        return convert.balancing(decision, self._balancer.settings)


_POLARITY = {
    affinity_api.AffinityGroup.POLARITY_POSITIVE: True,
    affinity_api.AffinityGroup.POLARITY_NEGATIVE: False,
}


class AffinityGroupServicer(affinity_grpc.AffinityGroupServiceServicer):
    def __init__(self, groups: AffinityGroups) -> None:
        self._groups = groups

    async def CreateAffinityGroup(
        self, request: affinity_api.CreateAffinityGroupRequest, context: Context
    ) -> affinity_api.CreateAffinityGroupResponse:
        name = check_name("name", request.name)
        if request.polarity not in _POLARITY:
            raise InvalidArgument("polarity", "must be POLARITY_POSITIVE or POLARITY_NEGATIVE")
        members = [_ref(f"vms[{i}]", vm) for i, vm in enumerate(request.vms)]
        group = await self._groups.create(
            name, _POLARITY[request.polarity], request.enforcing, members
        )
        return affinity_api.CreateAffinityGroupResponse(group=convert.affinity_group(group))

    async def GetAffinityGroup(
        self, request: affinity_api.GetAffinityGroupRequest, context: Context
    ) -> affinity_api.GetAffinityGroupResponse:
        group = await self._groups.get(_ref("group", request.group))
        return affinity_api.GetAffinityGroupResponse(group=convert.affinity_group(group))

    async def ListAffinityGroups(
        self, request: affinity_api.ListAffinityGroupsRequest, context: Context
    ) -> affinity_api.ListAffinityGroupsResponse:
        groups = await self._groups.list()
        return affinity_api.ListAffinityGroupsResponse(
            groups=[convert.affinity_group(g) for g in groups]
        )

    async def DeleteAffinityGroup(
        self, request: affinity_api.DeleteAffinityGroupRequest, context: Context
    ) -> affinity_api.DeleteAffinityGroupResponse:
        await self._groups.delete(_ref("group", request.group))
        return affinity_api.DeleteAffinityGroupResponse()
