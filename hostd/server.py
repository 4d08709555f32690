"""hostd assembled: state directories, libvirt, the VM registry and the gRPC server."""

from __future__ import annotations

import dataclasses
import logging

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.config import HostdConfig, MigrationConfig
from hostd.hooks import HookSettings
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor
from hostd.servicer import HostAgentServicer
from hostd.validation import Admission
from hostd.virt_type import VirtType, detect_virt_type
from hostd.vms import RunnerSettings, VmService
from virtplane_common.health import Probes, service_names
from virtplane_common.status import ErrorInterceptor

log = logging.getLogger(__name__)

# The controller pings its hosts every 10 s on an idle stream to notice a
# dead one; without these, gRPC answers such pings with GOAWAY
# ("too_many_pings") and the controller sees the host drop.
_SERVER_OPTIONS = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
)


class Hostd:
    """One hostd: ``port = await hostd.start()`` … ``await hostd.stop()``."""

    def __init__(self, config: HostdConfig) -> None:
        self.config = config
        self.layout = StateLayout(config.state_dir)
        self.journal = Journal(config.journal_size)
        self.admission = Admission.of(config)  # a bad allowlist fails here, at start
        self._hypervisor: LibvirtHypervisor | None = None
        self._vms: VmService | None = None
        self._server: grpc.aio.Server | None = None
        self._probes: Probes | None = None
        self.virt_type: VirtType | None = None

    @property
    def vms(self) -> VmService:
        if self._vms is None:
            raise RuntimeError("hostd is not started")
        return self._vms

    async def start(self) -> int:
        """Starts everything; returns the port the gRPC server bound."""
        unreachable = self.layout.prepare()
        if unreachable:
            # libvirt 9 hands QEMU the socket and log as open descriptors, so
            # this matters only where QEMU opens them itself.
            log.info(
                "QEMU, if it opens files under %s itself, cannot: others cannot traverse %s",
                self.layout.root,
                ", ".join(map(str, unreachable)),
            )
        self.virt_type = detect_virt_type(self.config.virt_type)
        self._hypervisor = await LibvirtHypervisor.open(
            self.config.libvirt_uri,
            event_queue_size=self.config.event_queue_size,
            reconnect_max_seconds=self.config.reconnect_max_seconds,
        )
        server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=_SERVER_OPTIONS)
        port = server.add_insecure_port(self.config.listen)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.listen}")
        hooks = HookSettings(self.config.hooks_dir, self.config.hook_timeout_seconds)
        settings = RunnerSettings(
            self.virt_type, self.layout, self.config.channel, hooks=hooks, admission=self.admission
        )
        self._vms = VmService(
            self._hypervisor, self.journal, settings, self._migration_config(port)
        )
        await self._vms.start()
        servicer = HostAgentServicer(self._vms, self.journal, self._hypervisor, self.virt_type)
        pb_grpc.add_HostAgentServiceServicer_to_server(servicer, server)
        self._probes = Probes(server, service_names(pb.DESCRIPTOR))
        await self._probes.starting()
        await server.start()
        await self._probes.serving()
        self._vms.watch_hypervisor(self._hypervisor_reachable)
        self._server = server
        log.info("hostd epoch %s, virt type %s", self.journal.epoch, self.virt_type)
        return port

    def _migration_config(self, port: int) -> MigrationConfig:
        """The migration settings, with what only the running hostd knows filled in."""
        config = self.config.migration
        host = self.config.listen.rpartition(":")[0]
        return dataclasses.replace(
            config,
            hypervisor_uri=config.hypervisor_uri or self.config.libvirt_uri,
            own_address=config.own_address or f"{host}:{port}",
        )

    async def _hypervisor_reachable(self, reachable: bool, reason: str) -> None:
        """Health says NOT_SERVING while libvirt is unreachable: no verb can work."""
        if self._probes is None:
            return
        if reachable:
            await self._probes.serving()
        else:
            log.warning("not serving until libvirt is reached again: %s", reason)
            await self._probes.unavailable()

    async def stop(self, grace: float | None = None) -> None:
        """Stops serving (watch streams end at once), then lets go of libvirt.

        The domains keep running; a new hostd adopts them.
        """
        if self._probes is not None:
            await self._probes.stopping()
        self.journal.close()
        if self._server is not None:
            await self._server.stop(self.config.shutdown_grace_seconds if grace is None else grace)
            self._server = None
        if self._vms is not None:
            await self._vms.stop()
            self._vms = None
        if self._hypervisor is not None:
            await self._hypervisor.close()
            self._hypervisor = None
