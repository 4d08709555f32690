"""The invariants of the controller's database that no sequence of API calls
may break, checked on the rows (db.models): `problems(session)` lists each
broken one, and is empty on a consistent database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.enums import ACTIVE_VM_STATES, OperationState, VmOrigin, VmState
from db.models import (
    AffinityGroup,
    AffinityMember,
    Disk,
    Host,
    Nic,
    Operation,
    RevisionCounter,
    Vm,
)


def problems(session: Session) -> list[str]:
    """Every broken invariant, said in a line each."""
    hosts = {h.id: h for h in session.scalars(select(Host))}
    vms = list(session.scalars(select(Vm)))
    vm_ids = {vm.id for vm in vms}
    found: list[str] = []
    found += _duplicates("VM name", (vm.name for vm in vms))
    found += _duplicates("host name", (h.name for h in hosts.values()))
    found += _duplicates("group name", session.scalars(select(AffinityGroup.name)))
    found += _duplicates("VM revision", (vm.revision for vm in vms))
    found += _duplicates(
        "MAC address", (m.lower() for m in session.scalars(select(Nic.mac_address)))
    )
    counter = session.get(RevisionCounter, 1)
    top = counter.value if counter is not None else 0
    for vm in vms:
        found += _vm_problems(vm, hosts, top)
    found += _booking_problems(vms, hosts)
    found += _positions("NIC", session.execute(select(Nic.vm_id, Nic.position)).all())
    found += _positions("disk", session.execute(select(Disk.vm_id, Disk.position)).all())
    group_ids = set(session.scalars(select(AffinityGroup.id)))
    for member in session.scalars(select(AffinityMember)):
        if member.vm_id not in vm_ids or member.group_id not in group_ids:
            found.append(f"affinity member {member.group_id}/{member.vm_id} of nothing")
    running = select(Operation).where(Operation.state == OperationState.RUNNING)
    for op in session.scalars(running):
        if op.vm_id not in vm_ids:
            found.append(f"running operation {op.id} of missing VM {op.vm_id}")
    return found


def _vm_problems(vm: Vm, hosts: dict[str, Host], top_revision: int) -> list[str]:
    found = []
    if vm.host_id is not None and vm.host_id not in hosts:
        found.append(f"VM {vm.name} on missing host {vm.host_id}")
    if vm.state is VmState.DOWN and vm.host_id is not None:
        found.append(f"VM {vm.name} is DOWN but placed on host {vm.host_id}")
    if vm.state in ACTIVE_VM_STATES and vm.host_id is None:
        found.append(f"VM {vm.name} is {vm.state.value} on no host")
    if vm.revision > top_revision:
        found.append(f"VM {vm.name} has revision {vm.revision} above the counter {top_revision}")
    # An external VM whose size its host could not measure yet is recorded
    # as 0 vCPUs and 0 MiB (controller.monitor); any other has a size.
    unsized_external = vm.origin is VmOrigin.EXTERNAL and vm.vcpus == 0 and vm.memory_mib == 0
    if (vm.vcpus < 1 or vm.memory_mib < 1) and not unsized_external:
        found.append(f"VM {vm.name} has {vm.vcpus} vCPUs and {vm.memory_mib} MiB")
    return found


def _booking_problems(vms: list[Vm], hosts: dict[str, Host]) -> list[str]:
    """No host holds more memory in active VMs than it has (when known)."""
    booked: Counter[str] = Counter()
    for vm in vms:
        if vm.host_id is not None and vm.state in ACTIVE_VM_STATES:
            booked[vm.host_id] += vm.memory_mib
    return [
        f"host {hosts[h].name} booked {mib} MiB of {hosts[h].memory_total_mib}"
        for h, mib in booked.items()
        if h in hosts and 0 < hosts[h].memory_total_mib < mib
    ]


def _duplicates(what: str, values: Iterable[object]) -> list[str]:
    return [f"{what} {v!r} held {n} times" for v, n in Counter(values).items() if n > 1]


def _positions(what: str, rows: Iterable[tuple[str, int]]) -> list[str]:
    """Each VM's devices of one kind are at positions 0..n-1."""
    by_vm: dict[str, list[int]] = {}
    for vm_id, position in rows:
        by_vm.setdefault(vm_id, []).append(position)
    return [
        f"VM {vm_id}'s {what}s are at positions {sorted(p)}"
        for vm_id, p in by_vm.items()
        if sorted(p) != list(range(len(p)))
    ]
