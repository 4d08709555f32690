"""The one path every VM verb takes (start, stop and the power verbs):

1. a repeat of an API call (its request id known) answers with the first
   call's VM and operation, as they are now;
2. in one transaction: claim the request id, check the VM's state against
   the verb's row in controller.lifecycle.verbs, let the verb prepare
   (Steps.begin: book a host, mark the VM), begin the operation, and
   remember it under the request id;
3. call the host (Steps.call_host);
4. on an error: the operation ends FAILED, the request id is released (the
   same request may be tried again), the verb undoes what it prepared
   (Steps.undo), and the error is raised;
5. otherwise: the VM's row is locked, the verb records the host's answer
   (Steps.record), and the operation is marked accepted by the host; what
   follows arrives as the host's events (controller.operations).

The verbs' own steps are in controller.lifecycle.power (the verbs a running
VM takes, and stop) and controller.lifecycle.start.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller import operations, requests
from controller.errors import IllegalVmState
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.lifecycle.target import HostTarget
from controller.lifecycle.verbs import Verb
from controller.operations import VmAndOperation
from controller.requests import Call
from controller.vm_store import Outcome, VmStore
from db import repositories as repo
from db.models import Host, Vm, utcnow
from virtplane_common import log_context
from virtplane_common.errors import VirtplaneError
from virtplane_common.status import status_code

log = logging.getLogger(__name__)

# What a host answers to a verb, when it answers a VM.
Answer = agent_pb2.HostVm | None


class Steps(Protocol):
    """What one verb does at each step of the runner."""

    @property
    def verb(self) -> Verb: ...

    def begin(self, session: Session, vm: Vm, host: Host | None) -> Outcome[HostTarget]:
        """After the state check, in the claiming transaction: where the
        verb goes, and whether preparing it changed the VM. host is the
        VM's host (never None for a verb that needs_host)."""
        ...

    async def call_host(
        self, client: HostClient, target: HostTarget, op_id: str
    ) -> Answer | VmAndOperation:
        """Asks the host; raises a VirtplaneError when it refuses. A step
        that recorded the acceptance itself may return the verb's answer."""
        ...

    def undo(self, vm: Vm, target: HostTarget, why: str) -> bool:
        """The host refused: puts back what begin() changed; returns
        whether it changed the VM."""
        ...

    def recorded_by_call(self, target: HostTarget) -> bool:
        """Whether call_host recorded the host's acceptance itself (a placed
        start: controller.lifecycle.placement), so record() is not called."""
        ...

    def record(self, vm: Vm, target: HostTarget, answer: Answer) -> bool:
        """The host accepted: applies its answer to the VM; returns whether
        it changed the VM."""
        ...


@dataclass(frozen=True)
class Begun:
    """The first transaction's result: the operation, and the target to
    call (None for a repeat, which only answers)."""

    op_id: str
    target: HostTarget | None = None


def status_name(exc: VirtplaneError) -> str:
    """The gRPC status code name of exc, as an operation's error records it."""
    return status_code(exc).name


class VerbRunner:
    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._clients = clients

    async def run(self, vm_ref: str, call: Call, steps: Steps) -> VmAndOperation:
        """Carries out one verb on the VM vm_ref names; returns the VM and
        the verb's operation once the host has accepted it."""
        if call.request_id:
            # Looked up before the VM is: a repeat finds its operation even
            # if the VM was renamed since.
            prior = await self._store.db.run(lambda s: requests.lookup(s, call))
            if prior is not None:
                return await self._answer(prior.result_id)
        vm, begun = await self._store.update(
            vm_ref, lambda s, v: self._begin(s, v, call, steps), call
        )
        target = begun.target
        if target is None:
            return await self._answer(begun.op_id)
        # What this verb logs, and hostd's log of the call, name its operation.
        with log_context.bound(operation_id=begun.op_id, vm=vm.id, host=target.host_name):
            log.info("%s of VM %s: asking host %s", steps.verb.name, vm.name, target.host_name)
            return await self._call_host(vm, call, steps, begun, target)

    async def _call_host(
        self, vm: Vm, call: Call, steps: Steps, begun: Begun, target: HostTarget
    ) -> VmAndOperation:
        """Steps 3 to 5 of the module's docstring."""
        client = self._clients.get(target.host_id, target.host_name, target.address)
        dispatched = utcnow()
        try:
            answer = await steps.call_host(client, target, begun.op_id)
        except VirtplaneError as exc:
            failure = _Failure(call, steps, begun, exc)
            await self._store.update(vm.id, failure.mutate)
            raise
        if isinstance(answer, VmAndOperation):
            return answer
        if not steps.recorded_by_call(target):
            accepted = _Acceptance(steps, begun, answer, dispatched)
            return (await self._store.update(vm.id, accepted.mutate, lock=True)).value
        return await self._answer(begun.op_id)

    async def _answer(self, op_id: str) -> VmAndOperation:
        return await self._store.db.run(lambda s: operations.with_vm(s, op_id))

    @staticmethod
    def _begin(session: Session, vm: Vm, call: Call, steps: Steps) -> Outcome[Begun]:
        def work(session: Session) -> requests.Done[Outcome[Begun]]:
            return _begin_new(session, vm, call, steps)

        def replay(_session: Session, prior: requests.Prior) -> Outcome[Begun]:
            return Outcome(False, Begun(prior.result_id))

        return requests.claimed(session, call, work, replay)


def _begin_new(session: Session, vm: Vm, call: Call, steps: Steps) -> requests.Done[Outcome[Begun]]:
    """A new call: check the state, prepare, begin the operation."""
    verb = steps.verb
    host = repo.find_host(session, vm.host_id) if verb.needs_host and vm.host_id else None
    if vm.state not in verb.allowed or (verb.needs_host and host is None):
        raise IllegalVmState(vm.name, vm.state.value, verb.name, verb.wording)
    prepared = steps.begin(session, vm, host)
    target = prepared.value
    op = operations.begin(
        session,
        verb.kind,
        vm,
        call,
        host_id=target.destination_id or target.host_id,
        scheduled=target.placed or bool(target.destination_id),
    )
    op.cause = target.cause
    if target.queued is not None:  # it waits its turn: nobody calls the host now
        operations.queue(op, target.queued)
        return requests.Done(Outcome(prepared.changed, Begun(op.id)), op.id)
    return requests.Done(Outcome(prepared.changed, Begun(op.id, target)), op.id)


@dataclass(frozen=True)
class _Failure:
    """The host refused: the operation ends FAILED, the request id is
    released, the verb undoes what it prepared."""

    call: Call
    steps: Steps
    begun: Begun
    error: VirtplaneError

    def mutate(self, session: Session, vm: Vm) -> Outcome[None]:
        why = str(self.error)
        operations.failed(session, self.begun.op_id, status_name(self.error), why)
        requests.forget(session, self.call)
        assert self.begun.target is not None
        return Outcome(self.steps.undo(vm, self.begun.target, why), None)


@dataclass(frozen=True)
class _Acceptance:
    """The host accepted: the verb records its answer, and the operation
    that the host accepted moves on."""

    steps: Steps
    begun: Begun
    answer: Answer
    dispatched: dt.datetime

    def mutate(self, session: Session, vm: Vm) -> Outcome[VmAndOperation]:
        """Records the acceptance; its value is the verb's answer, read in
        the same transaction."""
        assert self.begun.target is not None  # the VM was read locked
        changed = self.steps.record(vm, self.begun.target, self.answer)
        operations.accepted(session, self.begun.op_id, self.dispatched, vm)
        return Outcome(changed, VmAndOperation(vm, operations.find(session, self.begun.op_id)))
