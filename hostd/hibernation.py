"""Hibernation: a VM's memory saved to a file under the state directory, and its files.

In STATE/saved/, per VM (all 0600):

    <vm_id>.config        the VmConfig, written (atomically) before the save begins
    <vm_id>.img.partial   the image while libvirt writes it
    <vm_id>.img           the complete image: the VM is SUSPENDED

The rename from .img.partial to .img is what marks a save complete, so a
restarted hostd can tell a finished save from a half-written one (and, when
it was killed between the two, asks libvirt whether the image is whole).

HibernateVm returns at once (SAVING_STATE); the save runs as the VM's job
(the before_vm_hibernate hooks first: a failing one fails the hibernation)
and ends SUSPENDED, the domain gone from libvirt (a persistent one is
undefined too). If the save fails, the VM is back as it was, with the error
in its message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from hostd import convert
from hostd.errors import DomainNotFound, DomainStateConflict
from hostd.hooks import HookPoint
from hostd.hypervisor import DomainAction, DomainInfo, DomainState
from hostd.layout import StateLayout
from hostd.model import ExitReason, VmConfig, VmState, VmStatus
from hostd.parts import VmParts
from hostd.registry import Vm
from hostd.state_machine import Verb, require
from virtplane_common.errors import InvalidArgument, VirtplaneError

log = logging.getLogger(__name__)

FILE_MODE = 0o600
_SUFFIXES = {".img": "image", ".img.partial": "partial", ".config": "config"}


@dataclass
class SavedFiles:
    """What the saved-state folder holds for one VM."""

    vm_id: str
    image: bool = False
    partial: bool = False
    config: bool = False


class SavedStates:
    """The files of hibernated VMs."""

    def __init__(self, layout: StateLayout) -> None:
        self.dir = layout.saved_dir

    def image(self, vm_id: str) -> Path:
        return self.dir / f"{vm_id}.img"

    def partial(self, vm_id: str) -> Path:
        return self.dir / f"{vm_id}.img.partial"

    def config_file(self, vm_id: str) -> Path:
        return self.dir / f"{vm_id}.config"

    def write_config(self, config: VmConfig) -> None:
        path = self.config_file(config.vm_id)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(convert.config_to_bytes(config))
            out.flush()
            os.fsync(out.fileno())
        temporary.replace(path)

    def read_config(self, vm_id: str) -> VmConfig | None:
        try:
            config = convert.config_from_bytes(self.config_file(vm_id).read_bytes())
        except (OSError, DecodeError, InvalidArgument) as exc:
            log.warning("VM %s: unreadable saved configuration: %s", vm_id, exc)
            return None
        return config if config.vm_id == vm_id else None

    def load(self, vm_id: str) -> VmConfig | None:
        """The saved configuration of a VM that has a complete saved state, else None."""
        if not self.image(vm_id).is_file():
            return None
        return self.read_config(vm_id)

    def complete(self, vm_id: str) -> Path:
        """Marks the image whole: .img.partial becomes .img. Returns the image's path."""
        image = self.image(vm_id)
        self.partial(vm_id).replace(image)
        image.chmod(FILE_MODE)
        return image

    def discard(self, vm_id: str) -> list[Path]:
        """Removes every file of the VM; returns those there were."""
        removed = []
        for path in (self.image(vm_id), self.partial(vm_id), self.config_file(vm_id)):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
        return removed

    def scan(self) -> tuple[dict[str, SavedFiles], list[Path]]:
        """The VMs with files here, and the files that belong to none (temporaries)."""
        found: dict[str, SavedFiles] = {}
        strays: list[Path] = []
        for path in sorted(self.dir.iterdir()):
            for suffix, kind in _SUFFIXES.items():
                vm_id = path.name.removesuffix(suffix)
                if path.name.endswith(suffix) and len(vm_id) == 36 and "." not in vm_id:
                    setattr(found.setdefault(vm_id, SavedFiles(vm_id)), kind, True)
                    break
            else:
                strays.append(path)
        return found, strays


class Hibernator:
    def __init__(self, parts: VmParts, saved: SavedStates) -> None:
        self._hypervisor, self._registry = parts.hypervisor, parts.registry
        self._tasks, self._hooks = parts.tasks, parts.hooks
        self._saved = saved

    async def hibernate(self, vm_id: str) -> VmStatus:
        vm = self._registry.lookup(vm_id)
        # The end of a start or restore (its events may have made the VM RUNNING
        # before the job finished) comes before a new job.
        await self._registry.idle(vm)
        async with vm.lock:
            require(Verb.HIBERNATE, vm_id, vm.state)
            self._saved.write_config(vm.config)
            self._registry.cancel_timer(vm)
            self._registry.transition(vm, VmState.SAVING_STATE, message="saving its memory")
            vm.job = self._tasks.spawn(self._save(vm), f"hibernate {vm_id}")
        return vm.status()

    async def _save(self, vm: Vm) -> None:
        try:
            await self._hooks.before(vm, HookPoint.BEFORE_VM_HIBERNATE)
            await self._hypervisor.save(vm.vm_id, str(self._saved.partial(vm.vm_id)))
        except VirtplaneError as exc:
            log.warning("VM %s: hibernation failed: %s", vm.vm_id, exc)
            self._saved.discard(vm.vm_id)
            await self._back_from_failed_save(vm, f"hibernation failed: {exc}")
            return
        await self._finish(vm, "hibernated")

    async def _finish(self, vm: Vm, message: str) -> None:
        """The image is complete and the domain stopped: the VM is SUSPENDED."""
        image = self._saved.complete(vm.vm_id)
        if vm.persistent:
            await self._undefine(vm.vm_id)
        vm.launched = False
        if self._registry.is_current(vm):
            self._registry.transition(
                vm, VmState.SUSPENDED, ExitReason.SAVED, f"{message} to {image}"
            )

    async def _undefine(self, vm_id: str) -> None:
        try:
            await self._hypervisor.act(vm_id, DomainAction.UNDEFINE)
        except (DomainNotFound, DomainStateConflict):
            pass
        except VirtplaneError as exc:
            log.warning("VM %s: cannot remove its saved domain's definition: %s", vm_id, exc)

    async def _back_from_failed_save(self, vm: Vm, message: str) -> None:
        domain = await self._find(vm.vm_id)
        if not self._registry.is_current(vm) or vm.state != VmState.SAVING_STATE:
            return
        if domain is None or not domain.active:
            return  # stopped meanwhile: its stop event makes it DOWN
        paused = domain.state is DomainState.PAUSED
        self._registry.transition(
            vm, VmState.PAUSED if paused else VmState.RUNNING, message=message
        )

    async def _find(self, vm_id: str) -> DomainInfo | None:
        try:
            domains = await self._hypervisor.list_domains()
        except VirtplaneError as exc:
            log.warning("VM %s: cannot list domains: %s", vm_id, exc)
            return None
        return next((d for d in domains if d.uuid == vm_id), None)

    def follow_save(self, vm: Vm, poll_seconds: float) -> None:
        """Takes over a save that a previous hostd began (the VM is SAVING_STATE)."""
        vm.job = self._tasks.spawn(self._follow(vm, poll_seconds), f"follow save {vm.vm_id}")

    async def _follow(self, vm: Vm, poll_seconds: float) -> None:
        while True:
            domain = await self._find(vm.vm_id)
            if domain is None or not domain.active:
                await self.conclude_saved(
                    vm, "the save a previous hostd began finished; hibernated"
                )
                return
            if not domain.saving:
                self._saved.discard(vm.vm_id)
                await self._back_from_failed_save(vm, "the save a previous hostd began failed")
                return
            await asyncio.sleep(poll_seconds)

    async def conclude_saved(self, vm: Vm, message: str) -> None:
        """The domain is gone after a save nobody watched: SUSPENDED if the image is whole,
        else DOWN (the half-written files removed)."""
        partial = self._saved.partial(vm.vm_id)
        if await self._hypervisor.read_saved(str(partial)) is not None:
            await self._finish(vm, message)
            return
        self._saved.discard(vm.vm_id)
        if self._registry.is_current(vm):
            self._registry.transition(
                vm,
                VmState.DOWN,
                ExitReason.UNSPECIFIED,
                "its hibernation did not complete: the half-written saved state was removed",
            )

    def discard(self, vm: Vm) -> None:
        """Deletes a SUSPENDED VM's saved state; the VM is DOWN."""
        self._saved.discard(vm.vm_id)
        self._registry.transition(
            vm, VmState.DOWN, ExitReason.DESTROYED, "destroyed; its saved state was deleted"
        )
