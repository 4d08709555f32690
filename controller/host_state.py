"""set_host_state(): the one place a host's state is written, and logged."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controller import audit
from db.enums import HostState
from db.models import Host

# Host states set by an operator's verb, which only another verb changes:
# the monitor neither brings such a host UP nor marks it NON_RESPONSIVE.
HELD_STATES = frozenset(
    {HostState.MAINTENANCE, HostState.PREPARING_FOR_MAINTENANCE, HostState.NON_OPERATIONAL}
)


def set_host_state(
    session: Session, host: Host, state: HostState, message: str, request_id: str = ""
) -> None:
    """Moves host to state with message; a change of state goes to the audit
    log, with the request that caused it."""
    before = host.state
    host.state = state
    host.state_message = message
    if before is not state:
        audit.host_state(session, host, before, request_id)
