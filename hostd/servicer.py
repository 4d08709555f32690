"""HostAgentService over gRPC: proto in, a call on hostd's parts, proto out.

Requests become hostd's domain types and results go back to messages
through hostd.convert, here and nowhere else on the serving side.

Errors are raised as hostd/virtplane errors and become status codes in
virtplane_common.status.ErrorInterceptor, installed on the server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd import convert
from hostd import request_bounds as bounds
from hostd.guest_info import timestamp
from hostd.hypervisor import DomainStats, Hypervisor
from hostd.journal import Journal
from hostd.listing import GUEST_BUDGET_BYTES, listed_vms
from hostd.model import PeerHost, VmStatus
from hostd.virt_type import VirtType
from hostd.vms import VmService

Context = grpc.aio.ServicerContext[Any, Any]


class HostAgentServicer(pb_grpc.HostAgentServiceServicer):
    def __init__(
        self,
        vms: VmService,
        journal: Journal,
        hypervisor: Hypervisor,
        virt_type: VirtType,
        list_budget: int = GUEST_BUDGET_BYTES,
    ) -> None:
        """list_budget: the most the guest facts of one VM list may weigh."""
        self._vms = vms
        self._list_budget = list_budget
        self._journal = journal
        self._hypervisor = hypervisor
        self._virt_type = virt_type

    async def CreateVm(
        self, request: pb.HostAgentServiceCreateVmRequest, context: Context
    ) -> pb.HostAgentServiceCreateVmResponse:
        vm = await self._vms.create(
            convert.config_from_proto(request.config),
            request_id=bounds.request_id(request.request_id),
            start_paused=request.start_paused,
        )
        return pb.HostAgentServiceCreateVmResponse(vm=convert.status_to_proto(vm))

    async def DestroyVm(
        self, request: pb.HostAgentServiceDestroyVmRequest, context: Context
    ) -> pb.HostAgentServiceDestroyVmResponse:
        await self._vms.destroy(request.vm_id)
        return pb.HostAgentServiceDestroyVmResponse()

    async def ShutdownVm(
        self, request: pb.HostAgentServiceShutdownVmRequest, context: Context
    ) -> pb.HostAgentServiceShutdownVmResponse:
        vm = await self._vms.shutdown(request.vm_id, request.timeout_seconds)
        return pb.HostAgentServiceShutdownVmResponse(vm=convert.status_to_proto(vm))

    async def RebootVm(
        self, request: pb.HostAgentServiceRebootVmRequest, context: Context
    ) -> pb.HostAgentServiceRebootVmResponse:
        vm = await self._vms.reboot(request.vm_id, request.timeout_seconds)
        return pb.HostAgentServiceRebootVmResponse(vm=convert.status_to_proto(vm))

    async def ResetVm(
        self, request: pb.HostAgentServiceResetVmRequest, context: Context
    ) -> pb.HostAgentServiceResetVmResponse:
        return pb.HostAgentServiceResetVmResponse(
            vm=convert.status_to_proto(await self._vms.reset(request.vm_id))
        )

    async def PauseVm(
        self, request: pb.HostAgentServicePauseVmRequest, context: Context
    ) -> pb.HostAgentServicePauseVmResponse:
        return pb.HostAgentServicePauseVmResponse(
            vm=convert.status_to_proto(await self._vms.pause(request.vm_id))
        )

    async def ResumeVm(
        self, request: pb.HostAgentServiceResumeVmRequest, context: Context
    ) -> pb.HostAgentServiceResumeVmResponse:
        return pb.HostAgentServiceResumeVmResponse(
            vm=convert.status_to_proto(await self._vms.resume(request.vm_id))
        )

    async def HibernateVm(
        self, request: pb.HostAgentServiceHibernateVmRequest, context: Context
    ) -> pb.HostAgentServiceHibernateVmResponse:
        return pb.HostAgentServiceHibernateVmResponse(
            vm=convert.status_to_proto(await self._vms.hibernate(request.vm_id))
        )

    async def MigrateVm(
        self, request: pb.HostAgentServiceMigrateVmRequest, context: Context
    ) -> pb.HostAgentServiceMigrateVmResponse:
        destination = PeerHost(
            bounds.address("destination_address", request.destination_address),
            bounds.host_id("destination_host_id", request.destination_host_id),
        )
        policy = convert.policy_from_proto(request.policy)
        vm = await self._vms.migrate(
            request.vm_id, destination, request.max_bandwidth_mib_per_second, policy
        )
        return pb.HostAgentServiceMigrateVmResponse(vm=convert.status_to_proto(vm))

    async def CancelMigration(
        self, request: pb.HostAgentServiceCancelMigrationRequest, context: Context
    ) -> pb.HostAgentServiceCancelMigrationResponse:
        vm = await self._vms.cancel_migration(request.vm_id)
        return pb.HostAgentServiceCancelMigrationResponse(vm=convert.status_to_proto(vm))

    async def GetMigrationProgress(
        self, request: pb.HostAgentServiceGetMigrationProgressRequest, context: Context
    ) -> pb.HostAgentServiceGetMigrationProgressResponse:
        progress = convert.progress_to_proto(self._vms.migration_progress(request.vm_id))
        return pb.HostAgentServiceGetMigrationProgressResponse(progress=progress)

    async def PrepareIncomingMigration(
        self, request: pb.HostAgentServicePrepareIncomingMigrationRequest, context: Context
    ) -> pb.HostAgentServicePrepareIncomingMigrationResponse:
        source = bounds.address("source_address", request.source_address)
        config = convert.config_from_proto(request.config)
        destination = await self._vms.prepare_incoming(config, source)
        return pb.HostAgentServicePrepareIncomingMigrationResponse(
            destination=convert.destination_to_proto(destination)
        )

    async def GetVmStats(
        self, request: pb.HostAgentServiceGetVmStatsRequest, context: Context
    ) -> pb.HostAgentServiceGetVmStatsResponse:
        vm, stats = await self._vms.stats(request.vm_id)
        return pb.HostAgentServiceGetVmStatsResponse(stats=_vm_stats(vm, stats))

    async def ListVms(
        self, request: pb.HostAgentServiceListVmsRequest, context: Context
    ) -> pb.HostAgentServiceListVmsResponse:
        vms, _ = listed_vms(self._vms.list(), self._list_budget)
        return pb.HostAgentServiceListVmsResponse(
            vms=vms,
            host_epoch=self._journal.epoch,
            sequence=self._journal.last_sequence,
        )

    async def GetHostCapabilities(
        self, request: pb.GetHostCapabilitiesRequest, context: Context
    ) -> pb.GetHostCapabilitiesResponse:
        info = await self._hypervisor.host_info()
        return pb.GetHostCapabilitiesResponse(
            hostname=info.hostname,
            cpus=info.cpus,
            memory_total_mib=info.memory_total_mib,
            memory_free_mib=info.memory_free_mib,
            hypervisor_type=self._virt_type.value,
            consoles=[pb.Console.Kind.ValueType(kind) for kind in self._vms.consoles],
        )

    async def GetHostStats(
        self, request: pb.HostAgentServiceGetHostStatsRequest, context: Context
    ) -> pb.HostAgentServiceGetHostStatsResponse:
        info = await self._hypervisor.host_info()
        running, suspended = self._vms.counts()
        return pb.HostAgentServiceGetHostStatsResponse(
            hostname=info.hostname,
            cpus=info.cpus,
            memory_total_mib=info.memory_total_mib,
            memory_free_mib=info.memory_free_mib,
            vms_running=running,
            vms_suspended=suspended,
            domains_active=info.domains_active,
            hypervisor_type=self._virt_type.value,
            time=_now(),
        )

    async def GetRecoveryReport(
        self, request: pb.HostAgentServiceGetRecoveryReportRequest, context: Context
    ) -> pb.HostAgentServiceGetRecoveryReportResponse:
        report = convert.report_to_proto(self._vms.recovery_report)
        return pb.HostAgentServiceGetRecoveryReportResponse(report=report)

    async def RefreshVmGuestInfo(
        self, request: pb.HostAgentServiceRefreshVmGuestInfoRequest, context: Context
    ) -> pb.HostAgentServiceRefreshVmGuestInfoResponse:
        await self._vms.guest_agent.refresh(request.vm_id)
        return pb.HostAgentServiceRefreshVmGuestInfoResponse()

    async def GetVmGuestReport(
        self, request: pb.HostAgentServiceGetVmGuestReportRequest, context: Context
    ) -> pb.HostAgentServiceGetVmGuestReportResponse:
        report = self._vms.guest_agent.last_report(request.vm_id)
        reply = pb.HostAgentServiceGetVmGuestReportResponse(
            report_json=report.json, truncated=report.truncated, channel=report.channel
        )
        if report.received_ns:
            reply.received_time.CopyFrom(timestamp(report.received_ns))
        return reply

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        after = request.after_sequence
        if self._journal.needs_snapshot(after, request.host_epoch):
            snapshot = pb.HostSnapshot(
                host_epoch=self._journal.epoch,
                sequence=self._journal.last_sequence,
                time=_now(),
                vms=listed_vms(self._vms.list(), self._list_budget)[0],
            )
            yield pb.WatchEventsResponse(snapshot=snapshot)
            after = snapshot.sequence
        async for event in self._journal.follow(after):
            yield pb.WatchEventsResponse(event=event)


def _now() -> Timestamp:
    return timestamp(time.time_ns())


def _vm_stats(vm: VmStatus, stats: DomainStats) -> pb.VmStats:
    return pb.VmStats(
        vm_id=vm.vm_id,
        state=pb.HostVm.State.ValueType(vm.state),
        domain_state=stats.state_name,
        domain_state_reason=stats.state_reason,
        cpu_time_ns=stats.cpu_time_ns,
        cpu_user_ns=stats.cpu_user_ns,
        cpu_system_ns=stats.cpu_system_ns,
        vcpus=stats.vcpus,
        memory_current_kib=stats.memory_current_kib,
        memory_maximum_kib=stats.memory_maximum_kib,
        memory_rss_kib=stats.memory_rss_kib,
        disks=[
            pb.DiskStats(
                name=d.name,
                path=d.path,
                read_requests=d.read_requests,
                read_bytes=d.read_bytes,
                write_requests=d.write_requests,
                write_bytes=d.write_bytes,
            )
            for d in stats.disks
        ],
        nics=[
            pb.NicStats(
                name=n.name,
                rx_bytes=n.rx_bytes,
                rx_packets=n.rx_packets,
                rx_errors=n.rx_errors,
                rx_drops=n.rx_drops,
                tx_bytes=n.tx_bytes,
                tx_packets=n.tx_packets,
                tx_errors=n.tx_errors,
                tx_drops=n.tx_drops,
            )
            for n in stats.nics
        ],
        time=_now(),
    )
