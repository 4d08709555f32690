"""Migrations whose destination host cannot be reached are cancelled.

When a host's monitor finds the host unreachable (controller.monitor), every
migration to it still under way is cancelled on its source: the hypervisor's
job is aborted there, the VM runs on at its source, UP, and the operation
ends FAILED (ABORTED) saying the destination could not be reached, once the
source reports the VM running again (controller.operations ends a marked
migration with its mark). Without this, a destination hostd that died
mid-transfer would leave the VM migrating to a host nobody watches.

A migration that has landed already (the source let the VM go) is not
cancelled by its source; it ends when the destination answers again and
reports the VM. Each migration is cancelled once: the mark says it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import operations
from controller.hosts import HostClients
from controller.lifecycle.target import HostTarget
from controller.vm_store import VmStore
from db.enums import OperationKind, OperationState, VmState
from db.models import Host, Operation, Vm
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

ABORTED = "ABORTED"


def lost_destination(name: str, why: str) -> str:
    """The reason a migration to host name ends FAILED with."""
    return f"the destination host {name!r} cannot be reached ({why}); the migration was cancelled"


@dataclass(frozen=True)
class Stranded:
    """A migration to the lost host: the VM, on its source."""

    op_id: str
    source: HostTarget


def strand(session: Session, host_id: str, why: str) -> list[Stranded]:
    """Marks the running migrations to host_id (not marked yet) as ending
    FAILED for the lost destination; returns them with their sources."""
    host = session.get(Host, host_id)
    reason = lost_destination(host.name if host is not None else host_id, why)
    rows = session.execute(
        select(Operation, Vm)
        .join(Vm, Vm.id == Operation.vm_id)
        .where(
            Operation.kind == OperationKind.MIGRATE_VM,
            Operation.state == OperationState.RUNNING,
            Operation.host_id == host_id,
            Operation.error_code == "",
            Vm.state == VmState.MIGRATING_FROM,
            Vm.host_id != host_id,
        )
    ).all()
    stranded = []
    for op, vm in rows:
        source = session.get(Host, vm.host_id) if vm.host_id else None
        if source is None:
            continue
        operations.mark_cancelled(session, op.id, reason, code=ABORTED)
        stranded.append(Stranded(op.id, HostTarget.of(vm, source)))
    return stranded


class StrandedMigrations:
    """Cancels, on their sources, the migrations to a host that cannot be reached."""

    def __init__(self, store: VmStore, clients: HostClients) -> None:
        self._store = store
        self._clients = clients

    async def destination_lost(self, host_id: str, why: str) -> None:
        """host_id cannot be reached (why): its incoming migrations are cancelled."""
        stranded = await self._store.db.run(lambda s: strand(s, host_id, why))
        for each in stranded:
            source = each.source
            client = self._clients.get(source.host_id, source.host_name, source.address)
            try:
                await client.cancel_migration(source.vm_id)
            except VirtplaneError as exc:
                # Landed already, or the source is lost too: the hosts'
                # reports end the operation when they answer.
                log.warning(
                    "VM %s: cannot cancel its migration to lost host %s on %s: %s",
                    source.vm_name, host_id, source.host_name, exc,
                )  # fmt: skip
