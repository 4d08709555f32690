"""The event pump: hypervisor events applied to the VMs, in order, by hostd.state_machine.

One task drains the hypervisor's event queue. When events were lost (the
queue overflowed) it resynchronises every VM from libvirt's listing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd.hypervisor import DomainInfo, DomainState, EventsLost, Hypervisor, LifecycleEvent
from hostd.power import PowerVerbs
from hostd.registry import Vm, VmRegistry
from hostd.state_machine import Become, Context, ResetSeen, on_event

log = logging.getLogger(__name__)

S = pb.HostVm
_OBSERVED: dict[DomainState, pb.HostVm.State.ValueType] = {
    DomainState.RUNNING: S.STATE_RUNNING,
    DomainState.OTHER: S.STATE_RUNNING,
    DomainState.PAUSED: S.STATE_PAUSED,
    DomainState.SHUTTING_DOWN: S.STATE_POWERING_DOWN,
}
_KEPT_WHILE_RUNNING = frozenset({S.STATE_REBOOT_IN_PROGRESS, S.STATE_POWERING_DOWN})
"""States a running domain does not contradict: hostd asked for them."""


class EventPump:
    def __init__(
        self,
        hypervisor: Hypervisor,
        registry: VmRegistry,
        power: PowerVerbs,
        adopt: Callable[[DomainInfo], Vm | None],
    ) -> None:
        self._hypervisor = hypervisor
        self._registry = registry
        self._power = power
        self._adopt = adopt

    def start(self) -> None:
        self._registry.spawn(self._run(), "hostd-events")

    async def _run(self) -> None:
        async for event in self._hypervisor.events():
            try:
                if isinstance(event, EventsLost):
                    await self.resync()
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

    async def resync(self) -> None:
        """Brings every VM in line with libvirt after events were lost."""
        domains = {d.uuid: d for d in await self._hypervisor.list_domains() if d.active}
        for vm in self._registry.all():
            if not vm.launched or vm.busy:
                continue  # no domain (SUSPENDED), or its job will tell
            domain = domains.get(vm.vm_id)
            if domain is None:
                reason, message = (
                    (S.EXIT_REASON_DESTROYED, "destroyed")
                    if vm.destroying
                    else (S.EXIT_REASON_UNSPECIFIED, "the domain is gone; its stop event was lost")
                )
                self._registry.transition(vm, S.STATE_DOWN, reason, message)
                continue
            state = _OBSERVED.get(domain.state)
            if state is None or (state == S.STATE_RUNNING and vm.state in _KEPT_WHILE_RUNNING):
                continue
            self._registry.transition(vm, state)
        for domain in domains.values():
            self._adopt(domain)
