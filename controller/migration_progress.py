"""A migration's transfer, as its source host reports it, in its operation.

The source hostd reports an outgoing migration's progress as migration
events about once a second while the memory is copied, and once as it ends
(hostd.migration); the host's monitor hands them to its MigrationFeed. The
feed converts each to a Transfer, coalesces them (controller.coalescer: at
most one write per VM per interval, the latest winning) and writes the one
that ends the transfer at once. record() writes a Transfer into the VM's
newest MIGRATE_VM operation: its phase, statistics, downtime, and the times
it began transferring and switched over.

The destination's reports of the same migration (incoming) are not used:
the source's hypervisor job measures the transfer. A switch-over may be
recorded after the operation has ended: the destination's UP can reach the
controller before the source's report of the downtime.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller.coalescer import DEFAULT_INTERVAL, Coalescer
from db.enums import MigrationPhase, OperationKind
from db.models import Operation
from db.session import Database

log = logging.getLogger(__name__)

_Pb = agent_pb2.MigrationProgress

_PHASES = {
    _Pb.PHASE_TRANSFERRING: MigrationPhase.TRANSFERRING,
    _Pb.PHASE_COMPLETED: MigrationPhase.SWITCHED_OVER,
    _Pb.PHASE_FAILED: MigrationPhase.FAILED,
    _Pb.PHASE_CANCELLED: MigrationPhase.CANCELLED,
}

ENDED = frozenset({MigrationPhase.SWITCHED_OVER, MigrationPhase.FAILED, MigrationPhase.CANCELLED})


@dataclass(frozen=True)
class Transfer:
    """One report of an outgoing migration's transfer."""

    vm_id: str
    phase: MigrationPhase
    total_bytes: int = 0
    processed_bytes: int = 0
    remaining_bytes: int = 0
    bytes_per_second: int = 0
    iterations: int = 0
    elapsed_ms: int = 0
    downtime_ms: int = 0
    message: str = ""
    # When it ended, by the source's clock.
    ended: dt.datetime | None = None

    @property
    def ended_now(self) -> bool:
        return self.phase in ENDED


def transfer_of(report: agent_pb2.MigrationProgress) -> Transfer | None:
    """The Transfer a source host reported; None for a destination's report
    (or one without a phase)."""
    phase = _PHASES.get(report.phase)
    if report.direction != _Pb.DIRECTION_OUTGOING or phase is None:
        return None
    return Transfer(
        vm_id=report.vm_id,
        phase=phase,
        total_bytes=report.data_total_bytes,
        processed_bytes=report.data_processed_bytes,
        remaining_bytes=report.data_remaining_bytes,
        bytes_per_second=report.bytes_per_second,
        iterations=report.iterations,
        elapsed_ms=report.elapsed_ms,
        downtime_ms=report.downtime_ms,
        message=report.message,
        ended=report.end_time.ToDatetime(dt.UTC) if report.HasField("end_time") else None,
    )


def percent(phase: MigrationPhase | None, total: int, remaining: int) -> int:
    """How much of the data has been sent, 0 to 100; 100 once switched over."""
    if phase is MigrationPhase.SWITCHED_OVER:
        return 100
    if total <= 0:
        return 0
    return max(0, min(100, (total - remaining) * 100 // total))


def _migration_of(session: Session, vm_id: str) -> Operation | None:
    """The VM's newest migration, locked until the transaction ends."""
    return session.scalars(
        select(Operation)
        .where(Operation.vm_id == vm_id, Operation.kind == OperationKind.MIGRATE_VM)
        .order_by(Operation.created_at.desc())
        .limit(1)
        .with_for_update()
    ).first()


def record(session: Session, source_host_id: str, transfer: Transfer, now: dt.datetime) -> bool:
    """Writes transfer, reported by source_host_id at now, into the VM's
    newest migration; returns whether it did. A report of another migration
    (the operation's destination is the reporting host) or one after the
    transfer ended is left out."""
    op = _migration_of(session, transfer.vm_id)
    if op is None or op.host_id == source_host_id or op.migration_phase in ENDED:
        return False
    op.migration_phase = transfer.phase
    op.migration_total_bytes = transfer.total_bytes
    op.migration_processed_bytes = transfer.processed_bytes
    op.migration_remaining_bytes = transfer.remaining_bytes
    op.migration_bytes_per_second = transfer.bytes_per_second
    op.migration_iterations = transfer.iterations
    op.migration_elapsed_ms = transfer.elapsed_ms
    op.migration_downtime_ms = transfer.downtime_ms
    op.migration_message = transfer.message
    op.migration_updated_at = now
    if op.transferring_at is None:
        op.transferring_at = now
    if transfer.phase is MigrationPhase.SWITCHED_OVER:
        op.switched_over_at = transfer.ended or now
    return True


class MigrationFeed:
    """One source host's migration reports on their way to the operations."""

    def __init__(
        self,
        host_id: str,
        db: Database,
        lock: asyncio.Lock,
        interval: float = DEFAULT_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """lock: the monitor's, which offer() is called under."""
        self._host_id = host_id
        self._db = db
        self.coalescer: Coalescer[Transfer] = Coalescer(self._write, lock, interval, monotonic)

    async def offer(self, report: agent_pb2.MigrationProgress, received: dt.datetime) -> None:
        """A migration event arrived: written now, within the interval, or
        (the transfer ended) at once."""
        transfer = transfer_of(report)
        if transfer is None:
            return
        await self.coalescer.offer(transfer, received)
        if transfer.ended_now:
            await self.coalescer.flush(transfer.vm_id)

    async def close(self) -> None:
        await self.coalescer.close()

    async def _write(self, transfer: Transfer, received: dt.datetime) -> None:
        if not await self._db.run(lambda s: record(s, self._host_id, transfer, received)):
            log.debug("host %s: migration report of VM %s matches no operation",
                      self._host_id, transfer.vm_id)  # fmt: skip
