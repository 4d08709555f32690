"""Recovery: what a starting hostd finds in libvirt and in its saved-state folder.

A domain is hostd's when it carries hostd's metadata naming this state
directory and its own UUID; every other domain is external and left alone.
Of hostd's domains:

- a running (or paused) one is adopted in its state; one whose start is
  still under way in libvirt (hostd died during a create) is adopted
  WAIT_FOR_LAUNCH and followed until it runs; one paused by a save that a
  previous hostd began is adopted SAVING_STATE and the save followed;
- a defined one that is not running is undefined (a create stopped between
  define and start, or a persistent VM that stopped while hostd was away)
  and its VM journaled DOWN, with the reason libvirt kept (START_FAILED for
  one that never ran); the definition a hibernated VM left is undefined only.

Of the saved-state files: a complete image makes a SUSPENDED VM; a partial
one whose domain is gone is completed if libvirt finds it whole, else
removed and its VM reported DOWN; files of a VM whose domain runs, and
temporaries, are removed. Everything is listed in the recovery report, with
reasons.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from google.protobuf.message import DecodeError

from hostd import convert
from hostd.hibernation import Hibernator, SavedFiles, SavedStates
from hostd.hypervisor import DomainAction, DomainInfo
from hostd.model import (
    AdoptedVm,
    CleanedUp,
    ExitReason,
    ExternalDomain,
    RecoveryReport,
    VmConfig,
    VmState,
)
from hostd.parts import VmParts
from hostd.registry import Vm
from hostd.state_machine import EXITS, OBSERVED
from virtplane_common.errors import InvalidArgument, VirtplaneError

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, parts: VmParts, saved: SavedStates, hibernator: Hibernator) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._tasks = parts.tasks
        self._saved = saved
        self._hibernator = hibernator
        self._root = str(parts.registry.settings.layout.root)
        self._adopted_vms: list[AdoptedVm] = []
        self._cleaned_up: list[CleanedUp] = []

    async def run(self) -> RecoveryReport:
        """Adopts, registers and cleans up; returns the report."""
        started_ns = time.time_ns()
        self._adopted_vms, self._cleaned_up = [], []
        external: list[ExternalDomain] = []
        files, strays = self._saved.scan()
        for domain in await self._hypervisor.list_domains():
            owner = self.foreign(domain)
            if owner is not None:
                external.append(ExternalDomain(domain.uuid, domain.name, owner))
            elif not domain.active:
                await self._undefine(domain, files.get(domain.uuid))
            else:
                self._take_over(domain, files.pop(domain.uuid, None))
        for saved in files.values():
            await self._saved_state(saved)
        for stray in strays:
            if stray.name.endswith(".tmp"):
                stray.unlink(missing_ok=True)
                self._cleaned("", str(stray), "an unfinished temporary file")
        return RecoveryReport(
            started_ns, tuple(self._adopted_vms), tuple(external), tuple(self._cleaned_up)
        )

    def foreign(self, domain: DomainInfo) -> str | None:
        """Why a domain is not hostd's, or None when it is."""
        metadata = domain.metadata
        if metadata is None:
            return "no virtplane metadata: not created by hostd"
        if metadata.state_dir != self._root:
            return f"created by the hostd of {metadata.state_dir or 'another state directory'}"
        if metadata.vm_id != domain.uuid:
            return f"its metadata names VM {metadata.vm_id}, not its own UUID"
        return None

    def adopt(self, domain: DomainInfo, state: VmState | None = None) -> Vm | None:
        """Registers a running domain of this hostd's that no VM stands for yet."""
        if self._registry.get(domain.uuid) is not None or not domain.active:
            return None
        if self.foreign(domain) is not None or domain.metadata is None:
            return None
        state = state or OBSERVED.get(domain.state)
        if state is None:
            return None
        vm = self._vm_of(domain)
        vm.launched = True
        self._registry.add(vm)
        log.info("VM %s: adopted domain %s (%s)", vm.vm_id, domain.name, state.api_name)
        self._registry.transition(vm, state, message="recovered")
        return vm

    @staticmethod
    def _vm_of(domain: DomainInfo) -> Vm:
        """A record for one of hostd's domains, from the configuration in its metadata."""
        config = VmConfig()
        metadata = domain.metadata
        try:
            config = convert.config_from_bytes(metadata.config if metadata else b"")
        except (DecodeError, InvalidArgument):
            log.warning("domain %s: unreadable configuration in its metadata", domain.uuid)
        config = dataclasses.replace(config, vm_id=domain.uuid)
        return Vm(config=config, request_id=metadata.request_id if metadata else "")

    def _take_over(self, domain: DomainInfo, files: SavedFiles | None) -> None:
        if domain.starting:
            vm = self.adopt(domain, VmState.WAIT_FOR_LAUNCH)
            if vm is not None:
                vm.job = self._tasks.spawn(self._follow_start(vm), f"follow start {vm.vm_id}")
                self._adopted(vm, "its start, begun by a previous hostd, is under way")
            return
        if domain.saving and files is not None and files.partial:
            vm = self.adopt(domain, VmState.SAVING_STATE)
            if vm is not None:
                poll = self._registry.settings.save_poll_seconds
                self._hibernator.follow_save(vm, poll)
                self._adopted(vm, "its save to a file, begun by a previous hostd, is under way")
            return
        vm = self.adopt(domain)
        if vm is None:
            return
        self._adopted(vm, "its domain is running")
        if files is not None:
            for path in self._saved.discard(domain.uuid):
                self._cleaned(domain.uuid, str(path), "the domain runs: this saved state is stale")

    async def _follow_start(self, vm: Vm) -> None:
        """Waits for a start libvirt finishes without hostd: its events, or its state."""
        poll = self._registry.settings.save_poll_seconds
        while self._registry.is_current(vm) and vm.state == VmState.WAIT_FOR_LAUNCH:
            domains = await self._hypervisor.list_domains()
            domain = next((d for d in domains if d.uuid == vm.vm_id and d.active), None)
            if not self._registry.is_current(vm) or vm.state != VmState.WAIT_FOR_LAUNCH:
                return  # its events came first
            if domain is None:
                self._registry.transition(
                    vm,
                    VmState.DOWN,
                    ExitReason.START_FAILED,
                    "its start, begun by a previous hostd, failed",
                )
            elif not domain.starting:
                state = OBSERVED.get(domain.state, VmState.RUNNING)
                self._registry.transition(vm, state, message="recovered")
            else:
                await asyncio.sleep(poll)

    async def _undefine(self, domain: DomainInfo, files: SavedFiles | None) -> None:
        try:
            await self._hypervisor.act(domain.uuid, DomainAction.UNDEFINE)
        except VirtplaneError as exc:
            log.warning("domain %s: cannot undefine it: %s", domain.name, exc)
            return
        hibernated = files is not None and (files.image or files.partial)
        self._cleaned(
            domain.uuid,
            f"domain {domain.name}",
            "the definition of a hibernated VM (its saved state is kept)"
            if hibernated
            else "defined but not running: its start never happened, or it stopped "
            "while hostd was away",
        )
        if not hibernated and self._registry.get(domain.uuid) is None:
            self._down(domain)

    def _down(self, domain: DomainInfo) -> None:
        """Journals the VM of a domain that does not run DOWN, with why it stopped."""
        if domain.stop_reason is None:
            reason = ExitReason.START_FAILED
            message = "its start, begun by a previous hostd, never happened"
        else:
            reason, why = EXITS[domain.stop_reason]
            message = f"{why} while hostd was away"
        vm = self._vm_of(domain)
        self._registry.add(vm)
        self._registry.transition(vm, VmState.DOWN, reason, message)

    async def _saved_state(self, files: SavedFiles) -> None:
        vm_id = files.vm_id
        config = self._saved.read_config(vm_id) if files.config else None
        if config is None:
            for path in self._saved.discard(vm_id):
                self._cleaned(vm_id, str(path), "a saved state without its configuration")
            return
        vm = Vm(config=config)
        if files.image:
            self._registry.add(vm)
            self._registry.transition(vm, VmState.SUSPENDED, ExitReason.SAVED, "recovered")
            self._adopted(vm, "hibernated: its saved state is complete")
        elif files.partial:
            self._registry.add(vm)
            vm.state = VmState.SAVING_STATE  # as the previous hostd left it; not journaled again
            partial = str(self._saved.partial(vm_id))
            await self._hibernator.conclude_saved(vm, "the save finished while hostd was away")
            if vm.state == VmState.SUSPENDED:
                self._adopted(vm, "hibernated: its save finished while hostd was away")
            else:
                self._cleaned(vm_id, partial, "half-written: the save did not finish")
        else:
            for path in self._saved.discard(vm_id):
                self._cleaned(vm_id, str(path), "a configuration whose save never began")

    def _adopted(self, vm: Vm, reason: str) -> None:
        self._adopted_vms.append(AdoptedVm(vm.vm_id, vm.state, reason))

    def _cleaned(self, vm_id: str, what: str, reason: str) -> None:
        log.info("recovery: removed %s (%s)", what, reason)
        self._cleaned_up.append(CleanedUp(vm_id, what, reason))
