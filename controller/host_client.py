"""Calls from the controller to one host's hostd, with hostd's gRPC errors
translated into the controller's errors at this boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import host_identity_service_pb2 as identity_pb
from virtplane.v1 import host_identity_service_pb2_grpc as identity_grpc

from controller.errors import CreateRefused, HostBusy, HostUnreachable, VmNotFound
from virtplane_common.errors import FailedPrecondition, InvalidArgument, VirtplaneError
from virtplane_common.grpc_limits import MESSAGE_SIZE_OPTIONS
from virtplane_common.rpc_context import SendRequest
from virtplane_common.tls.credentials import host_options

_R = TypeVar("_R")

# The heartbeat: a ping every 10 s that must be answered within 5 s, idle
# or not (a hung hostd keeps its socket open; only an unanswered ping shows
# it). gRPC otherwise spaces pings on a stream without data 5 min apart,
# and waits a minute for an answer.
_CHANNEL_OPTIONS = (
    *MESSAGE_SIZE_OPTIONS,
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 5_000),
)


def translate(host: str, exc: grpc.aio.AioRpcError, vm_id: str = "") -> VirtplaneError:
    """The controller's error for a failed call to host."""
    code, detail = exc.code(), exc.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return HostUnreachable(host, detail or code.name)
    if code is grpc.StatusCode.NOT_FOUND and vm_id:
        return VmNotFound(vm_id)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument("spec", f"host {host!r} rejected the VM: {detail}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return HostBusy(host, detail)
    return FailedPrecondition(f"host {host!r} refused: {code.name}: {detail}")


def open_channel(
    address: str, host_id: str, credentials: grpc.ChannelCredentials | None
) -> grpc.aio.Channel:
    """A channel to the hostd of host_id: mutual TLS that completes only with
    the host whose certificate names host_id; plaintext when credentials is
    None (development only). Each call carries the caller's request and
    operation ids (virtplane_common.rpc_context), for hostd's log."""
    interceptors: Sequence[Any] = [SendRequest()]
    if credentials is None:
        return grpc.aio.insecure_channel(
            address, options=_CHANNEL_OPTIONS, interceptors=interceptors
        )
    options = [*_CHANNEL_OPTIONS, *host_options(host_id)]
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


class HostClient:
    """One hostd, reached over one channel (a new one when the controller's
    certificate is renewed: calls already running finish on the old one)."""

    def __init__(
        self,
        name: str,
        address: str,
        timeout: float,
        *,
        host_id: str = "",
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.host_id = host_id
        self._timeout = timeout
        self._channel = open_channel(address, host_id, credentials)
        self._stub = pb_grpc.HostAgentServiceStub(self._channel)
        self._identity = identity_grpc.HostIdentityServiceStub(self._channel)
        self._retired: list[grpc.aio.Channel] = []

    def reconnect(self, credentials: grpc.ChannelCredentials | None) -> None:
        """New calls go over a new channel with credentials; the old one is
        kept open (for streams on it) until close()."""
        self._retired.append(self._channel)
        self._channel = open_channel(self.address, self.host_id, credentials)
        self._stub = pb_grpc.HostAgentServiceStub(self._channel)
        self._identity = identity_grpc.HostIdentityServiceStub(self._channel)

    async def close(self) -> None:
        for channel in (*self._retired, self._channel):
            await channel.close(None)
        self._retired.clear()

    async def capabilities(self) -> pb.GetHostCapabilitiesResponse:
        try:
            return await self._stub.GetHostCapabilities(
                pb.GetHostCapabilitiesRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc) from exc

    async def create_vm(self, config: pb.VmConfig, request_id: str = "") -> pb.HostVm:
        """Asks the host to run (or restore) the VM; repeating it with the
        same request_id never makes a second one. A host that answers with an error
        raises CreateRefused (the VM is not there), except ALREADY_EXISTS (a
        VM of this id is there under another key); one that does not answer
        raises HostUnreachable (the VM may or may not be there). A VM whose
        spec says start_paused comes up PAUSED."""
        request = pb.HostAgentServiceCreateVmRequest(
            config=config, request_id=request_id, start_paused=config.spec.start_paused
        )
        try:
            reply = await self._stub.CreateVm(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            error = translate(self.name, exc)
            if isinstance(error, HostUnreachable) or exc.code() is grpc.StatusCode.ALREADY_EXISTS:
                raise error from exc
            raise CreateRefused(self.name, f"{exc.code().name}: {exc.details()}") from exc
        return reply.vm

    async def destroy_vm(self, vm_id: str) -> None:
        try:
            await self._stub.DestroyVm(
                pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc, vm_id) from exc

    async def shutdown_vm(self, vm_id: str, timeout_seconds: int) -> pb.HostVm:
        request = pb.HostAgentServiceShutdownVmRequest(vm_id=vm_id, timeout_seconds=timeout_seconds)
        return (await self._verb(self._stub.ShutdownVm, request, vm_id)).vm

    async def reboot_vm(self, vm_id: str, timeout_seconds: int) -> pb.HostVm:
        request = pb.HostAgentServiceRebootVmRequest(vm_id=vm_id, timeout_seconds=timeout_seconds)
        return (await self._verb(self._stub.RebootVm, request, vm_id)).vm

    async def reset_vm(self, vm_id: str) -> pb.HostVm:
        request = pb.HostAgentServiceResetVmRequest(vm_id=vm_id)
        return (await self._verb(self._stub.ResetVm, request, vm_id)).vm

    async def pause_vm(self, vm_id: str) -> pb.HostVm:
        request = pb.HostAgentServicePauseVmRequest(vm_id=vm_id)
        return (await self._verb(self._stub.PauseVm, request, vm_id)).vm

    async def resume_vm(self, vm_id: str) -> pb.HostVm:
        request = pb.HostAgentServiceResumeVmRequest(vm_id=vm_id)
        return (await self._verb(self._stub.ResumeVm, request, vm_id)).vm

    async def hibernate_vm(self, vm_id: str) -> pb.HostVm:
        request = pb.HostAgentServiceHibernateVmRequest(vm_id=vm_id)
        return (await self._verb(self._stub.HibernateVm, request, vm_id)).vm

    async def migrate_vm(
        self,
        vm_id: str,
        destination_id: str,
        destination_address: str,
        max_mib_s: int = 0,
        policy: pb.HostMigrationPolicy | None = None,
    ) -> pb.HostVm:
        """Asks this host (the source) to move the VM live to the destination
        (at most max_mib_s MiB/s; 0: no cap; converging by policy); it
        prepares the destination and answers with the VM MIGRATING_FROM."""
        request = pb.HostAgentServiceMigrateVmRequest(
            vm_id=vm_id,
            destination_address=destination_address,
            destination_host_id=destination_id,
            max_bandwidth_mib_per_second=max_mib_s,
            policy=policy,
        )
        return (await self._verb(self._stub.MigrateVm, request, vm_id)).vm

    async def cancel_migration(self, vm_id: str) -> pb.HostVm:
        request = pb.HostAgentServiceCancelMigrationRequest(vm_id=vm_id)
        return (await self._verb(self._stub.CancelMigration, request, vm_id)).vm

    async def _verb(self, rpc: Callable[..., Awaitable[_R]], request: object, vm_id: str) -> _R:
        try:
            return await rpc(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc, vm_id) from exc

    async def vm_stats(self, vm_id: str) -> pb.VmStats:
        request = pb.HostAgentServiceGetVmStatsRequest(vm_id=vm_id)
        return (await self._verb(self._stub.GetVmStats, request, vm_id)).stats

    async def refresh_guest(self, vm_id: str) -> None:
        request = pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id)
        await self._verb(self._stub.RefreshVmGuestInfo, request, vm_id)

    async def guest_report(self, vm_id: str) -> pb.HostAgentServiceGetVmGuestReportResponse:
        request = pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id)
        return await self._verb(self._stub.GetVmGuestReport, request, vm_id)

    async def list_vms(self) -> pb.HostAgentServiceListVmsResponse:
        """Every VM on the host, and the journal position the list reflects."""
        try:
            return await self._stub.ListVms(
                pb.HostAgentServiceListVmsRequest(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc) from exc

    async def events(self, after_sequence: int) -> AsyncIterator[pb.HostEvent]:
        """The host's events after after_sequence, as long as the stream lasts."""
        call = self._stub.WatchEvents(pb.WatchEventsRequest(after_sequence=after_sequence))
        try:
            async for reply in call:
                yield reply.event
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc) from exc
        finally:
            call.cancel()

    # HostIdentityService (controller.enrollment): renewal and revocations.

    async def prepare_renewal(self) -> bytes:
        """A signing request (PEM) for a new key the host keeps pending."""
        request = identity_pb.PrepareRenewalRequest()
        return (await self._call(self._identity.PrepareRenewal, request)).csr_pem.encode()

    async def install_certificate(self, cert_pem: bytes) -> None:
        request = identity_pb.InstallCertificateRequest(certificate_pem=cert_pem.decode())
        await self._call(self._identity.InstallCertificate, request)

    async def set_revocation_list(self, crl_pem: bytes) -> None:
        request = identity_pb.SetRevocationListRequest(revocation_list_pem=crl_pem.decode())
        await self._call(self._identity.SetRevocationList, request)

    async def _call(self, rpc: Callable[..., Awaitable[_R]], request: object) -> _R:
        try:
            return await rpc(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(self.name, exc) from exc
