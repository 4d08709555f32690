"""Placement: starting a DOWN VM on a host the scheduler picks — booking,
dispatch, and a retry on another host when the chosen one cannot start it.

A start books the VM on the host the scheduler picks, in the transaction
that reads the hosts' usage (the hosts are locked first, so concurrent starts
— in this controller or another on the same database — cannot over-book a
host), and records an idempotency key for the host's CreateVm. It then calls
the host. When the host refuses the VM (CreateVm fails), or accepts it and
then reports it DOWN with START_FAILED, the start is booked again on another
host: at most MAX_TRIES hosts, never one twice. The last failure's error
lists every try.

A CreateVm whose answer is lost (the host cannot be reached) is not retried
elsewhere: the VM may be starting there. It waits as UNKNOWN for the host to
say what is true.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.orm import Session

from controller import convert, operations
from controller.errors import (
    CreateRefused,
    HostUnreachable,
    IllegalVmState,
    NoHostAvailable,
    StartFailed,
)
from controller.hosts import HostClients
from controller.lifecycle import updates
from controller.lifecycle.states import set_state
from controller.lifecycle.target import HostTarget
from controller.scheduler import (
    AffinityRule,
    Demand,
    HostCapacity,
    Placement,
    Policy,
    choose,
    place,
)
from controller.vm_store import Outcome, Updated, VmStore
from db import repositories as repo
from db.enums import ExitReason, VmState
from db.models import Host, Operation, Vm, utcnow
from db.repositories import HostRow
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

MAX_TRIES = 3


def placement(
    session: Session,
    vm: Vm,
    policy: Policy,
    *,
    lock: bool,
    retrying: bool = False,
    source_host_id: str | None = None,
) -> tuple[Sequence[Host | HostRow], Placement]:
    """The scheduler's judgement of every host for vm, pending starts and
    migrations counted. With lock, the hosts stay locked until the
    transaction ends. Retrying, the hosts the current start tried are
    excluded; otherwise (a fresh start, ExplainPlacement) no host is. A
    migration excludes its source_host_id."""
    hosts: Sequence[Host | HostRow] = repo.lock_hosts(session) if lock else repo.list_hosts(session)
    tried = {t["host_id"]: t["error"] for t in vm.start_tries or []} if retrying else {}
    demand = demand_of(session, vm, tried=tried, source_host_id=source_host_id)
    return hosts, place(capacities(session, hosts), demand, policy)


def _choice(session: Session, vm: Vm, policy: Policy) -> str:
    """The id of the host a start of vm books (not one this start tried),
    the hosts locked until the transaction ends; raises NoHostAvailable,
    with every host's reason, when none fits."""
    hosts = capacities(session, repo.lock_hosts(session))
    tried = {t["host_id"]: t["error"] for t in vm.start_tries or []}
    demand = demand_of(session, vm, tried=tried)
    chosen = choose(hosts, demand, policy)
    if chosen is None:
        raise NoHostAvailable(vm.name, place(hosts, demand, policy).rejections)
    return chosen.id


def capacities(session: Session, hosts: Sequence[Host | HostRow]) -> list[HostCapacity]:
    """hosts as the scheduler sees them, pending starts and migrations counted."""
    usage = repo.host_usage(session)
    return [
        HostCapacity(
            id=h.id,
            name=h.name,
            state=h.state,
            memory_total_mib=h.memory_total_mib,
            memory_used_mib=usage.get(h.id, (0, 0, 0))[0],
            cpus=h.cpus,
            vcpus_used=usage.get(h.id, (0, 0, 0))[1],
        )
        for h in hosts
    ]


def demand_of(
    session: Session,
    vm: Vm,
    *,
    tried: Mapping[str, str] | None = None,
    source_host_id: str | None = None,
) -> Demand:
    """What vm asks of a host: its size, pinning and affinity groups."""
    return Demand(
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        pinned_host_id=vm.pinned_host_id,
        affinity=tuple(
            AffinityRule(name, positive, enforcing, frozenset(peers))
            for name, positive, enforcing, peers in repo.affinity_of(session, vm.id)
        ),
        tried=tried or {},
        source_host_id=source_host_id,
    )


def _tries_text(tries: Sequence[dict[str, str]]) -> str:
    return "; ".join(f"{t['host']}: {t['error']}" for t in tries)


def book(session: Session, vm: Vm, policy: Policy) -> HostTarget:
    """Picks a host for vm (not one this start tried) and books the VM's
    resources there, in the caller's transaction: from here the VM's memory
    counts as pending on the host. Raises NoHostAvailable when none fits."""
    chosen = locked_host(session, _choice(session, vm, policy))
    vm.host_id = chosen.id
    vm.guest_facts.clear()
    vm.start_request_id = str(uuid.uuid4())
    set_state(vm, VmState.WAIT_FOR_LAUNCH, exit_reason=ExitReason.NONE, message="")
    return dispatch_of(vm, chosen)


def locked_host(session: Session, host_id: str) -> Host:
    """The host placement chose (locked by it), as it is now."""
    host = session.get(Host, host_id, populate_existing=True)
    assert host is not None  # locked: it cannot have gone
    return host


def dispatch_of(vm: Vm, host: Host) -> HostTarget:
    """What a start booked on host sends there."""
    return HostTarget.of(vm, host, config=convert.vm_config(vm), placed=True)


def book_fresh(session: Session, vm: Vm, policy: Policy, *, automatic: bool) -> HostTarget:
    """A new start of a DOWN VM: StartVm (which cancels any automatic
    restart planned), or an automatic restart (which keeps its plan)."""
    if vm.state is not VmState.DOWN:
        raise IllegalVmState(vm.name, vm.state.value, "start", "DOWN")
    updates.apply_next_run(session, vm)  # a fresh start takes the pending spec
    vm.start_tries = []
    if not automatic:
        vm.ha_restart_at = None
        vm.ha_restart_count = 0
    return book(session, vm, policy)


def rebook(session: Session, vm: Vm, host_id: str, error: str, policy: Policy) -> HostTarget | None:
    """The start of vm failed on host_id: books it on another host, or, when
    MAX_TRIES hosts failed or none is left, puts it DOWN (START_FAILED) with
    every try in its message. Returns the next dispatch, if any."""
    host = session.get(Host, host_id)
    tries = [*(vm.start_tries or []), {
        "host_id": host_id, "host": host.name if host else host_id, "error": error,
    }]  # fmt: skip
    vm.start_tries = tries
    if len(tries) < MAX_TRIES:
        try:
            return book(session, vm, policy)
        except NoHostAvailable as exc:
            why = f"{_tries_text(tries)}; then {exc}"
    else:
        why = _tries_text(tries)
    set_state(
        vm,
        VmState.DOWN,
        exit_reason=ExitReason.START_FAILED,
        message=f"start failed on {len(tries)} host(s): {why}",
    )
    return None


class Starter:
    """Books VMs on hosts and calls the hosts; shared by StartVm, the host
    monitors (a START_FAILED report) and the HA restarter."""

    def __init__(self, store: VmStore, clients: HostClients, policy: Policy) -> None:
        self._store = store
        self._clients = clients
        self.policy = policy

    async def start(self, vm_ref: str, *, automatic: bool = False) -> Vm:
        """Books the DOWN VM and dispatches it; returns once a host has
        accepted it, or raises StartFailed / NoHostAvailable."""
        booked = await self._store.update(
            vm_ref, lambda s, vm: Outcome(True, book_fresh(s, vm, self.policy, automatic=automatic))
        )
        return (await self.dispatch(booked.value)).vm

    async def dispatch(self, dispatch: HostTarget) -> Updated[Operation | None]:
        """Calls the booked host's CreateVm, and the next host's after a
        refusal, until one accepts or the tries run out. Returns the VM and
        its START_VM operation, if it has one, as the host's acceptance
        left them (read in the transaction that recorded it)."""
        current: HostTarget | None = dispatch
        while current is not None:
            client = self._clients.get(current.host_id, current.host_name, current.address)
            assert current.config is not None  # a placed start's
            dispatched = utcnow()
            try:
                await client.create_vm(current.config, current.request_id)
            except HostUnreachable as exc:
                await self._store.update(current.vm_id, _lost_create(current, str(exc)))
                raise
            except CreateRefused as exc:
                log.info("host %s refused VM %s: %s", current.host_name, current.vm_name, exc)
                current = await self.retry(current.vm_id, current.host_id, str(exc))
                continue
            return await self._store.update(current.vm_id, _accepted(dispatched), lock=True)
        row = (await self._store.update(dispatch.vm_id, lambda _s, _v: Outcome(False, None))).vm
        raise StartFailed(row.name, row.status_message)

    async def retry(self, vm_id: str, host_id: str, error: str) -> HostTarget | None:
        """Books the VM whose start failed on host_id elsewhere, if it is
        still waiting for launch there; the caller dispatches the result."""

        def work(session: Session, vm: Vm) -> Outcome[HostTarget | None]:
            if vm.host_id != host_id or vm.state is not VmState.WAIT_FOR_LAUNCH:
                return Outcome(False, None)
            return Outcome(True, rebook(session, vm, host_id, error, self.policy))

        return (await self._store.update(vm_id, work)).value

    async def dispatch_quietly(self, dispatch: HostTarget) -> None:
        """dispatch() for a retry nobody waits for: failures are logged (the
        VM's state and message carry them)."""
        try:
            await self.dispatch(dispatch)
        except VirtplaneError as exc:
            log.warning("VM %s: start retry failed: %s", dispatch.vm_name, exc)

    async def resend_pending(self) -> int:
        """Repeats the CreateVm of every start a previous controller booked
        but may not have dispatched (it stopped mid-start). The key booked
        with it makes the repeat harmless where the first call landed.
        Returns how many were sent again."""

        def find(session: Session) -> list[HostTarget]:
            found = []
            for vm in repo.list_vms_in(session, (VmState.WAIT_FOR_LAUNCH,)):
                host = session.get(Host, vm.host_id) if vm.host_id else None
                if host is not None and vm.start_request_id:
                    found.append(dispatch_of(vm, host))
            return found

        pending = await self._store.db.run(find)
        for item in pending:
            try:
                await self.dispatch(item)
            except VirtplaneError as exc:
                log.warning("VM %s: sending its start again failed: %s", item.vm_name, exc)
        return len(pending)


def _accepted(dispatched: dt.datetime) -> Callable[[Session, Vm], Outcome[Operation | None]]:
    """A host accepted the VM: the start's operation, if it has one, moves
    on to waiting for the VM to run."""

    def mutate(session: Session, vm: Vm) -> Outcome[Operation | None]:
        # Read locked (VmStore.update(lock=True)), as start_accepted asks.
        return Outcome(False, operations.start_accepted(session, vm, dispatched))

    return mutate


def _lost_create(dispatch: HostTarget, why: str) -> Callable[[Session, Vm], Outcome[None]]:
    def mutate(_session: Session, vm: Vm) -> Outcome[None]:
        if vm.host_id != dispatch.host_id or vm.state is not VmState.WAIT_FOR_LAUNCH:
            return Outcome(False, None)
        set_state(
            vm,
            VmState.UNKNOWN,
            message=f"the create on host {dispatch.host_name!r} got no answer: {why}",
        )
        return Outcome(True, None)

    return mutate
