"""The power verbs on a VM that runs on a host: shutdown, reboot, reset,
pause and resume. The controller checks the VM's state, asks its host, and
records the state the host answers with; what follows (DOWN after a
shutdown, UP again after a reboot) arrives as the host's events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import vm_pb2

from controller import transitions
from controller.errors import IllegalVmState, VmNotFound
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.vm_store import VmStore
from db import repositories as repo
from db.enums import VmState
from db.models import Vm

_RUNNING = frozenset({VmState.UP, VmState.POWERING_UP})

# verb -> (states it is allowed in, how the error message says so)
_ALLOWED: dict[str, tuple[frozenset[VmState], str]] = {
    "shut down": (
        _RUNNING | {VmState.PAUSED, VmState.POWERING_DOWN, VmState.REBOOT_IN_PROGRESS},
        "running, paused or rebooting",
    ),
    "reboot": (_RUNNING, "UP or POWERING_UP"),
    "reset": (_RUNNING | {VmState.PAUSED, VmState.REBOOT_IN_PROGRESS}, "running or paused"),
    "pause": (_RUNNING, "UP or POWERING_UP"),
    "resume": (frozenset({VmState.PAUSED}), "PAUSED"),
}

HostCall = Callable[[HostClient, str], Awaitable[agent_pb2.HostVm]]


@dataclass(frozen=True)
class _Target:
    vm_id: str
    host_id: str
    host_name: str
    address: str


class PowerVerbs:
    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._clients = clients

    async def shutdown(self, vm_ref: str, timeout_seconds: int) -> vm_pb2.Vm:
        return await self._run(vm_ref, "shut down", lambda c, i: c.shutdown_vm(i, timeout_seconds))

    async def reboot(self, vm_ref: str, timeout_seconds: int) -> vm_pb2.Vm:
        return await self._run(vm_ref, "reboot", lambda c, i: c.reboot_vm(i, timeout_seconds))

    async def reset(self, vm_ref: str) -> vm_pb2.Vm:
        return await self._run(vm_ref, "reset", lambda c, i: c.reset_vm(i))

    async def pause(self, vm_ref: str) -> vm_pb2.Vm:
        return await self._run(vm_ref, "pause", lambda c, i: c.pause_vm(i))

    async def resume(self, vm_ref: str) -> vm_pb2.Vm:
        return await self._run(vm_ref, "resume", lambda c, i: c.resume_vm(i))

    async def _run(self, vm_ref: str, verb: str, call: HostCall) -> vm_pb2.Vm:
        allowed, wording = _ALLOWED[verb]

        def find(session: Session) -> _Target:
            vm = repo.find_vm(session, vm_ref)
            if vm is None:
                raise VmNotFound(vm_ref)
            host = repo.find_host(session, vm.host_id) if vm.host_id else None
            if vm.state not in allowed or host is None:
                raise IllegalVmState(vm.name, vm.state.value, verb, wording)
            return _Target(vm.id, host.id, host.name, host.address)

        target = await self._store.db.run(find)
        client = self._clients.get(target.host_id, target.host_name, target.address)
        answer = await call(client, target.vm_id)

        def record(_session: Session, vm: Vm) -> tuple[bool, None]:
            return transitions.apply_host_vm(vm, target.host_id, answer), None

        proto, _ = await self._store.update(target.vm_id, record)
        return proto
