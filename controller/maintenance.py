"""Host maintenance that evacuates: SetHostMaintenance of an UP host that
runs VMs moves it to PREPARING_FOR_MAINTENANCE (prepare()), and the
evacuation migrates every VM it can away through MigrateVm's own path
(controller.lifecycle.power.VmVerbs.migrate): the scheduler picks each
destination (affinity respected; a host preparing for maintenance takes no
VM), and the migration limits hold back the ones over them, in order.

The host's states::

    UP ─SetHostMaintenance (VMs run)→ PREPARING_FOR_MAINTENANCE
    PREPARING_FOR_MAINTENANCE ─the last VM gone→ MAINTENANCE
    PREPARING_FOR_MAINTENANCE ─ActivateHost→ UP (cancel())

The Evacuator looks at every host preparing for maintenance (look()) each
poll_interval seconds, at once when a host is asked to evacuate, and, while
one is preparing, as soon as a VM changes (controller.wakeup). A VM that
cannot move (pinned to the host, not UP, no destination fits, its
evacuation's migration failed) is named in the host's message with why, and
keeps the host preparing (a new SetHostMaintenance after ActivateHost tries
the failed ones again); every other VM is asked to migrate, unless its
migration is under way or waits its turn. A host that runs nothing any
more goes MAINTENANCE and is no longer watched. Everything is in the
database, so a restarted controller carries on.

ActivateHost cancels the evacuation: the host is UP again, the evacuation's
migrations that wait their turn end FAILED (CANCELLED), those under way
may finish.

HA and the evacuation never fight: a VM being migrated is MIGRATING_FROM,
which no host's report turns DOWN (controller.lifecycle.transitions), and
only a DOWN VM is restarted (controller.ha).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import operations
from controller.host_state import set_host_state
from controller.lifecycle.placement import placement
from controller.lifecycle.power import VmVerbs
from controller.periodic import Periodic
from controller.requests import Call
from controller.scheduler import Policy
from controller.wakeup import Wakeup
from db import repositories as repo
from db.enums import ACTIVE_VM_STATES, HostState, OperationKind, OperationState, VmState
from db.models import Host, Operation, Vm
from db.session import Database
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

CAUSE = "maintenance"
CANCELLED = "the host was activated; its evacuation was cancelled"
_EVACUATE = Call("SetHostMaintenance")


def _active(session: Session, host: Host) -> list[Vm]:
    return [vm for vm in repo.list_vms(session, host_id=host.id) if vm.state in ACTIVE_VM_STATES]


def prepare(session: Session, host: Host, request_id: str = "") -> bool:
    """SetHostMaintenance on the locked host: an UP host running VMs goes
    PREPARING_FOR_MAINTENANCE (one preparing stays so); returns whether it
    is preparing. Otherwise the caller moves it to MAINTENANCE or refuses."""
    if host.state is HostState.PREPARING_FOR_MAINTENANCE:
        return True
    vms = _active(session, host)
    if host.state is not HostState.UP or not vms:
        return False
    # A new evacuation tries again the VMs an earlier one failed to move.
    for op in _failed_evacuations(session, [vm.id for vm in vms]):
        op.cause = ""
    set_host_state(
        session, host, HostState.PREPARING_FOR_MAINTENANCE, "evacuating its VMs", request_id
    )
    return True


def _failed_evacuations(session: Session, vm_ids: list[str]) -> list[Operation]:
    """The migrations of the evacuation under way that failed (not
    cancelled), of the VMs vm_ids."""
    return list(
        session.scalars(
            select(Operation).where(
                Operation.vm_id.in_(vm_ids),
                Operation.kind == OperationKind.MIGRATE_VM,
                Operation.state == OperationState.FAILED,
                Operation.cause == CAUSE,
                Operation.error_code != operations.CANCELLED,
            )
        ).all()
    )


def _waiting_evacuations(session: Session, host: Host) -> list[Operation]:
    return list(
        session.scalars(
            select(Operation)
            .join(Vm, Vm.id == Operation.vm_id)
            .where(
                Vm.host_id == host.id,
                Operation.kind == OperationKind.MIGRATE_VM,
                Operation.state == OperationState.RUNNING,
                Operation.waiting.is_(True),
                Operation.cause == CAUSE,
            )
        ).all()
    )


def cancel(session: Session, host: Host, request_id: str = "") -> None:
    """ActivateHost on a host preparing for maintenance (locked): UP again;
    the evacuation's waiting migrations end, those under way go on."""
    for op in _waiting_evacuations(session, host):
        operations.failed(session, op.id, operations.CANCELLED, CANCELLED)
    set_host_state(
        session, host, HostState.UP, "activated; the evacuation was cancelled", request_id
    )


@dataclass(frozen=True)
class Stuck:
    """A VM that cannot leave the host, and why."""

    vm: str
    why: str


@dataclass
class Look:
    """One look at a host preparing for maintenance."""

    host_id: str
    # The VMs to ask to migrate now (ids).
    to_move: list[str] = field(default_factory=list)
    # The VMs whose migration is under way or waits its turn (names).
    moving: list[str] = field(default_factory=list)
    stuck: list[Stuck] = field(default_factory=list)
    # The host ran nothing any more: it went MAINTENANCE.
    emptied: bool = False

    def message(self) -> str:
        moving = len(self.moving) + len(self.to_move)
        parts = [f"evacuating: {moving} VM{'s' if moving != 1 else ''} moving"]
        if self.stuck:
            named = ", ".join(f"{s.vm} ({s.why})" for s in self.stuck)
            parts.append(f"cannot move: {named}")
        return "; ".join(parts)


def _migrating(session: Session, vm_ids: list[str]) -> set[str]:
    """Those of vm_ids whose migration is under way or waits its turn."""
    return set(
        session.scalars(
            select(Operation.vm_id).where(
                Operation.vm_id.in_(vm_ids),
                Operation.kind == OperationKind.MIGRATE_VM,
                Operation.state == OperationState.RUNNING,
            )
        ).all()
    )


def _why_stuck(session: Session, vm: Vm, host: Host, policy: Policy) -> str:
    """Why vm cannot leave host now; "" when a destination fits."""
    if vm.pinned_host_id == host.id:
        return "pinned to this host"
    if vm.state is not VmState.UP:
        return f"it is {vm.state.value}; only an UP VM migrates"
    _hosts, judged = placement(session, vm, policy, lock=False, source_host_id=host.id)
    if judged.host is not None:
        return ""
    others = {name: why for name, why in judged.rejections.items() if name != host.name}
    if not others:
        return "no other host"
    return "no host fits: " + "; ".join(f"{n}: {w}" for n, w in sorted(others.items()))


def look(session: Session, host_id: str, policy: Policy) -> Look | None:
    """Looks at a host preparing for maintenance (None if it no longer is):
    which VMs to move, which are moving, which cannot move; the host goes
    MAINTENANCE once it runs nothing, else its message says all that."""
    host = repo.lock_host(session, host_id)
    if host is None or host.state is not HostState.PREPARING_FOR_MAINTENANCE:
        return None
    found = Look(host.id)
    vms = _active(session, host)
    migrating = _migrating(session, [vm.id for vm in vms])
    failed = {
        op.vm_id: op.error_message for op in _failed_evacuations(session, [v.id for v in vms])
    }
    for vm in vms:
        if vm.id in migrating:
            found.moving.append(vm.name)
            continue
        why = f"its migration failed: {failed[vm.id]}" if vm.id in failed else ""
        why = why or _why_stuck(session, vm, host, policy)
        if why:
            found.stuck.append(Stuck(vm.name, why))
        else:
            found.to_move.append(vm.id)
    if not vms:
        set_host_state(session, host, HostState.MAINTENANCE, "in maintenance")
        found.emptied = True
    else:
        host.state_message = found.message()
    return found


class Evacuator:
    """The loop that empties the hosts preparing for maintenance."""

    def __init__(
        self,
        db: Database,
        verbs: VmVerbs,
        policy: Policy,
        emptied: Callable[[str], Awaitable[None]],
        poll_interval: float = 2.0,
    ) -> None:
        self._db = db
        self._verbs = verbs
        self._policy = policy
        self._emptied = emptied
        self.wakeup = Wakeup()
        self._loop = Periodic("evacuator", self.run_once, poll_interval, self.wakeup)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> list[Look]:
        """One look at every host preparing for maintenance; asks the VMs
        that can move to migrate."""
        host_ids = await self._db.run(
            lambda s: [h.id for h in repo.list_hosts(s, HostState.PREPARING_FOR_MAINTENANCE)]
        )
        self.wakeup.busy = bool(host_ids)
        looks: list[Look] = []
        for host_id in host_ids:
            found = await self._db.run(
                functools.partial(look, host_id=host_id, policy=self._policy)
            )
            if found is None:
                continue
            looks.append(found)
            if found.emptied:
                await self._emptied(host_id)
            for vm_id in found.to_move:
                try:
                    await self._verbs.migrate(vm_id, "", _EVACUATE, cause=CAUSE)
                except VirtplaneError as exc:  # the next look says why it stays
                    log.warning("evacuating VM %s: %s", vm_id, exc)
        return looks
