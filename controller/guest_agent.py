"""The guest agent of a running VM, reached through its host: a fresh report
on demand, and the last report as the agent sent it (for debugging).

The raw report is not stored by the controller: hostd keeps the last one of
each VM in memory and the controller fetches it from the VM's host when
asked, so it is there after a controller restart too, as long as the VM runs.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from virtplane.v1 import vm_service_pb2

from controller.errors import IllegalVmState, VmNotFound
from controller.hosts import HostClients
from controller.lifecycle.states import AGENT_REACHABLE
from controller.lifecycle.target import HostTarget
from db import repositories as repo
from db.enums import VmState
from db.session import Database
from virtplane_common.errors import VirtplaneError


class GuestAgent:
    def __init__(self, db: Database, clients: HostClients) -> None:
        self._db = db
        self._clients = clients

    async def _find(self, vm_ref: str) -> tuple[str, VmState, HostTarget | None]:
        """The VM's name and state, and its host if it has one."""

        def work(session: Session) -> tuple[str, VmState, HostTarget | None]:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            host = repo.find_host(session, vm.host_id) if vm.host_id else None
            return vm.name, vm.state, HostTarget.of(vm, host) if host else None

        return await self._db.run(work)

    async def refresh(self, vm_ref: str) -> None:
        name, state, placed = await self._find(vm_ref)
        if state not in AGENT_REACHABLE or placed is None:
            raise IllegalVmState(name, state.value, "refresh the guest info of", "running")
        client = self._clients.get(placed.host_id, placed.host_name, placed.address)
        await client.refresh_guest(placed.vm_id)

    async def raw_report(self, vm_ref: str) -> vm_service_pb2.GuestRawReport:
        """The last report from the VM's host; a reason instead when there is none."""
        name, state, placed = await self._find(vm_ref)
        if placed is None:
            return vm_service_pb2.GuestRawReport(
                unavailable_reason=f"VM {name!r} is {state.value}: it runs on no host"
            )
        raw = vm_service_pb2.GuestRawReport(host_id=placed.host_id)
        client = self._clients.get(placed.host_id, placed.host_name, placed.address)
        try:
            reply = await client.guest_report(placed.vm_id)
        except VirtplaneError as exc:
            raw.unavailable_reason = str(exc)
            return raw
        raw.report_json, raw.truncated = reply.report_json, reply.truncated
        if reply.HasField("received_time"):
            raw.received_time.CopyFrom(reply.received_time)
        else:
            raw.unavailable_reason = "the guest agent has not reported since the VM started"
        return raw
