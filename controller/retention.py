"""Pruning what the controller keeps only for a while: request ids (a
repeat is expected within minutes, kept for a day by default), the audit
log and ended operations (a week). Pruning the log's VM deletions moves the
watches' resume floor past them: a WatchVms from an older revision gets a
fresh snapshot (controller.watch_stream)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, func, select, update
from sqlalchemy.orm import Session

from db import repositories as repo
from db.enums import OperationState
from db.models import ApiRequest, Event, Operation, RevisionCounter, utcnow
from db.session import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retention:
    request_ids: dt.timedelta = dt.timedelta(hours=24)
    history: dt.timedelta = dt.timedelta(days=7)  # the audit log and ended operations
    every: float = 3600.0  # seconds between prunings


@dataclass(frozen=True)
class Pruned:
    request_ids: int
    events: int
    operations: int
    resume_floor: int


def _count(session: Session, statement: Delete) -> int:
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount or 0)


def prune(session: Session, keep: Retention, now: dt.datetime | None = None) -> Pruned:
    now = now or utcnow()
    requests_before, history_before = now - keep.request_ids, now - keep.history
    requests = _count(session, delete(ApiRequest).where(ApiRequest.created_at < requests_before))
    newest_deletion = session.scalar(
        select(func.max(Event.revision)).where(
            Event.kind == repo.VM_DELETED, Event.time < history_before
        )
    )
    events = _count(session, delete(Event).where(Event.time < history_before))
    operations = _count(
        session,
        delete(Operation).where(
            Operation.state != OperationState.RUNNING, Operation.done_at < history_before
        ),
    )
    floor = repo.resume_floor(session)
    if newest_deletion is not None and newest_deletion > floor:
        floor = int(newest_deletion)
        session.execute(
            update(RevisionCounter).where(RevisionCounter.id == 1).values(resume_floor=floor)
        )
    return Pruned(requests, events, operations, floor)


async def run(db: Database, keep: Retention) -> None:
    """Prunes now and then every keep.every seconds, until cancelled."""
    while True:
        try:
            pruned = await db.run(lambda s: prune(s, keep))
            if pruned.request_ids or pruned.events or pruned.operations:
                log.info("pruned %s", pruned)
        except Exception:  # a failed pruning is retried at the next round
            log.exception("pruning failed")
        await asyncio.sleep(keep.every)
