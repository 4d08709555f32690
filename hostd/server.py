"""hostd assembled: state directories, its identity, libvirt, the VM registry
and the gRPC server.

The server speaks mutual TLS only, with the host's identity (hostd.identity,
got by enrollment when a token is given: hostd.enrollment), and every call
passes hostd.peer_auth. --insecure-plaintext-dev serves plaintext and checks
nobody, with a loud warning."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd import qemu_tls
from hostd.config import HostdConfig, MigrationConfig
from hostd.enrollment import enroll
from hostd.hooks import HookSettings
from hostd.identity import HostIdentity
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor, calls
from hostd.metrics import HostdMetrics
from hostd.peer_auth import PeerAuthInterceptor
from hostd.peers import GrpcPeers, check_template
from hostd.servicer import HostAgentServicer
from hostd.servicer_identity import add_identity_service
from hostd.validation import Admission
from hostd.virt_type import VirtType, detect_virt_type
from hostd.vms import RunnerSettings, VmService
from virtplane_common.grpc_limits import SERVER_OPTIONS
from virtplane_common.health import Probes, service_names
from virtplane_common.listening import listen
from virtplane_common.rpc_context import BindRequest
from virtplane_common.status import ErrorInterceptor
from virtplane_common.tls.files import KeyPair

log = logging.getLogger(__name__)

# The controller pings its hosts every 10 s on an idle stream to notice a
# dead one; without these, gRPC answers such pings with GOAWAY
# ("too_many_pings") and the controller sees the host drop.
_SERVER_OPTIONS = (
    *SERVER_OPTIONS,
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
)
INSECURE_WARNING = (
    "INSECURE: --insecure-plaintext-dev: hostd serves PLAINTEXT on %s and checks NO caller; "
    "anyone who reaches it can run, destroy and migrate VMs on this host. Development only."
)


class Hostd:
    """One hostd: ``port = await hostd.start()`` … ``await hostd.stop()``."""

    def __init__(self, config: HostdConfig) -> None:
        self.config = config
        self.layout = StateLayout(config.state_dir)
        self.journal = Journal(config.journal_size, max_bytes=config.journal_max_bytes)
        self.admission = Admission.of(config)  # a bad allowlist fails here, at start
        check_template(config.migration.peer_hypervisor_uri)
        self.identity: HostIdentity | None = None
        """This host's identity; None in plaintext development."""
        self._hypervisor: LibvirtHypervisor | None = None
        self._vms: VmService | None = None
        self._server: grpc.aio.Server | None = None
        self._probes: Probes | None = None
        self.virt_type: VirtType | None = None
        self.metrics = HostdMetrics(config.metrics_listen) if config.metrics_listen else None

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
        self.identity = await self._identity()
        self.virt_type = detect_virt_type(self.config.virt_type)
        pool = calls.configure(
            self.config.libvirt_threads, self.config.libvirt_call_timeout_seconds
        )
        if self.metrics is not None:
            pool.observer = self.metrics.libvirt_call
        self._hypervisor = await LibvirtHypervisor.open(
            self.config.libvirt_uri,
            event_queue_size=self.config.event_queue_size,
            reconnect_max_seconds=self.config.reconnect_max_seconds,
        )
        server, port = self._server_on_port()
        hooks = HookSettings(self.config.hooks_dir, self.config.hook_timeout_seconds)
        settings = RunnerSettings(
            self.virt_type, self.layout, self.config.channel, hooks=hooks, admission=self.admission
        )
        self._vms = VmService(
            self._hypervisor,
            self.journal,
            settings,
            self._migration_config(port),
            GrpcPeers(self.identity),
        )
        await self._vms.start()
        if self.metrics is not None:
            self.metrics.watch(self._vms.registered, self.journal)
            log.info(
                "metrics on http://%s:%d/metrics", self.metrics.endpoint.host, self.metrics.start()
            )
        servicer = HostAgentServicer(
            self._vms,
            self.journal,
            self._hypervisor,
            self.virt_type,
            list_budget=self.config.list_guest_budget_bytes,
        )
        pb_grpc.add_HostAgentServiceServicer_to_server(servicer, server)
        services = [pb.DESCRIPTOR]
        if self.identity is not None:
            services.append(add_identity_service(server, self.identity))
        self._probes = Probes(server, service_names(*services))
        await self._probes.starting()
        await server.start()
        await self._probes.serving()
        self._vms.watch_hypervisor(self._hypervisor_reachable)
        self._server = server
        log.info("hostd epoch %s, virt type %s", self.journal.epoch, self.virt_type)
        return port

    async def _identity(self) -> HostIdentity | None:
        """The host's identity, enrolled first when a token is given; None in
        plaintext development."""
        if self.config.insecure_plaintext_dev:
            log.warning(INSECURE_WARNING, self.config.listen)
            return None
        if self.config.enrollment.token:
            await enroll(self.config.state_dir, self.config.enrollment)
        identity = HostIdentity.load(self.config.state_dir)
        log.info("this is host %s", identity.host_id)
        if self.config.migration.tls:
            self._give_qemu(identity.pair)
            identity.on_renewed(self._give_qemu)
        return identity

    def _give_qemu(self, pair: KeyPair) -> None:
        """Hands QEMU this host's pair for TLS migration (hostd.qemu_tls); a
        folder hostd cannot write fails migrations, not the host."""
        folder = self.config.migration.qemu_tls_dir
        try:
            qemu_tls.install(pair, folder)
        except OSError as exc:
            log.error(
                "QEMU cannot get this host's certificate for TLS migration in %s: %s", folder, exc
            )

    def _server_on_port(self) -> tuple[grpc.aio.Server, int]:
        """The server, its interceptors installed, bound to --listen (mutual TLS
        unless plaintext development)."""
        observers = [BindRequest(), *([self.metrics.rpc] if self.metrics else [])]
        interceptors: list[Any] = [*observers, ErrorInterceptor()]
        if self.identity is not None:
            interceptors.append(PeerAuthInterceptor(self.identity.revocations))
        server = grpc.aio.server(interceptors=interceptors, options=_SERVER_OPTIONS)
        credentials = None
        if self.identity is not None:
            credentials = self.identity.serving.credentials(require_client_auth=True)
        return server, listen(server, self.config.listen, credentials)

    def _migration_config(self, port: int) -> MigrationConfig:
        """The migration settings, with what only the running hostd knows filled in."""
        config = self.config.migration
        host = self.config.listen.rpartition(":")[0]
        return dataclasses.replace(
            config,
            own_address=config.own_address or f"{host}:{port}",
            require_peer_id=config.require_peer_id and not self.config.insecure_plaintext_dev,
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
        if self.metrics is not None:
            self.metrics.stop()
        if self._vms is not None:
            await self._vms.stop()
            self._vms = None
        if self._hypervisor is not None:
            await self._hypervisor.close()
            self._hypervisor = None
