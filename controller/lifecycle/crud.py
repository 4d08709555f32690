"""VmService: create, read (get, list, guest facts, placement explained),
update and delete a VM. The verbs that move a VM's state are in
controller.lifecycle.power; the update rules in controller.lifecycle.updates.

Reads return database rows or domain values; the servicer converts them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import vm_service_pb2

from controller.errors import HostNotFound, IllegalVmState, VmExists, VmNotFound
from controller.guest_agent import GuestAgent
from controller.hosts import HostClients
from controller.lifecycle import updates
from controller.lifecycle.placement import Starter, placement
from controller.requests import Call
from controller.scheduler import Placement
from controller.validation import VmQuery, VmSpec
from controller.vm_store import Created, VmStore
from db import repositories as repo
from db.enums import ACTIVE_VM_STATES, ExitReason, VmOrigin, VmState
from db.models import GuestFact, Nic, Vm


@dataclass(frozen=True)
class VmPage:
    """One page of ListVms, and the token of the next (empty on the last)."""

    vms: Sequence[Vm]
    next_page_token: str


@dataclass(frozen=True)
class GuestFacts:
    """A VM's guest facts, and the raw last report from its host if asked."""

    facts: Sequence[GuestFact]
    raw_report: vm_service_pb2.GuestRawReport | None = None


def _new_vm(session: Session, spec: VmSpec) -> Vm:
    if repo.vm_by_name(session, spec.name) is not None:
        raise VmExists(spec.name)
    pinned = updates.pinned_host_id(session, spec.pinned_host, "spec.pinned_host")
    updates.check_macs(session, spec.nics, "spec.nics")
    vm = Vm(
        id=str(uuid.uuid4()),
        name=spec.name,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        kernel_path=spec.kernel_path,
        initrd_path=spec.initrd_path,
        cmdline=spec.cmdline,
        state=VmState.DOWN,
        exit_reason=ExitReason.NONE,
        status_message="",
        highly_available=spec.highly_available,
        start_paused=spec.start_paused,
        custom_properties=dict(spec.custom_properties) or None,
        pinned_host_id=pinned,
        origin=VmOrigin.MANAGED,
        ha_restart_count=0,
        start_request_id="",
    )
    for position, nic in enumerate(spec.nics):
        vm.nics.append(
            Nic(
                position=position,
                name=nic.name,
                kind=nic.kind,
                network=nic.network,
                mac_address=nic.mac_address or updates.random_mac(session),
            )
        )
    vm.disks.extend(updates.disk_rows(spec.disks))
    return vm


def _find(session: Session, vm_ref: str) -> Vm:
    vm = repo.find_vm(session, vm_ref)
    if vm is None:
        raise VmNotFound(vm_ref)
    return vm


class VmService:
    def __init__(self, store: VmStore, clients: HostClients, starter: Starter) -> None:
        self._store = store
        self._db = store.db
        self._starter = starter
        self.guest_agent = GuestAgent(store.db, clients)

    async def create(self, spec: VmSpec, call: Call) -> Created:
        return await self._store.insert(lambda s: _new_vm(s, spec), call)

    async def get(self, vm_ref: str) -> Vm:
        return await self._db.run(lambda s: _find(s, vm_ref))

    async def guest_info(self, vm_ref: str, *, include_raw_report: bool = False) -> GuestFacts:
        """The VM's guest facts; with the raw last report from its host if asked."""
        facts = await self._db.run(lambda s: list(_find(s, vm_ref).guest_facts))
        if not include_raw_report:
            return GuestFacts(facts)
        return GuestFacts(facts, await self.guest_agent.raw_report(vm_ref))

    async def explain_placement(self, vm_ref: str, *, for_migration: bool = False) -> Placement:
        """What StartVm's placement would decide for the VM now, host by
        host; nothing is booked or locked. A VM that runs already counts
        as used on its host. for_migration: what MigrateVm's would (the
        VM's host judged too, refused as the source); the VM must run on a
        host."""

        def work(session: Session) -> Placement:
            vm = _find(session, vm_ref)
            source = None
            if for_migration:
                if vm.host_id is None or vm.state not in ACTIVE_VM_STATES:
                    raise IllegalVmState(vm.name, vm.state.value, "migrate", "on a host")
                source = vm.host_id
            _hosts, judged = placement(
                session, vm, self._starter.policy, lock=False, source_host_id=source
            )
            return judged

        return await self._db.run(work)

    async def list(self, query: VmQuery) -> VmPage:
        """One page of the VMs query matches."""

        def work(session: Session) -> VmPage:
            host_id = None
            if query.host:
                host = repo.find_host(session, query.host)
                if host is None:
                    raise HostNotFound(query.host)
                host_id = host.id
            rows = repo.page_vms(
                session,
                states=query.states,
                host_id=host_id,
                name_contains=query.name_contains,
                after_name=query.after_name,
                limit=query.page_size + 1,  # one more tells whether a next page exists
            )
            page = rows[: query.page_size]
            more = len(rows) > query.page_size
            return VmPage(page, query.next_page_token(page[-1].name) if more else "")

        return await self._db.run(work)

    async def delete(self, vm_ref: str, call: Call) -> None:
        def check(vm: Vm) -> None:
            if vm.state is not VmState.DOWN:
                raise IllegalVmState(vm.name, vm.state.value, "delete", "DOWN")

        await self._store.delete(vm_ref, check, call)

    async def update(self, vm_ref: str, update: updates.Update, call: Call) -> Vm:
        return await updates.update(self._store, vm_ref, update, call)
