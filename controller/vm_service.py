"""The VM verbs: the controller's RunVm flow and its siblings."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.errors import VirtplaneError
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_pb2, vm_service_pb2

from controller import convert
from controller.errors import (
    HostNotFound,
    IllegalVmState,
    NoHostAvailable,
    VmExists,
    VmNotFound,
)
from controller.guest_agent import GuestAgent
from controller.hosts import HostClients
from controller.scheduler import Demand, HostCapacity, Placement, place
from controller.validation import VmQuery, VmSpec
from controller.vm_store import VmStore, set_state
from db import repositories as repo
from db.enums import ExitReason, VmState
from db.models import Host, Nic, Vm

log = logging.getLogger(__name__)

# States from which StopVm powers the VM off.
_STOPPABLE = frozenset(
    {
        VmState.WAIT_FOR_LAUNCH,
        VmState.POWERING_UP,
        VmState.UP,
        VmState.PAUSED,
        VmState.POWERING_DOWN,
        VmState.REBOOT_IN_PROGRESS,
        VmState.NOT_RESPONDING,
    }
)


@dataclass(frozen=True)
class _Dispatch:
    """What StartVm hands to the chosen host."""

    host_id: str
    host_name: str
    address: str
    config: agent_pb2.VmConfig


def _random_mac(session: Session) -> str:
    # 52:54:00 is the locally administered prefix QEMU and libvirt use.
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if not repo.mac_in_use(session, mac):
            return mac


def _placement(session: Session, vm: Vm, *, lock: bool) -> tuple[Sequence[Host], Placement]:
    """The scheduler's judgement of every host for vm, pending starts
    counted. With lock, the hosts stay locked until the transaction ends."""
    hosts = repo.lock_hosts(session) if lock else repo.list_hosts(session)
    usage = repo.host_usage(session)
    candidates = [
        HostCapacity(
            id=h.id,
            name=h.name,
            state=h.state,
            memory_total_mib=h.memory_total_mib,
            memory_used_mib=usage.get(h.id, (0, 0, 0))[0],
            cpus=h.cpus,
        )
        for h in hosts
    ]
    return hosts, place(candidates, Demand(vcpus=vm.vcpus, memory_mib=vm.memory_mib))


def book(session: Session, vm: Vm) -> tuple[bool, _Dispatch]:
    """Picks a host for vm and books its resources there, in the caller's
    transaction: from here the VM's memory counts as used on the host.

    The hosts are locked before their usage is read, so a concurrent booking
    waits for this transaction and then sees its VM on the host: two starts
    cannot over-book one host.
    """
    if vm.state is not VmState.DOWN:
        raise IllegalVmState(vm.name, vm.state.value, "start", "DOWN")
    hosts, placement = _placement(session, vm, lock=True)
    if placement.host is None:
        raise NoHostAvailable(vm.name, placement.rejections)
    chosen = next(h for h in hosts if h.id == placement.host.id)
    vm.host_id = chosen.id
    vm.guest_facts.clear()
    set_state(vm, VmState.WAIT_FOR_LAUNCH, exit_reason=ExitReason.NONE, message="")
    return True, _Dispatch(chosen.id, chosen.name, chosen.address, convert.vm_config(vm))


class VmService:
    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._db = store.db
        self._clients = clients
        self.guest_agent = GuestAgent(store.db, clients)

    async def create(self, spec: VmSpec) -> vm_pb2.Vm:
        def build(session: Session) -> Vm:
            if repo.vm_by_name(session, spec.name) is not None:
                raise VmExists(spec.name)
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
            )
            for position, nic in enumerate(spec.nics):
                vm.nics.append(
                    Nic(
                        position=position,
                        name=nic.name,
                        kind=nic.kind,
                        network=nic.network,
                        mac_address=nic.mac_address or _random_mac(session),
                    )
                )
            return vm

        return await self._store.insert(build)

    async def get(self, vm_ref: str) -> vm_pb2.Vm:
        def work(session: Session) -> vm_pb2.Vm:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            return convert.vm(vm)

        return await self._db.run(work)

    async def guest_info(
        self, vm_ref: str, *, include_raw_report: bool = False
    ) -> vm_service_pb2.GetVmGuestInfoResponse:
        """The VM's guest facts, combined and one by one; with the raw last
        report from its host if asked."""

        def work(session: Session) -> vm_service_pb2.GetVmGuestInfoResponse:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            return vm_service_pb2.GetVmGuestInfoResponse(
                guest=convert.guest_info(vm.guest_facts),
                facts=[
                    convert.guest_fact(f, convert.guest_facts_stale(vm.guest_facts))
                    for f in vm.guest_facts
                ],
            )

        reply = await self._db.run(work)
        if include_raw_report:
            reply.raw_report.CopyFrom(await self.guest_agent.raw_report(vm_ref))
        return reply

    async def explain_placement(self, vm_ref: str) -> vm_service_pb2.ExplainPlacementResponse:
        """What StartVm's placement would decide for the VM now, host by
        host; nothing is booked or locked. A VM that runs already counts
        as used on its host."""

        def work(session: Session) -> vm_service_pb2.ExplainPlacementResponse:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            _hosts, placement = _placement(session, vm, lock=False)
            return convert.placement(placement)

        return await self._db.run(work)

    async def list(self, query: VmQuery) -> tuple[list[vm_pb2.Vm], str]:
        """One page of the VMs query matches, and the token of the next page
        (empty on the last one)."""

        def work(session: Session) -> tuple[list[vm_pb2.Vm], str]:
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
            page = [convert.vm(v) for v in rows[: query.page_size]]
            more = len(rows) > query.page_size
            return page, query.next_page_token(page[-1].name) if more else ""

        return await self._db.run(work)

    async def delete(self, vm_ref: str) -> None:
        def check(vm: Vm) -> None:
            if vm.state is not VmState.DOWN:
                raise IllegalVmState(vm.name, vm.state.value, "delete", "DOWN")

        await self._store.delete(vm_ref, check)

    async def start(self, vm_ref: str) -> vm_pb2.Vm:
        """Places the VM on a host, books its resources there, and asks the
        host to run it. Returns once the host has accepted it."""

        proto, dispatch = await self._store.update(vm_ref, book)
        client = self._clients.get(dispatch.host_id, dispatch.host_name, dispatch.address)
        try:
            await client.create_vm(dispatch.config)
        except VirtplaneError as exc:
            await self._start_failed(proto.id, dispatch.host_id, str(exc))
            raise
        return await self.get(proto.id)

    async def _start_failed(self, vm_id: str, host_id: str, why: str) -> None:
        def fail(_session: Session, vm: Vm) -> tuple[bool, None]:
            if vm.host_id != host_id or vm.state is not VmState.WAIT_FOR_LAUNCH:
                return False, None
            set_state(vm, VmState.DOWN, exit_reason=ExitReason.START_FAILED, message=why)
            return True, None

        await self._store.update(vm_id, fail)

    async def stop(self, vm_ref: str) -> vm_pb2.Vm:
        """Powers the VM off at once."""

        def begin(_session: Session, vm: Vm) -> tuple[bool, tuple[VmState, str, str, str]]:
            if vm.state not in _STOPPABLE or vm.host_id is None:
                raise IllegalVmState(vm.name, vm.state.value, "stop", "running on a host")
            host = repo.find_host(_session, vm.host_id)
            assert host is not None
            previous = vm.state
            set_state(vm, VmState.POWERING_DOWN)
            return True, (previous, host.id, host.name, host.address)

        proto, (previous, host_id, host_name, address) = await self._store.update(vm_ref, begin)
        client = self._clients.get(host_id, host_name, address)
        try:
            await client.destroy_vm(proto.id)
        except VmNotFound:
            log.info("VM %s was already gone from host %s", proto.name, host_name)
        except VirtplaneError:
            await self._store.update(proto.id, _restore_state(previous))
            raise

        def done(_session: Session, vm: Vm) -> tuple[bool, None]:
            if vm.state is not VmState.POWERING_DOWN or vm.host_id != host_id:
                return False, None
            set_state(vm, VmState.DOWN, exit_reason=ExitReason.USER_STOP, message="")
            return True, None

        proto, _ = await self._store.update(proto.id, done)
        return proto


def _restore_state(previous: VmState) -> Callable[[Session, Vm], tuple[bool, None]]:
    def mutate(_session: Session, vm: Vm) -> tuple[bool, None]:
        if vm.state is not VmState.POWERING_DOWN:
            return False, None
        set_state(vm, previous)
        return True, None

    return mutate
