"""The power verbs on a VM that runs on a host: shutdown, reboot, reset,
pause, resume and hibernate. The controller checks the VM's state, begins
the verb's operation, asks the VM's host, and records the state the host
answers with; what follows (DOWN after a shutdown, UP again after a reboot,
SUSPENDED after a hibernation) arrives as the host's events, and ends the
operation (controller.operations)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller import operations, requests, transitions
from controller.errors import IllegalVmState, VmNotFound
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.requests import Call
from controller.resume import status_name
from controller.vm_store import VmStore
from db import repositories as repo
from db.enums import OperationKind, VmState
from db.models import Vm, utcnow
from virtplane_common.errors import VirtplaneError

_RUNNING = frozenset({VmState.UP, VmState.POWERING_UP})

# verb -> (states it is allowed in, how the error message says so, its operation)
_ALLOWED: dict[str, tuple[frozenset[VmState], str, OperationKind]] = {
    "shut down": (
        _RUNNING | {VmState.PAUSED, VmState.POWERING_DOWN, VmState.REBOOT_IN_PROGRESS},
        "running, paused or rebooting",
        OperationKind.SHUTDOWN_VM,
    ),
    "reboot": (_RUNNING, "UP or POWERING_UP", OperationKind.REBOOT_VM),
    "reset": (
        _RUNNING | {VmState.PAUSED, VmState.REBOOT_IN_PROGRESS},
        "running or paused",
        OperationKind.RESET_VM,
    ),
    "pause": (_RUNNING, "UP or POWERING_UP", OperationKind.PAUSE_VM),
    "resume": (frozenset({VmState.PAUSED}), "PAUSED", OperationKind.RESUME_VM),
    "hibernate": (_RUNNING | {VmState.PAUSED}, "running or paused", OperationKind.HIBERNATE_VM),
}

HostCall = Callable[[HostClient, str], Awaitable[agent_pb2.HostVm]]
VmAndOperation = operations.VmAndOperation


@dataclass(frozen=True)
class _Target:
    vm_id: str
    host_id: str
    host_name: str
    address: str
    op_id: str


class PowerVerbs:
    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._clients = clients

    async def shutdown(self, vm_ref: str, timeout_seconds: int, call: Call) -> VmAndOperation:
        return await self._run(
            vm_ref, "shut down", call, lambda c, i: c.shutdown_vm(i, timeout_seconds)
        )

    async def reboot(self, vm_ref: str, timeout_seconds: int, call: Call) -> VmAndOperation:
        return await self._run(vm_ref, "reboot", call, lambda c, i: c.reboot_vm(i, timeout_seconds))

    async def reset(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._run(vm_ref, "reset", call, lambda c, i: c.reset_vm(i))

    async def pause(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._run(vm_ref, "pause", call, lambda c, i: c.pause_vm(i))

    async def resume(self, vm_ref: str, call: Call) -> VmAndOperation:
        return await self._run(vm_ref, "resume", call, lambda c, i: c.resume_vm(i))

    async def hibernate(self, vm_ref: str, call: Call) -> VmAndOperation:
        """Saves the VM's memory to a file on its host: SAVING_STATE, then
        SUSPENDED. The VM keeps its host, where StartVm restores it."""
        return await self._run(vm_ref, "hibernate", call, lambda c, i: c.hibernate_vm(i))

    async def _current(self, op_id: str) -> VmAndOperation:
        return await self._store.db.run(lambda s: operations.with_vm(s, op_id))

    async def _run(self, vm_ref: str, verb: str, call: Call, host_call: HostCall) -> VmAndOperation:
        allowed, wording, kind = _ALLOWED[verb]

        def begin(session: Session) -> _Target | str:
            prior = requests.claim(session, call)
            if prior is not None:
                return prior.result_id
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            host = repo.find_host(session, vm.host_id) if vm.host_id else None
            if vm.state not in allowed or host is None:
                raise IllegalVmState(vm.name, vm.state.value, verb, wording)
            op = operations.begin(session, kind, vm, call, host_id=host.id)
            requests.remember(session, call, op.id)
            return _Target(vm.id, host.id, host.name, host.address, op.id)

        target = await requests.once(lambda: self._store.db.run(begin))
        if isinstance(target, str):
            return await self._current(target)
        client = self._clients.get(target.host_id, target.host_name, target.address)
        dispatched = utcnow()
        try:
            answer = await host_call(client, target.vm_id)
        except VirtplaneError as exc:
            code, why = status_name(exc), str(exc)

            def fail(session: Session) -> None:
                operations.failed(session, target.op_id, code, why)
                requests.forget(session, call)

            await self._store.db.run(fail)
            raise

        def record(session: Session, vm: Vm) -> tuple[bool, None]:
            operations.lock_vm(session, vm)
            changed = transitions.apply_host_vm(vm, target.host_id, answer)
            operations.accepted(session, target.op_id, dispatched, vm)
            return changed, None

        await self._store.update(target.vm_id, record)
        return await self._current(target.op_id)
