"""How long each phase of an operation took, measured from the operation's
creation (when its request was taken):

    virtplane_operation_phase_seconds{kind,phase}
    phase: scheduled, dispatched, accepted, powering_up, up

controller.operations calls note() where it records a phase's time, inside
the unit of work. A unit of work may be run again after a conflict
(db.session.Database), so what it noted is kept in its session and
observed only once that session commits: a phase is counted once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from db.enums import OperationKind

PHASES = ("scheduled", "dispatched", "accepted", "powering_up", "up")
# Seconds from the request: the benchmark's StartVm -> POWERING_UP p99 is
# under a second; a real guest is UP after several.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_NOTED = "virtplane.metrics.phases"


def _aware(when: dt.datetime) -> dt.datetime:
    # SQLite gives back naive datetimes; they were stored in UTC.
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def note(
    session: Session, kind: OperationKind, phase: str, created: dt.datetime, at: dt.datetime
) -> None:
    """Phase of an operation of kind (created at created) was reached at at;
    observed when session commits, if anybody observes phases."""
    if _NOTED not in session.info:
        return
    seconds = max(0.0, (_aware(at) - _aware(created)).total_seconds())
    session.info[_NOTED].append((kind.value, phase, seconds))


class PhaseMetrics:
    """The histogram, fed by the sessions of one sessionmaker."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.histogram = Histogram(
            "virtplane_operation_phase_seconds",
            "Seconds from an operation's request to each of its phases",
            ["kind", "phase"],
            registry=registry,
            buckets=BUCKETS,
        )

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Every session of sessions notes phases, observed when it commits."""
        event.listen(sessions, "after_begin", self._begun)
        event.listen(sessions, "after_commit", self._committed)
        event.listen(sessions, "after_soft_rollback", self._rolled_back)

    @staticmethod
    def _begun(session: Session, _transaction: Any, _connection: Any) -> None:
        session.info.setdefault(_NOTED, [])

    def _committed(self, session: Session) -> None:
        for kind, phase, seconds in session.info.pop(_NOTED, ()):
            self.histogram.labels(kind, phase).observe(seconds)

    @staticmethod
    def _rolled_back(session: Session, _transaction: Any) -> None:
        session.info.pop(_NOTED, None)
