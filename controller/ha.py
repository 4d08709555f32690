"""Restarting highly available VMs.

A highly available VM that goes DOWN because it crashed, vanished from its
host, or its host was confirmed down gets a restart due at once
(controller.lifecycle.states.set_state). This loop claims each due restart — the
claim counts the try and plans the next one after a backoff, in the database
— and then starts the VM through the scheduler, on its host or another. A
restart that fails (no host fits, every host refused) is tried again when the
planned time comes; one that reaches UP clears the plan.

Everything the loop needs is in the database, so a restarted controller picks
up the restarts that were due. A VM on a host that cannot be reached is
UNKNOWN, not DOWN: it is restarted only once the host is confirmed down.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller.audit import seen
from controller.lifecycle.placement import Starter
from controller.periodic import Periodic
from controller.vm_store import VmStore
from db import repositories as repo
from db.models import utcnow
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HaPolicy:
    """When automatic restarts are tried: every fast_interval seconds for
    fast_tries tries, then every slow_interval seconds."""

    fast_interval: float = 30.0
    fast_tries: int = 10
    slow_interval: float = 1800.0
    # How often the controller looks for due restarts.
    poll_interval: float = 2.0

    def delay_after(self, tries: int) -> float:
        """Seconds from the tries-th try to the next one."""
        return self.fast_interval if tries < self.fast_tries else self.slow_interval


class HaRestarter:
    def __init__(self, store: VmStore, starter: Starter, policy: HaPolicy) -> None:
        self._store = store
        self._starter = starter
        self._policy = policy
        self._loop = Periodic("ha-restarter", self.run_once, policy.poll_interval)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> list[str]:
        """Claims and starts every due restart; returns the ids tried."""
        changed, claimed = await self._store.db.run(self._claim)
        self._store.publish(changed)
        for vm_id, name, tries in claimed:
            log.info("restarting highly available VM %s (try %d)", name, tries)
            try:
                await self._starter.start(vm_id, automatic=True)
            except VirtplaneError as exc:
                log.warning("restart of VM %s failed (try %d): %s", name, tries, exc)
        return [vm_id for vm_id, _, _ in claimed]

    def _claim(self, session: Session) -> tuple[list[vm_pb2.Vm], list[tuple[str, str, int]]]:
        now = utcnow()
        due = list(repo.due_ha_restarts(session, now))
        for vm in due:
            vm.ha_restart_count += 1
            vm.ha_restart_at = now + dt.timedelta(
                seconds=self._policy.delay_after(vm.ha_restart_count)
            )
        changed = self._store.stamp(session, due, seen(due))
        return changed, [(vm.id, vm.name, vm.ha_restart_count) for vm in due]
