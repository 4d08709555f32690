"""Assembling the controller: database, services, gRPC server."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import grpc
from virtplane.v1 import (
    affinity_group_service_pb2,
    affinity_group_service_pb2_grpc,
    enrollment_service_pb2,
    host_service_pb2,
    host_service_pb2_grpc,
    operation_service_pb2,
    operation_service_pb2_grpc,
    principal_service_pb2,
    vm_service_pb2,
    vm_service_pb2_grpc,
)

from controller import operations, retention
from controller.affinity import AffinityGroups
from controller.auth import wiring
from controller.auth.interceptor import Revoked
from controller.balancing_loop import Balancer
from controller.config import ControllerConfig
from controller.enrollment.wiring import HostIdentity
from controller.ha import HaRestarter
from controller.host_service import HostService
from controller.hosts import HostClients
from controller.lifecycle.crud import VmService
from controller.lifecycle.migration_queue import MigrationQueue
from controller.lifecycle.placement import Starter
from controller.lifecycle.power import VmVerbs
from controller.maintenance import Evacuator
from controller.metrics.wiring import ControllerMetrics
from controller.monitor import MonitorSettings
from controller.operation_service import OperationService
from controller.pki.ca import CertificateAuthority
from controller.servicers import (
    AffinityGroupServicer,
    HostServicer,
    OperationServicer,
    VmServicer,
)
from controller.stream_slots import StreamSlots
from controller.tls import ControllerTls, warn_insecure
from controller.vm_store import VmStore
from controller.watch import WatchHub
from controller.watch_stream import WatchStream
from controller.web.assets import PageApp
from controller.web.grpc_web import GrpcWebApp, Interceptor
from controller.web.server import WebServer
from db import migrate
from db.session import Database
from virtplane_common.grpc_limits import SERVER_OPTIONS
from virtplane_common.health import Probes, service_names
from virtplane_common.listening import listen
from virtplane_common.properties import AllowedProperties
from virtplane_common.rpc_context import BindRequest
from virtplane_common.status import ErrorInterceptor

log = logging.getLogger(__name__)


def _open_tls(config: ControllerConfig, ca: CertificateAuthority | None) -> ControllerTls | None:
    """The controller's TLS; None (with a loud warning) in insecure development."""
    if config.insecure_plaintext_dev:
        warn_insecure()
        return None
    if not config.auth_required:
        log.warning("INSECURE: clients are not authenticated (require_auth off)")
    if config.plaintext_hosts:
        log.warning("INSECURE: hosts are spoken to in PLAINTEXT (development only)")
    return ControllerTls.open(config, ca)


class Controller:
    """A running controller; start() then wait(), or stop()."""

    def __init__(
        self,
        config: ControllerConfig,
        *,
        ca: CertificateAuthority | None = None,
        revoked: Revoked | None = None,
    ) -> None:
        self.config = config
        self.properties = AllowedProperties.compile(config.vm_properties)  # fails at start
        self.db = Database(config.database_url)
        migrate.upgrade(self.db.engine)
        self.store = VmStore(self.db, WatchHub(config.watch_queue_size))
        self.tls = _open_tls(config, ca)
        ca = self.tls.ca if self.tls is not None else ca
        self.identity = HostIdentity(self.db, config, ca)  # enrollment, revocation, renewal
        self.clients = HostClients(config.host_call_timeout, self._host_credentials())
        self.starter = Starter(self.store, self.clients, config.scheduling_policy)
        self.vms = VmService(self.store, self.clients, self.starter)
        self.hosts = HostService(
            self.store,
            self.clients,
            self.starter,
            MonitorSettings(config.host_retry_seconds, config.reconcile_seconds),
            self.identity,
        )
        self.restarter = HaRestarter(self.store, self.starter, config.ha)
        self._resend: asyncio.Task[int] | None = None
        self.auth = wiring.authenticator(self.db, self.identity.revoked(revoked))
        # One chain of the same instances for the gRPC port and the page's
        # (controller.web); the gRPC port's observers go before it.
        interceptors = [ErrorInterceptor(), *wiring.interceptors(config, self.auth)]
        self.metrics, self.server = self._serving(config, interceptors)
        self.web_rpc = GrpcWebApp(interceptors) if config.web_listen else None  # the page's
        self.verbs, self.migrations = self._migration_parts(config)
        self.evacuator, self.balancer = self._fleet_loops(config)
        self._add_services()
        wiring.install(self._rpc_servers(), self.db, self.auth, ca, config)
        self.identity.install(self.server)
        self.probes = Probes(
            self.server,
            service_names(
                vm_service_pb2.DESCRIPTOR,
                host_service_pb2.DESCRIPTOR,
                operation_service_pb2.DESCRIPTOR,
                affinity_group_service_pb2.DESCRIPTOR,
                principal_service_pb2.DESCRIPTOR,
                enrollment_service_pb2.DESCRIPTOR,
            ),
        )
        self._pruning: asyncio.Task[None] | None = None
        self._renewal: asyncio.Task[None] | None = None
        self.port, self.mtls_port = self._add_ports()
        self.web = self._web_port()

    def _fleet_loops(self, config: ControllerConfig) -> tuple[Evacuator, Balancer]:
        """The hosts' evacuator (woken by VM changes and by SetHostMaintenance)
        and the balancer."""
        evacuator = Evacuator(
            self.db,
            self.verbs,
            config.scheduling_policy,
            self.hosts.unwatch,
            config.evacuation_poll_seconds,
        )
        self.store.listeners.append(evacuator.wakeup.changed)
        self.hosts.evacuate_now = evacuator.wakeup.nudge
        return evacuator, Balancer(self.db, self.verbs, config.balancing, config.scheduling_policy)

    def _serving(
        self, config: ControllerConfig, interceptors: list[Interceptor]
    ) -> tuple[ControllerMetrics | None, grpc.aio.Server]:
        """The metrics (with --metrics-listen) and the gRPC server. Its
        interceptors: the observers first, to see how every call ends (its
        request id bound for the log, its metrics), then errors, then auth."""
        metrics = None
        if config.metrics_listen:
            metrics = ControllerMetrics(config.metrics_listen, self.db)
            metrics.watch_monitors(self.hosts.monitors)
        observers = [BindRequest(), *([metrics.rpc] if metrics else [])]
        server = grpc.aio.server(
            interceptors=[*observers, *interceptors],
            options=SERVER_OPTIONS,
        )
        return metrics, server

    def _migration_parts(self, config: ControllerConfig) -> tuple[VmVerbs, MigrationQueue]:
        """The verbs (MigrateVm among them) and the queue of waiting migrations,
        with the migrations' bandwidth cap, limits and convergence policy."""
        mib_s, limits = config.migration_max_bandwidth_mib, config.migration_limits
        converge = config.migration_policy
        verbs = VmVerbs(self.store, self.clients, self.starter, mib_s, limits, convergence=converge)
        queue = MigrationQueue(
            self.store, self.clients, config.scheduling_policy, limits, mib_s, convergence=converge
        )
        return verbs, queue

    def _rpc_servers(self) -> list[grpc.aio.Server]:
        """Where the clients' services are added: the gRPC server, and the
        page's gRPC-Web when --web-listen is set."""
        return [self.server] if self.web_rpc is None else [self.server, self.web_rpc]

    def _add_services(self) -> None:
        """The VM, operation, host and affinity group services on the server
        (and the page's); WatchVms and WaitOperation share one per-client limit."""
        slots = StreamSlots(self.config.max_streams_per_client)
        vm = VmServicer(self.vms, self.verbs, WatchStream(self.store), self.properties, slots)
        ops = OperationServicer(OperationService(self.db, self.store.hub), slots)
        host = HostServicer(self.hosts, self.balancer)
        group = AffinityGroupServicer(AffinityGroups(self.db))
        for server in self._rpc_servers():
            vm_service_pb2_grpc.add_VmServiceServicer_to_server(vm, server)
            operation_service_pb2_grpc.add_OperationServiceServicer_to_server(ops, server)
            host_service_pb2_grpc.add_HostServiceServicer_to_server(host, server)
            affinity_group_service_pb2_grpc.add_AffinityGroupServiceServicer_to_server(
                group, server
            )

    def _web_port(self) -> WebServer | None:
        """--web-listen's port: TLS with the controller's certificate, unless plaintext."""
        if self.web_rpc is None:
            return None
        page = PageApp(self.config.web_root, self.web_rpc)
        files = self.tls.settings.controller_files if self.tls is not None else None
        return WebServer(page, self.config.web_listen, files)

    def _host_credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls is None or self.config.plaintext_hosts:
            return None
        return self.tls.host_credentials()

    def _add_ports(self) -> tuple[int, int]:
        """--listen's port and --listen-mtls's (0 if none)."""
        if self.tls is not None:
            return self.tls.add_ports(self.server, self.config)
        return listen(self.server, self.config.listen), 0

    def _renewed(self, credentials: grpc.ChannelCredentials) -> None:
        if self.web is not None:
            self.web.renewed()
        if not self.config.plaintext_hosts:
            self.clients.renew(credentials)

    async def start(self) -> None:
        await self.probes.starting()
        failed = await self.db.run(operations.recover)
        if failed:
            log.info("%d operations the hosts had not accepted ended FAILED", failed)
        await self.server.start()
        if self.web is not None:
            self.web.start()
            log.info("web page at %s://%s", self.web.scheme, self.config.web_listen)
        await self.hosts.watch_all()
        keep = retention.Retention(
            request_ids=dt.timedelta(hours=self.config.request_id_retention_hours),
            history=dt.timedelta(days=self.config.history_retention_days),
        )
        self._pruning = asyncio.create_task(retention.run(self.db, keep), name="pruning")
        # Starts a previous controller booked and may not have sent: resent
        # once the monitors had their first look at the hosts.
        self._resend = asyncio.create_task(self._resend_starts(), name="resend-starts")
        self.restarter.start()
        self.migrations.start()
        self.evacuator.start()
        self.balancer.start()
        if self.tls is not None:
            renewal = self.tls.keep_renewed(self._renewed)
            self._renewal = asyncio.create_task(renewal, name="certificate-renewal")
        if self.metrics is not None:
            log.info(
                "metrics on http://%s:%d/metrics", self.metrics.endpoint.host, self.metrics.start()
            )
        await self.probes.serving()
        log.info(
            "controller listening on %s (%s)",
            self.config.listen,
            "PLAINTEXT" if self.tls is None else "TLS",
        )

    async def _resend_starts(self) -> int:
        await asyncio.sleep(self.config.host_retry_seconds)
        return await self.starter.resend_pending()

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 2.0) -> None:
        await self.probes.stopping()
        if self.web_rpc is not None and self.web is not None:
            self.web_rpc.stop_streams()
            await self.web.stop()
        await self.server.stop(grace)
        if self.metrics is not None:
            self.metrics.stop()
        await self.restarter.stop()
        await self.evacuator.stop()
        await self.balancer.stop()
        await self.migrations.stop()
        for task in (self._pruning, self._resend, self._renewal):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.hosts.close()
        await self.clients.close()
        self.db.close()
