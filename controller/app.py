"""Assembling the controller: database, services, gRPC server."""

from __future__ import annotations

import asyncio
import logging

import grpc
from virtplane.health import Probes, service_names
from virtplane.status import ErrorInterceptor
from virtplane.v1 import (
    affinity_group_service_pb2,
    affinity_group_service_pb2_grpc,
    host_service_pb2,
    host_service_pb2_grpc,
    vm_service_pb2,
    vm_service_pb2_grpc,
)

from controller.affinity import AffinityGroups
from controller.config import ControllerConfig
from controller.ha import HaRestarter
from controller.host_service import HostService
from controller.hosts import HostClients
from controller.monitor import MonitorSettings
from controller.power import PowerVerbs
from controller.servicers import AffinityGroupServicer, HostServicer, VmServicer
from controller.starter import Starter
from controller.vm_service import VmService
from controller.vm_store import VmStore
from controller.watch import WatchHub
from db import migrate
from db.session import Database

log = logging.getLogger(__name__)


class Controller:
    """A running controller; start() then wait(), or stop()."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.db = Database(config.database_url)
        migrate.upgrade(self.db.engine)
        self.store = VmStore(self.db, WatchHub(config.watch_queue_size))
        self.clients = HostClients(config.host_call_timeout)
        self.starter = Starter(self.store, self.clients, config.scheduling_policy)
        self.vms = VmService(self.store, self.clients, self.starter)
        self.hosts = HostService(
            self.store,
            self.clients,
            self.starter,
            MonitorSettings(config.host_retry_seconds, config.reconcile_seconds),
        )
        self.restarter = HaRestarter(self.store, self.starter, config.ha)
        self._resume: asyncio.Task[int] | None = None
        self.server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        vm_service_pb2_grpc.add_VmServiceServicer_to_server(
            VmServicer(self.vms, PowerVerbs(self.store, self.clients), self.store), self.server
        )
        host_service_pb2_grpc.add_HostServiceServicer_to_server(
            HostServicer(self.hosts), self.server
        )
        affinity_group_service_pb2_grpc.add_AffinityGroupServiceServicer_to_server(
            AffinityGroupServicer(AffinityGroups(self.db)), self.server
        )
        self.probes = Probes(
            self.server,
            service_names(
                vm_service_pb2.DESCRIPTOR,
                host_service_pb2.DESCRIPTOR,
                affinity_group_service_pb2.DESCRIPTOR,
            ),
        )
        self.port = self.server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {config.listen}")

    async def start(self) -> None:
        await self.probes.starting()
        await self.server.start()
        await self.hosts.watch_all()
        # Starts a previous controller booked and may not have sent: resent
        # once the monitors had their first look at the hosts.
        self._resume = asyncio.create_task(self._resume_starts(), name="resume-starts")
        self.restarter.start()
        await self.probes.serving()
        log.info("controller listening on %s", self.config.listen)

    async def _resume_starts(self) -> int:
        await asyncio.sleep(self.config.host_retry_seconds)
        return await self.starter.resume()

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 2.0) -> None:
        await self.probes.stopping()
        await self.server.stop(grace)
        await self.restarter.stop()
        if self._resume is not None:
            self._resume.cancel()
            await asyncio.gather(self._resume, return_exceptions=True)
        await self.hosts.close()
        await self.clients.close()
        self.db.close()
