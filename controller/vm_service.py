"""The VM verbs: the controller's RunVm flow and its siblings."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session
from virtplane.errors import InvalidArgument, VirtplaneError
from virtplane.v1 import vm_pb2, vm_service_pb2

from controller import convert
from controller.errors import HostNotFound, IllegalVmState, VmExists, VmNotFound
from controller.hosts import HostClients
from controller.starter import Starter, placement
from controller.validation import VmQuery, VmSpec
from controller.vm_store import VmStore, set_state
from db import repositories as repo
from db.enums import ExitReason, VmOrigin, VmState
from db.models import Nic, Vm

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


def _random_mac(session: Session) -> str:
    # 52:54:00 is the locally administered prefix QEMU and libvirt use.
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if not repo.mac_in_use(session, mac):
            return mac


class VmService:
    def __init__(self, store: VmStore, clients: HostClients, starter: Starter) -> None:
        self._store = store
        self._db = store.db
        self._clients = clients
        self._starter = starter

    async def create(self, spec: VmSpec) -> vm_pb2.Vm:
        def build(session: Session) -> Vm:
            if repo.vm_by_name(session, spec.name) is not None:
                raise VmExists(spec.name)
            pinned = None
            if spec.pinned_host:
                host = repo.find_host(session, spec.pinned_host)
                if host is None:
                    raise InvalidArgument(
                        "spec.pinned_host", f"names no registered host: {spec.pinned_host!r}"
                    )
                pinned = host.id
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

    async def guest_info(self, vm_ref: str) -> vm_service_pb2.GetVmGuestInfoResponse:
        """The VM's guest facts, combined and one by one."""

        def work(session: Session) -> vm_service_pb2.GetVmGuestInfoResponse:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            return vm_service_pb2.GetVmGuestInfoResponse(
                guest=convert.guest_info(vm.guest_facts),
                facts=[convert.guest_fact(f) for f in vm.guest_facts],
            )

        return await self._db.run(work)

    async def explain_placement(self, vm_ref: str) -> vm_service_pb2.ExplainPlacementResponse:
        """What StartVm's placement would decide for the VM now, host by
        host; nothing is booked or locked. A VM that runs already counts
        as used on its host."""

        def work(session: Session) -> vm_service_pb2.ExplainPlacementResponse:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            _hosts, judged = placement(session, vm, self._starter.policy, lock=False)
            return convert.placement(judged)

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
        host to run it; another host when one refuses (controller.starter).
        Returns once a host has accepted it."""
        return await self._starter.start(vm_ref)

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
