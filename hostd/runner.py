"""The VM runner: the start paths a create hands off to, each run as the VM's job.

- fresh start: domain XML built from the configuration, handed to the
  before_vm_start hooks (which may rewrite it; a failing one fails the
  start), then started, transient (createXML) or persistent (defineXML +
  create), paused if asked; after_vm_start hooks once it runs;
- restore from file: the saved state loaded through libvirt, paused if
  asked; the image is deleted once the domain runs from it;
  after_vm_dehibernate hooks then.

(Recovery, the third path, adopts domains at hostd's start: hostd.recovery.)
Events say how a start ended (hostd.state_machine), in the order libvirt
sent them: a late stop of an earlier domain with the same UUID, still
queued when the start call returns, must not count for the new one. Only
when no event comes within a grace period (some hypervisors send none) does
the job read the domain's state itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hostd import domxml
from hostd.builder import build_domain
from hostd.errors import HypervisorUnavailable
from hostd.hibernation import SavedStates
from hostd.hooks import HookPoint
from hostd.hypervisor import DomainState
from hostd.model import ExitReason, VmState
from hostd.parts import VmParts
from hostd.registry import Vm
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, parts: VmParts, saved: SavedStates) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._tasks, self._hooks = parts.tasks, parts.hooks
        self._saved = saved

    def launch(self, vm: Vm) -> None:
        """Registers vm as WAIT_FOR_LAUNCH and starts its domain in the background."""
        self._registry.add(vm)
        self._registry.transition(vm, VmState.WAIT_FOR_LAUNCH)
        vm.job = self._tasks.spawn(self._start(vm), f"start {vm.vm_id}")

    def restore(self, vm: Vm) -> None:
        """Moves vm to RESTORING_STATE and restores its saved state in the background."""
        self._registry.add(vm)
        self._registry.transition(vm, VmState.RESTORING_STATE, message="restoring its saved state")
        vm.job = self._tasks.spawn(self._restore(vm), f"restore {vm.vm_id}")

    async def _start(self, vm: Vm) -> None:
        settings = self._registry.settings
        try:
            domain = build_domain(
                vm.config, settings.virt_type, settings.layout, request_id=vm.request_id
            )
            xml = await self._hooks.hooks.check(
                HookPoint.BEFORE_VM_START, vm.hook_vm, domxml.to_xml(domain)
            )
            await self._hypervisor.start(xml, persistent=vm.persistent, paused=vm.start_paused)
        except HypervisorUnavailable as exc:
            # libvirtd went away during the call: the domain may well run. The
            # events, or the resync once libvirt is back, tell.
            log.warning("VM %s: libvirt was lost during its start: %s", vm.vm_id, exc)
            vm.launched = True
            with contextlib.suppress(HypervisorUnavailable):
                await self._confirm(vm, VmState.WAIT_FOR_LAUNCH)
            return
        except VirtplaneError as exc:
            log.warning("VM %s failed to start: %s", vm.vm_id, exc)
            self._down(vm, str(exc))
            return
        except Exception as exc:  # a bug: the VM must still end DOWN
            log.exception("VM %s failed to start", vm.vm_id)
            self._down(vm, f"internal error: {exc}")
            return
        vm.launched = True
        log.info("VM %s: domain started", vm.vm_id)
        await self._confirm(vm, VmState.WAIT_FOR_LAUNCH)
        self._after(vm, HookPoint.AFTER_VM_START)

    async def _restore(self, vm: Vm) -> None:
        image = self._saved.image(vm.vm_id)
        try:
            await self._hypervisor.restore(
                str(image), paused=vm.start_paused, persistent=vm.persistent
            )
        except HypervisorUnavailable as exc:
            log.warning("VM %s: libvirt was lost during its restore: %s", vm.vm_id, exc)
            await self._restore_settled(vm)
            return
        except VirtplaneError as exc:
            # The saved state is kept: the VM stays hibernated and can be tried again.
            log.warning("VM %s failed to restore: %s", vm.vm_id, exc)
            if self._registry.is_current(vm) and vm.state == VmState.RESTORING_STATE:
                self._registry.transition(
                    vm, VmState.SUSPENDED, ExitReason.SAVED, f"restore failed: {exc}"
                )
            return
        vm.launched = True
        self._saved.discard(vm.vm_id)
        log.info("VM %s: restored from %s", vm.vm_id, image)
        await self._confirm(vm, VmState.RESTORING_STATE)
        self._after(vm, HookPoint.AFTER_VM_DEHIBERNATE)

    async def _restore_settled(self, vm: Vm) -> None:
        """libvirtd went away during a restore: once it answers again, the VM runs
        from its image (the image is deleted) or is hibernated still (it is kept)."""
        poll = self._registry.settings.save_poll_seconds
        while True:
            try:
                domains = await self._hypervisor.list_domains()
                break
            except HypervisorUnavailable:
                await asyncio.sleep(poll)
        domain = next((d for d in domains if d.uuid == vm.vm_id and d.active), None)
        if not self._registry.is_current(vm):
            return
        if domain is None:
            if vm.state == VmState.RESTORING_STATE:
                self._registry.transition(
                    vm,
                    VmState.SUSPENDED,
                    ExitReason.SAVED,
                    "restore failed: libvirt was lost during it; the saved state is kept",
                )
            return
        vm.launched = True
        self._saved.discard(vm.vm_id)
        if vm.state == VmState.RESTORING_STATE:
            paused = domain.state is DomainState.PAUSED
            self._registry.transition(vm, VmState.PAUSED if paused else VmState.RUNNING)
        self._after(vm, HookPoint.AFTER_VM_DEHIBERNATE)

    def _after(self, vm: Vm, point: HookPoint) -> None:
        """The after_ hooks of a start that got the VM running (or paused)."""
        if self._registry.is_current(vm) and vm.state in (VmState.RUNNING, VmState.PAUSED):
            self._hooks.after(vm, point)

    async def _confirm(self, vm: Vm, starting: VmState) -> None:
        """The start call returned: waits for its events, else reads the domain's state."""
        grace = self._registry.settings.event_grace_seconds
        if await self._registry.wait_until(vm, lambda v: v.state != starting, grace):
            return
        domains = await self._hypervisor.list_domains()
        domain = next((d for d in domains if d.uuid == vm.vm_id and d.active), None)
        if not self._registry.is_current(vm) or vm.state != starting:
            return
        if domain is None:
            self._down(vm, "the domain stopped as it started")
        else:
            paused = domain.state is DomainState.PAUSED
            self._registry.transition(vm, VmState.PAUSED if paused else VmState.RUNNING)

    def _down(self, vm: Vm, message: str) -> None:
        if self._registry.is_current(vm):
            self._registry.transition(vm, VmState.DOWN, ExitReason.START_FAILED, message)
