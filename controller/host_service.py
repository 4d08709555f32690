"""Host registration and the monitors that watch each host."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session
from virtplane.v1 import host_pb2

from controller import convert
from controller.errors import HostExists, HostNotFound
from controller.hosts import HostClients
from controller.monitor import HostMonitor
from controller.vm_store import VmStore
from db import repositories as repo
from db.enums import HostState
from db.models import Host, utcnow


class HostService:
    def __init__(self, store: VmStore, clients: HostClients, retry_seconds: float) -> None:
        self._store = store
        self._db = store.db
        self._clients = clients
        self._retry = retry_seconds
        self._monitors: dict[str, HostMonitor] = {}

    async def add(self, name: str, address: str) -> host_pb2.Host:
        """Registers the hostd at address after reading its capacity."""
        if await self._db.run(lambda s: repo.host_by_name(s, name)) is not None:
            raise HostExists(name)
        host_id = str(uuid.uuid4())
        client = self._clients.get(host_id, name, address)
        caps = await client.capabilities()

        def insert(session: Session) -> host_pb2.Host:
            if repo.host_by_name(session, name) is not None:
                raise HostExists(name)
            host = Host(
                id=host_id,
                name=name,
                address=address,
                state=HostState.UP,
                state_message="",
                hostname=caps.hostname,
                cpus=caps.cpus,
                memory_total_mib=caps.memory_total_mib,
                hypervisor_type=caps.hypervisor_type,
                last_seen_at=utcnow(),
            )
            session.add(host)
            session.flush()
            return convert.host(host, (0, 0, 0))

        proto = await self._db.run(insert)
        self._watch(host_id, name, address)
        return proto

    async def get(self, host_ref: str) -> host_pb2.Host:
        def work(session: Session) -> host_pb2.Host:
            host = repo.find_host(session, host_ref)
            if host is None:
                raise HostNotFound(host_ref)
            return convert.host(host, repo.host_usage(session).get(host.id, (0, 0, 0)))

        return await self._db.run(work)

    async def list(self) -> list[host_pb2.Host]:
        def work(session: Session) -> list[host_pb2.Host]:
            usage = repo.host_usage(session)
            return [convert.host(h, usage.get(h.id, (0, 0, 0))) for h in repo.list_hosts(session)]

        return await self._db.run(work)

    async def watch_all(self) -> None:
        """Starts a monitor for every registered host (on controller start)."""
        hosts = await self._db.run(
            lambda s: [(h.id, h.name, h.address) for h in repo.list_hosts(s)]
        )
        for host_id, name, address in hosts:
            self._watch(host_id, name, address)

    def monitor(self, host_id: str) -> HostMonitor:
        return self._monitors[host_id]

    def _watch(self, host_id: str, name: str, address: str) -> None:
        client = self._clients.get(host_id, name, address)
        monitor = HostMonitor(host_id, client, self._store, self._retry)
        self._monitors[host_id] = monitor
        monitor.start()

    async def close(self) -> None:
        for monitor in self._monitors.values():
            await monitor.stop()
        self._monitors.clear()
