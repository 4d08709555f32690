"""`virtplane vm migrate --wait`: a migration's progress, live, to its end.

The controller records the transfer as the source host reports it, at most
once a second (MigrationTransfer in the Operation); follow() looks as often,
through WaitOperation (which answers at once when the operation ends), and
prints each new state of the transfer on a line of its own. The VM can run
on its destination (the operation SUCCEEDED), or back on its source, a
moment before the source's report of how the transfer ended reaches the
controller: follow() then waits for that report (the downtime, or why it
failed) a little longer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import format as fmt
from virtplane_client.models import MigrationPhase, Operation, OperationState

EVERY = 1.0
"""Seconds between two looks at the operation."""

END_GRACE = 10.0
"""Seconds to wait, after the operation ended, for the report of the transfer's end."""


def _print(line: str) -> None:
    print(line, flush=True)


def _end_unreported(op: Operation) -> bool:
    """op ended, but not its transfer as the controller has it yet: the VM
    landed (SUCCEEDED) or fell back during a transfer."""
    transfer = op.migration
    if transfer is None:
        return op.state is OperationState.SUCCEEDED
    return transfer.phase is MigrationPhase.TRANSFERRING


async def follow(
    client: AsyncClient,
    op: Operation,
    seconds: float,
    show: Callable[[str], None] = _print,
    every: float = EVERY,
) -> Operation:
    """Shows each new state of op's transfer until op is done (and the
    transfer's end reported) or seconds have passed; returns op as it was
    last read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    grace_until: float | None = None
    shown = ""
    while True:
        line = fmt.transfer(op.migration) if op.migration is not None else ""
        if line and line != shown:
            show(line)
            shown = line
        now = loop.time()
        if now >= deadline or (op.done and not _end_unreported(op)):
            return op
        if op.done:
            grace_until = now + END_GRACE if grace_until is None else grace_until
            if now >= grace_until:
                return op
            await asyncio.sleep(every)
            op = await client.operations.get(op)
        else:
            op = await client.operations.wait(op, min(every, deadline - now))
