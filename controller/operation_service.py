"""OperationService: GetOperation, ListOperations (paged), WaitOperation
and the audit log's ListEvents. What an operation is and what ends it is
controller.operations."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import json
import time
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session
from virtplane.v1 import operation_pb2
from virtplane.v1 import operation_service_pb2 as op_api

from controller import audit
from controller.errors import VmNotFound
from controller.operations import find
from controller.watch import Subscription, TooSlow, WatchHub
from db import repositories as repo
from db.enums import OperationState
from db.models import Event, Operation
from db.session import Database
from virtplane_common.errors import InvalidArgument
from virtplane_common.limits import NAME_COLUMN
from virtplane_common.validation import check_printable, check_reference

DEFAULT_WAIT = 60
MAX_WAIT = 600
MAX_PAGE = 1000
_POLL = 1.0  # seconds between reads of an operation waited for

_STATES = {
    operation_pb2.Operation.STATE_RUNNING: OperationState.RUNNING,
    operation_pb2.Operation.STATE_SUCCEEDED: OperationState.SUCCEEDED,
    operation_pb2.Operation.STATE_FAILED: OperationState.FAILED,
}


def _page_token(filters: dict[str, Any], last: Operation) -> str:
    raw = {"filters": filters, "created": last.created_at.isoformat(), "id": last.id}
    return base64.urlsafe_b64encode(json.dumps(raw, sort_keys=True).encode()).decode()


class OperationService:
    """GetOperation, ListOperations, WaitOperation and the audit log."""

    def __init__(self, db: Database, hub: WatchHub | None = None) -> None:
        self._db = db
        self._hub = hub

    async def get(self, op_id: str) -> Operation:
        if not op_id:
            raise InvalidArgument("id", "is required")
        return await self._db.run(lambda s: find(s, op_id))

    async def wait(self, op_id: str, timeout_seconds: int) -> Operation:
        """The operation once done, or as it is when the timeout passes. It
        is read again whenever its VM changes here, and at least every
        second (another controller may end it, or the host's answer alone)."""
        if timeout_seconds > MAX_WAIT:
            raise InvalidArgument("timeout_seconds", f"must be at most {MAX_WAIT}")
        deadline = time.monotonic() + (timeout_seconds or DEFAULT_WAIT)
        sub = self._hub.subscribe() if self._hub is not None else None
        try:
            while True:
                op = await self.get(op_id)
                left = deadline - time.monotonic()
                if op.state is not OperationState.RUNNING or left <= 0:
                    return op
                await self._vm_changed(sub, op.vm_id, min(_POLL, left))
        finally:
            if sub is not None:
                sub.close()

    @staticmethod
    async def _vm_changed(sub: Subscription | None, vm_id: str, seconds: float) -> None:
        """Returns when vm_id changes, or after seconds."""
        if sub is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError, TooSlow):
            async with asyncio.timeout(seconds):
                while (await sub.next()).vm.id != vm_id:
                    pass

    async def page(self, request: op_api.ListOperationsRequest) -> tuple[list[Operation], str]:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(request.page_size or 100, MAX_PAGE)
        states = []
        for i, value in enumerate(request.states):
            if value not in _STATES:
                raise InvalidArgument(f"states[{i}]", f"is not an operation state: {value}")
            states.append(_STATES[value])
        vm_ref = check_reference("vm", request.vm) if request.vm else ""
        filters = {"vm": vm_ref, "states": sorted(s.value for s in states)}
        after: tuple[dt.datetime, str] | None = None
        if request.page_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                after = (dt.datetime.fromisoformat(token["created"]), str(token["id"]))
                check_printable("page_token", after[1], NAME_COLUMN)
                same = token["filters"] == filters
            except InvalidArgument:
                raise
            except (binascii.Error, ValueError, KeyError, TypeError) as exc:
                raise InvalidArgument("page_token", "is not a token ListOperations gave") from exc
            if not same:
                raise InvalidArgument("page_token", "was given for other filters")

        def work(session: Session) -> tuple[list[Operation], str]:
            query = select(Operation).order_by(Operation.created_at.desc(), Operation.id.desc())
            if vm_ref:
                vm = repo.find_vm(session, vm_ref)
                if vm is None:
                    raise VmNotFound(vm_ref)
                query = query.where(Operation.vm_id == vm.id)
            if states:
                query = query.where(Operation.state.in_(states))
            if after is not None:
                query = query.where(
                    or_(
                        Operation.created_at < after[0],
                        and_(Operation.created_at == after[0], Operation.id < after[1]),
                    )
                )
            rows = session.scalars(query.limit(size + 1)).all()
            page = rows[:size]
            token = _page_token(filters, page[-1]) if len(rows) > size else ""
            return list(page), token

        return await self._db.run(work)

    async def events(self, request: op_api.ListEventsRequest) -> list[Event]:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        for field in ("vm_id", "host_id"):
            check_printable(field, getattr(request, field), NAME_COLUMN)
        return await self._db.run(lambda s: audit.list_events(s, request))
