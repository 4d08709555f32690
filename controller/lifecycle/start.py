"""StartVm's steps in the runner (controller.lifecycle.runner): a DOWN VM
is placed on a host the scheduler picks (controller.lifecycle.placement,
with its retries on other hosts); a SUSPENDED VM is restored, and a PAUSED
one resumed, on its own host (controller.lifecycle.restore)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from controller.host_client import HostClient
from controller.lifecycle import restore, verbs
from controller.lifecycle.placement import Starter, book_fresh
from controller.lifecycle.runner import Answer
from controller.lifecycle.states import ON_OWN_HOST
from controller.lifecycle.target import HostTarget
from controller.lifecycle.transitions import apply_host_vm
from controller.lifecycle.verbs import Verb
from controller.operations import VmAndOperation
from controller.vm_store import Outcome
from db.models import Host, Vm


@dataclass(frozen=True)
class StartSteps:
    starter: Starter
    verb: Verb = verbs.START

    def begin(self, session: Session, vm: Vm, host: Host | None) -> Outcome[HostTarget]:
        if vm.state in ON_OWN_HOST:  # it goes back to its own host
            return Outcome(True, restore.begin(session, vm))
        return Outcome(True, book_fresh(session, vm, self.starter.policy, automatic=False))

    async def call_host(
        self, client: HostClient, target: HostTarget, op_id: str
    ) -> Answer | VmAndOperation:
        if target.placed:
            accepted = await self.starter.dispatch(target)  # records the host's acceptance
            op = accepted.value
            # The answer as the acceptance's transaction read it: no read after.
            return VmAndOperation(accepted.vm, op) if op is not None and op.id == op_id else None
        if target.config is None:  # PAUSED: un-pause it
            return await client.resume_vm(target.vm_id)
        return await client.create_vm(target.config, request_id=op_id)  # a restore

    def undo(self, vm: Vm, target: HostTarget, why: str) -> bool:
        # A placed start that no host accepted: the starter has set the
        # VM's state.
        if target.placed or vm.host_id != target.host_id:
            return False
        return restore.undo(vm, target, why)

    def recorded_by_call(self, target: HostTarget) -> bool:
        return target.placed

    def record(self, vm: Vm, target: HostTarget, answer: Answer) -> bool:
        if target.config is None:  # resumed: its state as the host says
            assert answer is not None
            return apply_host_vm(vm, target.host_id, answer)
        return False
