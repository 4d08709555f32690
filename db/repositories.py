"""Queries and writes on the controller's tables. The caller owns the session
and its transaction (see db.session.Database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from db.enums import (
    ACTIVE_VM_STATES,
    PENDING_VM_STATES,
    HostState,
    OperationKind,
    OperationState,
    VmOrigin,
    VmState,
)
from db.models import (
    AffinityGroup,
    AffinityMember,
    Event,
    GuestFact,
    Host,
    Nic,
    Operation,
    RevisionCounter,
    Vm,
)

# The kind of the event that records a VM's deletion (controller.audit).
VM_DELETED = "VM_DELETED"


def find_host(session: Session, id_or_name: str) -> Host | None:
    return session.scalars(
        select(Host).where(or_(Host.id == id_or_name, Host.name == id_or_name))
    ).first()


def host_by_name(session: Session, name: str) -> Host | None:
    return session.scalars(select(Host).where(Host.name == name)).first()


def list_hosts(session: Session, state: HostState | None = None) -> Sequence[Host]:
    query = select(Host).order_by(Host.name)
    if state is not None:
        query = query.where(Host.state == state)
    return session.scalars(query).all()


class HostRow(NamedTuple):
    """What placement reads of a host, without loading its row as an object."""

    id: str
    name: str
    state: HostState
    memory_total_mib: int
    cpus: int


def lock_hosts(session: Session) -> list[HostRow]:
    """Every host, locked until the transaction ends (SELECT … FOR UPDATE),
    as placement reads it.

    Placing a VM takes these locks before reading what the hosts hold, so two
    concurrent placements are serialised and the second sees the first's
    booking. On PostgreSQL they are FOR NO KEY UPDATE locks: they exclude each
    other and updates of the host rows, but not the foreign-key checks of
    rows that point at a host (a VM placed there), which would otherwise
    deadlock with a placement. SQLite takes no row locks: there the whole database is locked
    from the start of a transaction (see db.session). The rows are read as
    plain values (a thousand hosts are a thousand objects otherwise, at every
    start); a Host object this session loaded before is not refreshed:
    session.get(Host, id, populate_existing=True) the one that is needed.
    """
    query = (
        select(Host.id, Host.name, Host.state, Host.memory_total_mib, Host.cpus)
        .order_by(Host.name)
        .with_for_update(key_share=True)
    )
    return [HostRow(*row) for row in session.execute(query).all()]


def lock_host(session: Session, id_or_name: str) -> Host | None:
    """The host, locked until the transaction ends (SELECT … FOR UPDATE), so
    that no placement on it (lock_hosts) interleaves with a change of its state."""
    query = (
        select(Host)
        .where(or_(Host.id == id_or_name, Host.name == id_or_name))
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(query).first()


def host_usage(session: Session) -> dict[str, tuple[int, int, int]]:
    """For each host id: (memory MiB, vCPUs, VMs) held by the VMs placed on it,
    pending starts included, and by the VMs migrating to it (booked there
    until their migration ends)."""
    rows = session.execute(
        select(Vm.host_id, func.sum(Vm.memory_mib), func.sum(Vm.vcpus), func.count(Vm.id))
        .where(Vm.host_id.is_not(None), Vm.state.in_(ACTIVE_VM_STATES))
        .group_by(Vm.host_id)
    ).all()
    usage = {str(h): (int(m or 0), int(c or 0), int(n)) for h, m, c, n in rows}
    incoming = session.execute(
        select(Operation.host_id, func.sum(Vm.memory_mib), func.sum(Vm.vcpus), func.count(Vm.id))
        .join(Vm, Vm.id == Operation.vm_id)
        .where(
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
            Operation.host_id.is_not(None),
            Vm.host_id != Operation.host_id,
        )
        .group_by(Operation.host_id)
    ).all()
    for h, m, c, n in incoming:
        held = usage.get(str(h), (0, 0, 0))
        usage[str(h)] = (held[0] + int(m or 0), held[1] + int(c or 0), held[2] + int(n))
    return usage


def find_vm(session: Session, id_or_name: str, *, lock: bool = False) -> Vm | None:
    """The VM; with lock, its row locked until the transaction ends (SELECT …
    FOR UPDATE) and read as it is once locked."""
    query = select(Vm).where(or_(Vm.id == id_or_name, Vm.name == id_or_name))
    if lock:
        query = query.with_for_update(of=Vm).execution_options(populate_existing=True)
    return session.scalars(query).first()


def vm_by_name(session: Session, name: str) -> Vm | None:
    return session.scalars(select(Vm).where(Vm.name == name)).first()


def list_vms(session: Session, host_id: str | None = None) -> Sequence[Vm]:
    query = select(Vm).order_by(Vm.name)
    if host_id is not None:
        query = query.where(Vm.host_id == host_id)
    return session.scalars(query).all()


def page_vms(
    session: Session,
    *,
    states: Collection[VmState] = (),
    host_id: str | None = None,
    name_contains: str = "",
    after_name: str = "",
    limit: int,
) -> Sequence[Vm]:
    """Up to limit VMs by name, after after_name, matching every filter given."""
    query = select(Vm).order_by(Vm.name).limit(limit)
    if states:
        query = query.where(Vm.state.in_(states))
    if host_id is not None:
        query = query.where(Vm.host_id == host_id)
    if name_contains:
        query = query.where(Vm.name.contains(name_contains, autoescape=True))
    if after_name:
        query = query.where(Vm.name > after_name)
    return session.scalars(query).all()


def lock_vms(session: Session, ids: Collection[str]) -> None:
    """Locks the VM rows (by id order) until the transaction ends."""
    if ids:
        session.execute(
            select(Vm.id).where(Vm.id.in_(sorted(ids))).order_by(Vm.id).with_for_update()
        ).all()


def allocate_revisions(session: Session, count: int = 1) -> int:
    """Takes the next count revisions and returns the last of them: the block
    is last - count + 1 … last.

    The counter row stays locked until the transaction ends, so a concurrent
    transaction that wants revisions waits for this one to commit (or roll
    back, which gives its revisions back). Flush the rows this transaction
    writes before calling it, so that every transaction locks rows first and
    the counter last, and none can wait for another in a cycle.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    stmt = (
        update(RevisionCounter)
        .where(RevisionCounter.id == 1)
        .values(value=RevisionCounter.value + count)
        .returning(RevisionCounter.value)
        .execution_options(synchronize_session=False)
    )
    return int(session.execute(stmt).scalar_one())


def current_revision(session: Session) -> int:
    """The last revision given to a committed change."""
    return int(session.scalar(select(RevisionCounter.value).where(RevisionCounter.id == 1)) or 0)


def mac_user(session: Session, mac: str, *, other_than: str = "") -> str | None:
    """The name of the VM (other than VM id other_than) with a NIC of this MAC."""
    query = select(Vm.name).join(Nic, Nic.vm_id == Vm.id).where(Nic.mac_address == mac)
    if other_than:
        query = query.where(Vm.id != other_than)
    return session.scalars(query.limit(1)).first()


def mac_in_use(session: Session, mac: str) -> bool:
    return session.scalar(select(func.count(Nic.id)).where(Nic.mac_address == mac)) != 0


def set_guest_facts(
    session: Session,
    vm: Vm,
    facts: Mapping[str, Any],
    *,
    source: str,
    observed_at: dt.datetime,
    received_at: dt.datetime,
) -> None:
    """Records each fact with when it was observed; facts not named are kept."""
    current = {f.name: f for f in vm.guest_facts}
    for name, value in facts.items():
        fact = current.get(name)
        if fact is None:
            fact = GuestFact(vm_id=vm.id, name=name)
            vm.guest_facts.append(fact)
        fact.value = value
        fact.source = source
        fact.observed_at = observed_at
        fact.received_at = received_at
    session.flush()


def resume_floor(session: Session) -> int:
    """The oldest revision a watch can resume after: deletions before it
    are not on record."""
    return int(
        session.scalar(select(RevisionCounter.resume_floor).where(RevisionCounter.id == 1)) or 0
    )


def vms_changed_after(session: Session, revision: int) -> Sequence[Vm]:
    """The VMs changed after revision, each as it is now, in revision order."""
    return session.scalars(select(Vm).where(Vm.revision > revision).order_by(Vm.revision)).all()


def deletions_after(session: Session, revision: int) -> Sequence[Event]:
    """The records of the VMs deleted after revision, in revision order."""
    return session.scalars(
        select(Event)
        .where(Event.kind == VM_DELETED, Event.revision > revision)
        .order_by(Event.revision)
    ).all()


def list_vms_in(session: Session, states: Collection[VmState]) -> Sequence[Vm]:
    return session.scalars(select(Vm).where(Vm.state.in_(states)).order_by(Vm.name)).all()


def host_pending(session: Session) -> dict[str, tuple[int, int]]:
    """For each host id: (memory MiB, vCPUs) booked by VMs placed on it that
    do not run yet (a start under way). Once the host reports them running
    they count as used instead; DOWN, they count no more."""
    rows = session.execute(
        select(Vm.host_id, func.sum(Vm.memory_mib), func.sum(Vm.vcpus))
        .where(Vm.host_id.is_not(None), Vm.state.in_(PENDING_VM_STATES))
        .group_by(Vm.host_id)
    ).all()
    return {str(h): (int(m or 0), int(c or 0)) for h, m, c in rows}


def affinity_of(session: Session, vm_id: str) -> list[tuple[str, bool, bool, set[str]]]:
    """The affinity groups vm_id is in: (name, positive, enforcing, the hosts
    the group's other VMs are placed on)."""
    groups = session.scalars(
        select(AffinityGroup)
        .join(AffinityMember, AffinityMember.group_id == AffinityGroup.id)
        .where(AffinityMember.vm_id == vm_id)
        .order_by(AffinityGroup.name)
    ).all()
    out = []
    for group in groups:
        peers = [m.vm_id for m in group.members if m.vm_id != vm_id]
        hosts: set[str] = set()
        if peers:
            hosts = {
                str(h)
                for h in session.scalars(
                    select(Vm.host_id).where(
                        Vm.id.in_(peers), Vm.host_id.is_not(None), Vm.state.in_(ACTIVE_VM_STATES)
                    )
                )
            }
        out.append((group.name, group.positive, group.enforcing, hosts))
    return out


def find_affinity_group(session: Session, id_or_name: str) -> AffinityGroup | None:
    return session.scalars(
        select(AffinityGroup).where(
            or_(AffinityGroup.id == id_or_name, AffinityGroup.name == id_or_name)
        )
    ).first()


def list_affinity_groups(session: Session) -> Sequence[AffinityGroup]:
    return session.scalars(select(AffinityGroup).order_by(AffinityGroup.name)).all()


def due_ha_restarts(session: Session, now: dt.datetime) -> Sequence[Vm]:
    """Highly available VMs that are DOWN with an automatic restart due."""
    return session.scalars(
        select(Vm)
        .where(
            Vm.highly_available.is_(True),
            Vm.state == VmState.DOWN,
            Vm.ha_restart_at.is_not(None),
            Vm.ha_restart_at <= now,
        )
        .order_by(Vm.ha_restart_at)
    ).all()


def unsized_vm_ids(session: Session, ids: Collection[str]) -> list[str]:
    """Those of ids that no VM row has, or whose row is an external VM of
    unknown size."""
    sized = set(
        session.scalars(
            select(Vm.id).where(Vm.id.in_(ids), or_(Vm.origin != VmOrigin.EXTERNAL, Vm.vcpus > 0))
        )
    )
    return [i for i in ids if i not in sized]
