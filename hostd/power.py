"""The power verbs: destroy, shutdown, reboot, reset, pause and resume.

Each checks the VM's state (hostd.state_machine.ALLOWED) and acts through
the hypervisor. Pause and resume then wait for the event that confirms them
(events already queued apply first, in order) and record the state only if
none comes. Shutdown, reboot and reset have no such event: the VM goes
POWERING_DOWN or REBOOT_IN_PROGRESS as soon as the hypervisor took the
request. Verbs on one VM run one at a time.

- shutdown and reboot ask the guest (_ask_guest) and set a deadline: a guest
  still running when it passes is destroyed, one that has not rebooted is reset.
- A reboot is REBOOT_IN_PROGRESS until the guest has been reset and no further
  reset followed for a moment (RunnerSettings.reboot_settle_seconds), then
  RUNNING: one reboot resets the guest several times in a burst.
- destroy first waits for the VM's job (a start, restore or save) to end.
"""

from __future__ import annotations

import logging

from hostd.errors import AgentRefused, AgentUnavailable, DomainNotFound, DomainStateConflict
from hostd.hibernation import Hibernator
from hostd.hooks import HookPoint
from hostd.hypervisor import DomainAction
from hostd.model import ExitReason, VmState, VmStatus
from hostd.parts import VmParts
from hostd.registry import Vm
from hostd.state_machine import Verb, require
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

AGENT_ANSWER_SECONDS = 5.0
"""How long the guest agent has to accept a shutdown or reboot before ACPI is used."""


class PowerVerbs:
    def __init__(self, parts: VmParts, hibernator: Hibernator) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._hooks = parts.hooks
        self._hibernator = hibernator

    async def destroy(self, vm_id: str, message: str = "destroyed") -> None:
        """Powers the VM off at once (or deletes its saved state); DOWN and forgotten on return."""
        vm = self._registry.lookup(vm_id)
        self._registry.cancel_timer(vm)
        await self._registry.idle(vm)
        if not self._registry.is_current(vm):
            return  # went down meanwhile
        async with vm.lock:
            if vm.state == VmState.SUSPENDED:
                self._hibernator.discard(vm)
                return
            # A destroy is forced: a failing before_vm_destroy hook is reported only.
            xml = await self._hooks.before(
                vm, HookPoint.BEFORE_VM_DESTROY, guarding=False, then=HookPoint.AFTER_VM_DESTROY
            )
            vm.destroying = True
            try:
                await self._hypervisor.act(vm_id, DomainAction.DESTROY)
            except (DomainNotFound, DomainStateConflict) as exc:
                log.info("VM %s: no running domain to destroy (%s)", vm_id, exc)
            except VirtplaneError:
                vm.destroying = False
                raise
            if self._registry.is_current(vm):
                self._registry.transition(vm, VmState.DOWN, ExitReason.DESTROYED, message)
            self._hooks.after(vm, HookPoint.AFTER_VM_DESTROY, xml)
        await self._registry.settled(vm_id)  # a persistent definition is gone too

    async def shutdown(self, vm_id: str, deadline_seconds: float) -> VmStatus:
        vm = self._registry.lookup(vm_id)
        async with vm.lock:
            require(Verb.SHUTDOWN, vm_id, vm.state)
            if vm.state == VmState.POWERING_DOWN and vm.timer is not None:
                return vm.status()  # on its way down already, with a deadline
            route = await self._ask_guest(vm, DomainAction.SHUTDOWN)
            self._now(
                vm, VmState.RUNNING, VmState.POWERING_DOWN, f"shutting down on request, {route}"
            )
            if self._registry.is_current(vm):  # it may be down already
                self._registry.set_timer(
                    vm, deadline_seconds, lambda: self._shutdown_overdue(vm, deadline_seconds)
                )
        return vm.status()

    async def _shutdown_overdue(self, vm: Vm, seconds: float) -> None:
        if vm.state == VmState.POWERING_DOWN:
            log.info("VM %s did not power off within %g s: destroying it", vm.vm_id, seconds)
            await self.destroy(vm.vm_id, f"did not power off within {seconds:g} s; destroyed")

    async def reboot(self, vm_id: str, deadline_seconds: float) -> VmStatus:
        vm = self._registry.lookup(vm_id)
        async with vm.lock:
            require(Verb.REBOOT, vm_id, vm.state)
            route = await self._ask_guest(vm, DomainAction.REBOOT)
            self._now(
                vm, VmState.RUNNING, VmState.REBOOT_IN_PROGRESS, f"rebooting on request, {route}"
            )
            if self._registry.is_current(vm):
                self._registry.set_timer(
                    vm, deadline_seconds, lambda: self._reboot_overdue(vm, deadline_seconds)
                )
        return vm.status()

    async def _reboot_overdue(self, vm: Vm, seconds: float) -> None:
        if vm.state != VmState.REBOOT_IN_PROGRESS:
            return
        log.info("VM %s did not reboot within %g s: resetting it", vm.vm_id, seconds)
        try:
            await self._hypervisor.act(vm.vm_id, DomainAction.RESET)
        except VirtplaneError as exc:
            log.warning("VM %s: cannot reset it: %s", vm.vm_id, exc)
            return
        if self._registry.is_current(vm):
            self.reset_seen(vm)

    async def reset(self, vm_id: str) -> VmStatus:
        vm = self._registry.lookup(vm_id)
        async with vm.lock:
            require(Verb.RESET, vm_id, vm.state)
            await self._hypervisor.act(vm_id, DomainAction.RESET)
            if self._registry.is_current(vm):
                self.reset_seen(vm)  # not every hypervisor reports the reset as an event
        return vm.status()

    async def pause(self, vm_id: str) -> VmStatus:
        return await self._act(
            vm_id, Verb.PAUSE, DomainAction.PAUSE, VmState.RUNNING, VmState.PAUSED
        )

    async def resume(self, vm_id: str) -> VmStatus:
        return await self._act(
            vm_id, Verb.RESUME, DomainAction.RESUME, VmState.PAUSED, VmState.RUNNING
        )

    async def _act(
        self, vm_id: str, verb: Verb, action: DomainAction, before: VmState, after: VmState
    ) -> VmStatus:
        """One domain action that moves vm from before to after (pause, resume)."""
        vm = self._registry.lookup(vm_id)
        async with vm.lock:
            require(verb, vm_id, vm.state)
            await self._hypervisor.act(vm_id, action)
            await self._confirm(vm, before, after)
        return vm.status()

    def reset_seen(self, vm: Vm) -> None:
        """The guest was reset: it is rebooting until no reset follows for a moment."""
        if vm.state == VmState.RUNNING:
            self._registry.transition(vm, VmState.REBOOT_IN_PROGRESS, message="the guest rebooted")
        if vm.state != VmState.REBOOT_IN_PROGRESS:
            return  # a paused guest stays paused; it reboots when resumed
        settle = self._registry.settings.reboot_settle_seconds
        self._registry.set_timer(vm, settle, lambda: self._rebooted(vm))

    async def _rebooted(self, vm: Vm) -> None:
        if vm.state == VmState.REBOOT_IN_PROGRESS:
            self._registry.transition(vm, VmState.RUNNING, message="rebooted")

    async def _ask_guest(self, vm: Vm, action: DomainAction) -> str:
        """Asks the guest to power off or reboot; returns the route taken.

        Through the guest agent when it is connected and responsive (a clean
        shutdown the guest's users are told about), else ACPI through the
        hypervisor; an agent that refuses or does not answer falls back to ACPI.
        """
        channel = vm.channel
        if channel is not None and channel.responsive:
            verb = "shutdown" if action is DomainAction.SHUTDOWN else "reboot"
            try:
                await channel.power(
                    verb, 0, f"virtplane: {verb} requested by the host", within=AGENT_ANSWER_SECONDS
                )
                return "through the guest agent"
            except (AgentUnavailable, AgentRefused) as exc:
                log.info("VM %s: %s; falling back to ACPI", vm.vm_id, exc)
        await self._hypervisor.act(vm.vm_id, action)
        return "through ACPI"

    async def _confirm(self, vm: Vm, before: VmState, after: VmState) -> None:
        """Waits for the event that moves vm on from before; records after if none comes."""
        grace = self._registry.settings.event_grace_seconds
        if not await self._registry.wait_until(vm, lambda v: v.state != before, grace):
            self._now(vm, before, after)

    def _now(self, vm: Vm, before: VmState, after: VmState, message: str = "") -> None:
        """The verb succeeded: vm is in state after, unless events moved it on already."""
        if self._registry.is_current(vm) and vm.state == before:
            self._registry.transition(vm, after, message=message)
