"""What the database says, counted when Prometheus scrapes: VMs and hosts by
state, migrations running and waiting, and the connection pool's use.

Counting at scrape time keeps the numbers true after a controller restart
and whichever controller made the change: one short transaction of three
GROUP BY counts per scrape, on the scrape's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.enums import HostState, OperationKind, OperationState, VmState
from db.models import Host, Operation, Vm
from db.session import Database

log = logging.getLogger(__name__)


def _counts(session: Session) -> tuple[dict[Any, int], dict[Any, int], dict[bool, int]]:
    vms = session.execute(select(Vm.state, func.count()).group_by(Vm.state)).all()
    hosts = session.execute(select(Host.state, func.count()).group_by(Host.state)).all()
    migrations = session.execute(
        select(Operation.waiting, func.count())
        .where(
            Operation.state == OperationState.RUNNING,
            Operation.kind == OperationKind.MIGRATE_VM,
        )
        .group_by(Operation.waiting)
    ).all()
    return (
        {state: n for state, n in vms},
        {state: n for state, n in hosts},
        {bool(waiting): n for waiting, n in migrations},
    )


def _by_state(name: str, doc: str, states: Any, counts: dict[Any, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    for state in states:  # every state, 0 included: a series ends at 0, not gone
        family.add_metric([state.value], counts.get(state, 0))
    return family


class DatabaseState(Collector):
    """VMs, hosts and migrations as the database has them, and its pool."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._pool()
        try:
            vms, hosts, migrations = self._db.transaction(_counts)
        except Exception:  # a scrape must not fail the controller; it shows the gap
            log.exception("metrics: cannot count VMs and hosts")
            return
        yield _by_state("virtplane_vms", "VMs by state", VmState, vms)
        yield _by_state("virtplane_hosts", "Hosts by state", HostState, hosts)
        yield GaugeMetricFamily(
            "virtplane_migrations_in_flight",
            "Live migrations running (their operation accepted or being sent)",
            value=migrations.get(False, 0),
        )
        yield GaugeMetricFamily(
            "virtplane_migrations_waiting",
            "Live migrations waiting their turn under the migration limits",
            value=migrations.get(True, 0),
        )

    def _pool(self) -> Iterator[GaugeMetricFamily]:
        """The SQLAlchemy pool's connections (a pool that keeps none, nothing)."""
        pool: Any = self._db.engine.pool
        if not all(hasattr(pool, m) for m in ("size", "checkedout", "checkedin", "overflow")):
            return
        yield GaugeMetricFamily(
            "virtplane_db_pool_size", "Connections the pool keeps", value=pool.size()
        )
        family = GaugeMetricFamily(
            "virtplane_db_pool_connections", "The pool's connections by use", labels=["state"]
        )
        family.add_metric(["checked_out"], pool.checkedout())
        family.add_metric(["idle"], pool.checkedin())
        family.add_metric(["overflow"], max(0, pool.overflow()))
        yield family
