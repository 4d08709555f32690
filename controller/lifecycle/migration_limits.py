"""The migration limits, as oVirt's defaults: at most 2 outgoing and 2
incoming migrations per host, and a cluster-wide cap. A migration over a
limit waits its turn (controller.lifecycle.migration_queue); what it waits
for is said as "waiting: host h1 has 2 outgoing".

A migration counts from when its destination is booked (its operation
RUNNING, not waiting) until its operation ends, SUCCEEDED or FAILED: the
VM's host is its source, the operation's host its destination.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.enums import OperationKind, OperationState
from db.models import Host, Operation, Vm


@dataclass(frozen=True)
class MigrationLimits:
    """How many migrations may be under way at once."""

    outgoing_per_host: int = 2
    incoming_per_host: int = 2
    cluster: int = 10
    # Seconds between the queue's looks for a migration whose turn came.
    poll_interval: float = 1.0


@dataclass
class InFlight:
    """The migrations under way: per source and per destination host id."""

    outgoing: Counter[str] = field(default_factory=Counter)
    incoming: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def add(self, source_id: str, destination_id: str) -> None:
        self.outgoing[source_id] += 1
        self.incoming[destination_id] += 1
        self.total += 1


def in_flight(session: Session) -> InFlight:
    """The migrations under way now (their destination booked)."""
    rows = session.execute(
        select(Vm.host_id, Operation.host_id)
        .join(Vm, Vm.id == Operation.vm_id)
        .where(
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
            Operation.waiting.is_(False),
            Operation.host_id.is_not(None),
        )
    ).all()
    counts = InFlight()
    for source_id, destination_id in rows:
        counts.add(str(source_id or ""), str(destination_id))
    return counts


def held_back(limits: MigrationLimits, counts: InFlight, source: Host, destination: Host) -> str:
    """Why a migration from source to destination must wait now, as its
    operation says it; "" when it may start."""
    if counts.total >= limits.cluster:
        return f"waiting: the cluster has {counts.total} migrations under way"
    if counts.outgoing[source.id] >= limits.outgoing_per_host:
        return f"waiting: host {source.name} has {counts.outgoing[source.id]} outgoing"
    if counts.incoming[destination.id] >= limits.incoming_per_host:
        return f"waiting: host {destination.name} has {counts.incoming[destination.id]} incoming"
    return ""


def waiting_migrations(session: Session) -> list[Operation]:
    """The migrations waiting their turn, oldest first, locked."""
    return list(
        session.scalars(
            select(Operation)
            .where(
                Operation.kind == OperationKind.MIGRATE_VM,
                Operation.state == OperationState.RUNNING,
                Operation.waiting.is_(True),
            )
            .order_by(Operation.created_at, Operation.id)
            .with_for_update()
        ).all()
    )


def waiting_of(session: Session, vm_id: str) -> Operation | None:
    """vm's migration that waits its turn, if any."""
    return session.scalars(
        select(Operation).where(
            Operation.vm_id == vm_id,
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
            Operation.waiting.is_(True),
        )
    ).first()


def anyone_waiting(session: Session) -> bool:
    return (
        session.scalars(
            select(Operation.id)
            .where(
                Operation.kind == OperationKind.MIGRATE_VM,
                Operation.state == OperationState.RUNNING,
                Operation.waiting.is_(True),
            )
            .limit(1)
        ).first()
        is not None
    )
