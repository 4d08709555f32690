"""The event pump: hypervisor events applied to the VMs, in order, by hostd.state_machine.

One task drains the hypervisor's event queue. When events were lost (the
queue overflowed, or libvirtd went away and hostd reconnected) it
resynchronises every VM from libvirt's listing, journaling what changed
meanwhile. While libvirtd is unreachable the pump says so (reachable,
unreachable_reason) and tells its listener, which reports it in health.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hostd.errors import HypervisorUnavailable
from hostd.hypervisor import (
    ConnectionLost,
    DomainInfo,
    EventsLost,
    LifecycleEvent,
    Reconnected,
)
from hostd.model import ExitReason, VmState
from hostd.parts import VmParts
from hostd.power import PowerVerbs
from hostd.registry import Vm
from hostd.state_machine import EXITS, OBSERVED, Become, Context, ResetSeen, on_event

log = logging.getLogger(__name__)

_KEPT_WHILE_RUNNING = frozenset({VmState.REBOOT_IN_PROGRESS, VmState.POWERING_DOWN})
"""States a running domain does not contradict: hostd asked for them."""

ReachabilityListener = Callable[[bool, str], Awaitable[None]]
"""Told (reachable, reason) each time libvirt is lost or found again."""


class EventPump:
    def __init__(
        self, parts: VmParts, power: PowerVerbs, adopt: Callable[[DomainInfo], Vm | None]
    ) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._tasks = parts.tasks
        self._power = power
        self._adopt = adopt
        self.unreachable_reason = ""
        """Why libvirt cannot be reached; empty while it can."""
        self.listener: ReachabilityListener | None = None

    @property
    def reachable(self) -> bool:
        return not self.unreachable_reason

    def require_reachable(self) -> None:
        """Raises HypervisorUnavailable while libvirt cannot be reached."""
        if self.unreachable_reason:
            raise HypervisorUnavailable(
                f"libvirt is unreachable ({self.unreachable_reason}); hostd is reconnecting"
            )

    def start(self) -> None:
        self._tasks.spawn(self._run(), "hostd-events")

    async def _run(self) -> None:
        async for event in self._hypervisor.events():
            try:
                if isinstance(event, EventsLost):
                    await self.resync("its events were lost")
                elif isinstance(event, ConnectionLost):
                    await self._reachability(event.reason)
                elif isinstance(event, Reconnected):
                    await self.resync("libvirt was unreachable")
                    await self._reachability("")
                else:
                    self.apply(event)
            except asyncio.CancelledError:
                raise
            except Exception:  # the pump outlives any one event
                log.exception("applying hypervisor event %s failed", event)

    def apply(self, event: LifecycleEvent) -> None:
        vm = self._registry.get(event.uuid)
        if vm is None:
            return
        outcome = on_event(Context(vm.state, vm.destroying, vm.start_paused), event)
        if isinstance(outcome, Become):
            self._registry.transition(vm, outcome.state, outcome.exit_reason, outcome.message)
        elif isinstance(outcome, ResetSeen):
            self._power.reset_seen(vm)
        else:
            log.debug("VM %s: %s changes nothing in its state", vm.vm_id, event.kind.name)

    async def _reachability(self, unreachable_reason: str) -> None:
        self.unreachable_reason = unreachable_reason
        if self.listener is not None:
            await self.listener(not unreachable_reason, unreachable_reason)

    async def resync(self, why: str = "its events were lost") -> None:
        """Brings every VM in line with libvirt after events were lost (why), and
        journals what changed meanwhile."""
        listed = {d.uuid: d for d in await self._hypervisor.list_domains()}
        domains = {uuid: d for uuid, d in listed.items() if d.active}
        for vm in self._registry.all():
            if not vm.launched or vm.busy:
                continue  # no domain (SUSPENDED), or its job will tell
            domain = domains.get(vm.vm_id)
            if domain is None:
                reason, message = _gone(vm, listed.get(vm.vm_id), why)
                self._registry.transition(vm, VmState.DOWN, reason, message)
                continue
            state = OBSERVED.get(domain.state)
            if state is None or (state == VmState.RUNNING and vm.state in _KEPT_WHILE_RUNNING):
                continue
            self._registry.transition(vm, state)
        for domain in domains.values():
            self._adopt(domain)


def _gone(vm: Vm, domain: DomainInfo | None, why: str) -> tuple[ExitReason, str]:
    """Why a VM's domain no longer runs, found out in a resync."""
    if vm.destroying:
        return ExitReason.DESTROYED, "destroyed"
    if vm.state == VmState.WAIT_FOR_LAUNCH:
        return ExitReason.START_FAILED, f"its start did not complete ({why})"
    if domain is not None and domain.stop_reason is not None:  # a definition says why
        reason, message = EXITS[domain.stop_reason]
        return reason, f"{message} ({why}: its stop was not seen)"
    return ExitReason.UNSPECIFIED, f"the domain is gone; {why}, so how it stopped is unknown"
