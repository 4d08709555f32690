"""The balancer: the loop that applies controller.balancing's rules to the
cluster, and its dry run (ExplainBalancing).

Each look reads the hosts, their VMs and the migrations under way in one
transaction (snapshot()), tells the OverTracker what it saw (so "over for
300 s" counts from the first look that found the host over, and restarts
when a look finds it under), and decides. With the evenly-distributed
policy on, the loop looks every interval_seconds and, when it decides a
move, asks it through MigrateVm's own path (VmVerbs.migrate: an operation
of kind MIGRATE_VM, the migration limits apply) with cause "balancing",
and records an audit entry (BALANCING) with the reason. A balancing
migration under way (or waiting its turn) holds back the next one: at most
one at a time. Hosts preparing for maintenance or in it are neither source
nor destination (only UP hosts are).

The dry run (explain()) looks the same way and acts on nothing, whether the
policy is on or off.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import audit
from controller.balancing import (
    BalancePolicy,
    BalanceSettings,
    Decision,
    HostLoad,
    OverTracker,
    Snapshot,
    VmLoad,
    decide,
)
from controller.lifecycle.placement import capacities, demand_of
from controller.lifecycle.power import VmVerbs
from controller.periodic import Periodic
from controller.requests import Call
from controller.scheduler import Policy
from db import repositories as repo
from db.enums import ACTIVE_VM_STATES, OperationKind, OperationState
from db.models import Operation, Vm, utcnow
from db.session import Database
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

CAUSE = "balancing"
BALANCING = "BALANCING"  # the audit entry's kind
_BALANCE = Call("Balancing")


@dataclass(frozen=True)
class Cluster:
    """What one look read: the hosts with their VMs, and the VM of the
    balancing migration under way ("" for none)."""

    hosts: tuple[HostLoad, ...]
    balancing_vm: str


def snapshot(session: Session) -> Cluster:
    """The hosts, their active VMs and the migrations under way, now."""
    hosts = repo.list_hosts(session)
    running = session.execute(
        select(Operation.vm_id, Operation.cause).where(
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
        )
    ).all()
    migrating = {str(vm_id) for vm_id, _ in running}
    balancing = sorted(str(vm_id) for vm_id, cause in running if cause == CAUSE)
    loads = []
    for capacity in capacities(session, hosts):
        vms = [
            vm for vm in repo.list_vms(session, host_id=capacity.id) if vm.state in ACTIVE_VM_STATES
        ]
        loads.append(
            HostLoad(
                capacity,
                tuple(
                    VmLoad(
                        vm.id,
                        vm.name,
                        vm.state,
                        pinned=vm.pinned_host_id is not None,
                        migrating=vm.id in migrating,
                        demand=demand_of(session, vm, source_host_id=capacity.id),
                    )
                    for vm in vms
                ),
            )
        )
    names = [vm.name for vm in (session.get(Vm, i) for i in balancing) if vm is not None]
    return Cluster(tuple(loads), ", ".join(names))


def _recorded(decision: Decision, op_id: str | None, failed: str) -> Callable[[Session], None]:
    """The audit entry of a move: its reason, and how asking it failed."""

    def work(session: Session) -> None:
        assert decision.move is not None
        audit.record(
            session,
            BALANCING,
            decision.reason + (f"; asking the migration failed: {failed}" if failed else ""),
            vm_id=decision.move.vm_id,
            host_id=decision.move.source_id,
            operation_id=op_id,
        )

    return work


class Balancer:
    """The balancing loop (start()/stop(), on only with a policy) and the
    dry run (explain())."""

    def __init__(
        self,
        db: Database,
        verbs: VmVerbs,
        settings: BalanceSettings,
        policy: Policy,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._verbs = verbs
        self.settings = settings
        self._policy = policy
        self._clock = clock
        self._tracker = OverTracker()
        self._loop = Periodic("balancer", self.run_once, settings.interval_seconds)

    @property
    def enabled(self) -> bool:
        return self.settings.policy is not BalancePolicy.OFF

    def start(self) -> None:
        """Starts the loop, when a policy is on."""
        if self.enabled:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def explain(self) -> Decision:
        """What the balancer would do now, and why; acts on nothing."""
        cluster = await self._db.run(snapshot)
        now = self._clock()
        since = self._tracker.observe(cluster.hosts, self.settings, now)
        snap = Snapshot(cluster.hosts, since, now, cluster.balancing_vm)
        return decide(snap, self.settings, self._policy)

    async def run_once(self) -> Decision:
        """One look; with the policy on, asks the migration it decides on,
        and records why."""
        decision = await self.explain()
        move = decision.move
        if move is None or not self.enabled:
            log.debug("balancing: nothing to do: %s", decision.reason)
            return decision
        log.info("balancing: %s", decision.reason)
        try:
            asked = await self._verbs.migrate(move.vm_id, move.destination_id, _BALANCE, CAUSE)
        except VirtplaneError as exc:  # its operation ended FAILED; the next look decides again
            log.warning("balancing: migrating VM %s failed: %s", move.vm_name, exc)
            await self._db.run(_recorded(decision, None, str(exc)))
            return decision
        await self._db.run(_recorded(decision, asked.operation.id, ""))
        return decision
