"""The VM verbs: the controller's RunVm flow and its siblings."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2, vm_service_pb2

from controller import convert, operations, requests, resume, spec_updates
from controller.errors import HostNotFound, IllegalVmState, VmExists, VmNotFound
from controller.guest_agent import GuestAgent
from controller.hosts import HostClients
from controller.requests import Call
from controller.starter import Dispatch, Starter, book_fresh, placement
from controller.validation import VmQuery, VmSpec
from controller.vm_store import VmStore, set_state
from db import repositories as repo
from db.enums import ExitReason, OperationKind, VmOrigin, VmState
from db.models import Nic, Vm, utcnow
from virtplane_common.errors import VirtplaneError

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
        VmState.SUSPENDED,  # its saved state is deleted
    }
)

VmAndOperation = operations.VmAndOperation


class VmService:
    def __init__(self, store: VmStore, clients: HostClients, starter: Starter) -> None:
        self._store = store
        self._db = store.db
        self._clients = clients
        self._starter = starter
        self.guest_agent = GuestAgent(store.db, clients)

    async def create(self, spec: VmSpec, call: Call) -> vm_pb2.Vm:
        def build(session: Session) -> Vm:
            if repo.vm_by_name(session, spec.name) is not None:
                raise VmExists(spec.name)
            pinned = spec_updates.pinned_host_id(session, spec.pinned_host, "spec.pinned_host")
            spec_updates.check_macs(session, spec.nics, "spec.nics")
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
                        mac_address=nic.mac_address or spec_updates.random_mac(session),
                    )
                )
            vm.disks.extend(spec_updates.disk_rows(spec.disks))
            return vm

        return await self._store.insert(build, call)

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

    async def delete(self, vm_ref: str, call: Call) -> None:
        def check(vm: Vm) -> None:
            if vm.state is not VmState.DOWN:
                raise IllegalVmState(vm.name, vm.state.value, "delete", "DOWN")

        await self._store.delete(vm_ref, check, call)

    async def update(self, vm_ref: str, update: spec_updates.Update, call: Call) -> vm_pb2.Vm:
        return await spec_updates.update(self._store, vm_ref, update, call)

    async def _prior(self, call: Call) -> requests.Prior | None:
        """What a first call with call's key did, looked up before the VM is:
        a repeat finds its operation even if the VM was renamed since."""
        if not call.request_id:
            return None
        return await self._db.run(lambda s: requests.lookup(s, call))

    async def _replay(self, op_id: str) -> VmAndOperation:
        return await self._db.run(lambda s: operations.with_vm(s, op_id))

    async def start(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Places a DOWN VM on a host, books its resources there, and asks
        the host to run it, on another host when one refuses
        (controller.starter); restores a SUSPENDED VM on the host that holds
        its saved state; resumes a PAUSED one. Returns once a host has
        accepted, with the operation that follows the VM until it is UP."""

        def begin(
            session: Session, vm: Vm
        ) -> tuple[bool, tuple[str, resume.Target | Dispatch | None]]:
            prior = requests.claim(session, call)
            if prior is not None:
                return False, (prior.result_id, None)
            target: resume.Target | Dispatch
            if vm.state in resume.FROM_STATES:  # it goes back to its own host
                target = resume.begin(session, vm)
            else:
                target = book_fresh(session, vm, self._starter.policy, automatic=False)
            op = operations.begin(
                session,
                OperationKind.START_VM,
                vm,
                call,
                host_id=target.host_id,
                scheduled=isinstance(target, Dispatch),
            )
            requests.remember(session, call, op.id)
            return True, (op.id, target)

        if (prior := await self._prior(call)) is not None:
            return await self._replay(prior.result_id)
        proto, (op_id, target) = await requests.once(lambda: self._store.update(vm_ref, begin))
        if target is None:
            return await self._replay(op_id)
        if isinstance(target, Dispatch):
            try:
                await self._starter.dispatch(target)
            except VirtplaneError as exc:
                await self._store.update(proto.id, _op_failed(op_id, call, exc))
                raise
            return await self._replay(op_id)
        client = self._clients.get(target.host_id, target.host_name, target.address)
        dispatched = utcnow()
        try:
            if target.resume:
                answer = await client.resume_vm(proto.id)
            else:
                answer = await client.create_vm(target.config, request_id=op_id)
        except VirtplaneError as exc:
            await self._restore_failed(proto.id, target, op_id, call, exc)
            raise

        def accepted(session: Session, vm: Vm) -> tuple[bool, None]:
            operations.lock_vm(session, vm)
            changed = target.resume and resume.record(vm, target, answer)
            operations.accepted(session, op_id, dispatched, vm)
            return changed, None

        await self._store.update(proto.id, accepted)
        return await self._replay(op_id)

    async def _restore_failed(
        self, vm_id: str, target: resume.Target, op_id: str, call: Call, exc: VirtplaneError
    ) -> None:
        why = str(exc)

        def fail(session: Session, vm: Vm) -> tuple[bool, None]:
            operations.failed(session, op_id, resume.status_name(exc), why)
            requests.forget(session, call)
            if vm.host_id != target.host_id:
                return False, None
            return resume.undo(vm, target, why), None

        await self._store.update(vm_id, fail)

    async def stop(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Powers the VM off at once (a SUSPENDED VM's saved state is deleted)."""

        def begin(session: Session, vm: Vm) -> tuple[bool, tuple[str, _Stop | None]]:
            prior = requests.claim(session, call)
            if prior is not None:
                return False, (prior.result_id, None)
            if vm.state not in _STOPPABLE or vm.host_id is None:
                raise IllegalVmState(vm.name, vm.state.value, "stop", "running on a host")
            host = repo.find_host(session, vm.host_id)
            assert host is not None
            op = operations.begin(session, OperationKind.STOP_VM, vm, call, host_id=host.id)
            requests.remember(session, call, op.id)
            previous = vm.state
            set_state(vm, VmState.POWERING_DOWN)
            return True, (op.id, _Stop(previous, host.id, host.name, host.address))

        if (prior := await self._prior(call)) is not None:
            return await self._replay(prior.result_id)
        proto, (op_id, stop) = await requests.once(lambda: self._store.update(vm_ref, begin))
        if stop is None:
            return await self._replay(op_id)
        client = self._clients.get(stop.host_id, stop.host_name, stop.address)
        dispatched = utcnow()
        try:
            await client.destroy_vm(proto.id)
        except VmNotFound:
            log.info("VM %s was already gone from host %s", proto.name, stop.host_name)
        except VirtplaneError as exc:
            await self._store.update(proto.id, _restore_state(stop.previous, op_id, call, exc))
            raise

        def done(session: Session, vm: Vm) -> tuple[bool, None]:
            operations.lock_vm(session, vm)
            changed = False
            if vm.state is VmState.POWERING_DOWN and vm.host_id == stop.host_id:
                set_state(vm, VmState.DOWN, exit_reason=ExitReason.USER_STOP, message="")
                changed = True
            operations.accepted(session, op_id, dispatched, vm)
            return changed, None

        await self._store.update(proto.id, done)
        return await self._replay(op_id)


@dataclass(frozen=True)
class _Stop:
    previous: VmState
    host_id: str
    host_name: str
    address: str


def _restore_state(
    previous: VmState, op_id: str, call: Call, exc: VirtplaneError
) -> Callable[[Session, Vm], tuple[bool, None]]:
    def mutate(session: Session, vm: Vm) -> tuple[bool, None]:
        operations.failed(session, op_id, resume.status_name(exc), str(exc))
        requests.forget(session, call)
        if vm.state is not VmState.POWERING_DOWN:
            return False, None
        set_state(vm, previous)
        return True, None

    return mutate


def _op_failed(
    op_id: str, call: Call, exc: VirtplaneError
) -> Callable[[Session, Vm], tuple[bool, None]]:
    """A start no host accepted: its operation ends FAILED (the starter has
    set the VM's state) and its request id may be used again."""

    def mutate(session: Session, _vm: Vm) -> tuple[bool, None]:
        operations.failed(session, op_id, resume.status_name(exc), str(exc))
        requests.forget(session, call)
        return False, None

    return mutate
