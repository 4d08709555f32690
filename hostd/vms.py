"""The VMs on this host: the create path, the runner, libvirt's events applied, destroy.

A VM is registered (WAIT_FOR_LAUNCH) before its domain exists, driven by
libvirt's lifecycle events from then on, and forgotten as soon as its DOWN
state is journaled. Every real state change becomes one journal event.

Ordering rules worth knowing:
- libvirt may deliver STARTED/RESUMED before createXML returns: they apply in
  WAIT_FOR_LAUNCH like any other time.
- In WAIT_FOR_LAUNCH only STARTED/RESUMED apply. A stop event then can only be
  a late one from an earlier domain with the same UUID (destroyed, and the VM
  created again); a start that fails is reported by createXML itself.
- Destroying kills QEMU, which reports a host-initiated SHUTDOWN first: while
  hostd destroys a VM, SHUTDOWN does not make it POWERING_DOWN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from virtplane.errors import VirtplaneError
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import domxml
from hostd.builder import build_domain
from hostd.config import ChannelLimits
from hostd.errors import DomainNotFound, DomainStateConflict, VmAlreadyExists, VmNotFound
from hostd.guest_channel import GuestChannel
from hostd.hypervisor import (
    DomainState,
    EventsLost,
    Hypervisor,
    LifecycleEvent,
    LifecycleKind,
    OwnedDomain,
    StopReason,
)
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.validation import validate_config
from hostd.virt_type import VirtType

log = logging.getLogger(__name__)

State = pb.HostVm.State
ExitReason = pb.HostVm.ExitReason

_STATE_OF_EVENT: dict[LifecycleKind, State.ValueType] = {
    LifecycleKind.STARTED: pb.HostVm.STATE_RUNNING,
    LifecycleKind.RESUMED: pb.HostVm.STATE_RUNNING,
    LifecycleKind.SUSPENDED: pb.HostVm.STATE_PAUSED,
    LifecycleKind.SHUTDOWN: pb.HostVm.STATE_POWERING_DOWN,
    LifecycleKind.STOPPED: pb.HostVm.STATE_DOWN,
    LifecycleKind.CRASHED: pb.HostVm.STATE_DOWN,
}
_EXITS: dict[StopReason, tuple[ExitReason.ValueType, str]] = {
    StopReason.SHUTDOWN: (pb.HostVm.EXIT_REASON_SHUTDOWN, "the guest powered off"),
    StopReason.DESTROYED: (pb.HostVm.EXIT_REASON_DESTROYED, "destroyed"),
    StopReason.CRASHED: (pb.HostVm.EXIT_REASON_CRASHED, "the guest crashed"),
    StopReason.MIGRATED: (pb.HostVm.EXIT_REASON_MIGRATED, "migrated to another host"),
    StopReason.SAVED: (pb.HostVm.EXIT_REASON_SAVED, "saved to a file"),
    StopReason.FAILED: (pb.HostVm.EXIT_REASON_CRASHED, "the emulator failed"),
    StopReason.OTHER: (pb.HostVm.EXIT_REASON_UNSPECIFIED, "the domain stopped"),
}
_STATE_OF_DOMAIN: dict[DomainState, State.ValueType] = {
    DomainState.RUNNING: pb.HostVm.STATE_RUNNING,
    DomainState.OTHER: pb.HostVm.STATE_RUNNING,
    DomainState.PAUSED: pb.HostVm.STATE_PAUSED,
    DomainState.SHUTTING_DOWN: pb.HostVm.STATE_POWERING_DOWN,
}
_CHANNEL_STATES = frozenset(
    {pb.HostVm.STATE_RUNNING, pb.HostVm.STATE_PAUSED, pb.HostVm.STATE_POWERING_DOWN}
)


@dataclass(frozen=True)
class RunnerSettings:
    """What the runner needs to build and reach domains."""

    virt_type: VirtType
    layout: StateLayout
    channel_limits: ChannelLimits = field(default_factory=ChannelLimits)


@dataclass(eq=False)
class _Vm:
    config: pb.VmConfig
    state: State.ValueType = pb.HostVm.STATE_UNSPECIFIED
    exit_reason: ExitReason.ValueType = pb.HostVm.EXIT_REASON_UNSPECIFIED
    message: str = ""
    launched: bool = False
    """The domain was created (createXML returned) or found running."""
    destroying: bool = False
    """hostd is destroying the domain: QEMU's shutdown on the kill is no POWERING_DOWN."""
    start_task: asyncio.Task[None] | None = None
    channel_task: asyncio.Task[None] | None = None
    guest: vm_pb2.GuestInfo | None = None
    """The guest agent's last report, merged."""

    @property
    def vm_id(self) -> str:
        return self.config.vm_id

    def as_proto(self) -> pb.HostVm:
        return pb.HostVm(
            vm_id=self.vm_id, state=self.state, exit_reason=self.exit_reason, message=self.message
        )


def _lost_exit(vm: _Vm) -> tuple[ExitReason.ValueType, str]:
    if vm.destroying:
        return pb.HostVm.EXIT_REASON_DESTROYED, "destroyed"
    return pb.HostVm.EXIT_REASON_UNSPECIFIED, "the domain is gone; its stop event was lost"


class VmRegistry:
    def __init__(self, hypervisor: Hypervisor, journal: Journal, settings: RunnerSettings) -> None:
        self._hypervisor = hypervisor
        self._journal = journal
        self._settings = settings
        self._vms: dict[str, _Vm] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Adopts the running domains that carry hostd's metadata, then follows events.

        Events arriving meanwhile wait in the hypervisor's queue and are applied
        after; those already reflected in the listing change nothing.
        """
        for domain in await self._hypervisor.list_owned():
            self._adopt(domain)
        self._pump = asyncio.create_task(self._pump_events(), name="hostd-events")

    async def stop(self) -> None:
        """Stops following and talking to guests; the domains keep running."""
        tasks = [*self._tasks, *([self._pump] if self._pump else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pump = None

    def list(self) -> list[pb.HostVm]:
        """Every VM with its guest's last report."""
        out = []
        for vm in self._vms.values():
            proto = vm.as_proto()
            if vm.guest is not None:
                proto.guest.CopyFrom(vm.guest)
            out.append(proto)
        return out

    def get(self, vm_id: str) -> pb.HostVm:
        return self._lookup(vm_id).as_proto()

    async def create(self, config: pb.VmConfig) -> pb.HostVm:
        """Registers the VM and starts its domain in the background; returns at once."""
        if config.vm_id in self._vms:
            raise VmAlreadyExists(config.vm_id)
        validate_config(config)
        owned = pb.VmConfig()
        owned.CopyFrom(config)
        vm = _Vm(config=owned)
        self._vms[vm.vm_id] = vm
        self._transition(vm, pb.HostVm.STATE_WAIT_FOR_LAUNCH)
        vm.start_task = self._spawn(self._launch(vm), f"start {vm.vm_id}")
        return vm.as_proto()

    async def destroy(self, vm_id: str) -> None:
        """Powers the VM's domain off at once; the VM is DOWN and forgotten on return."""
        vm = self._lookup(vm_id)
        if vm.start_task is not None and not vm.start_task.done():
            await asyncio.wait([vm.start_task])
        if self._vms.get(vm_id) is not vm:
            return  # went down meanwhile
        vm.destroying = True
        try:
            await self._hypervisor.destroy(vm_id)
        except (DomainNotFound, DomainStateConflict) as exc:
            log.info("VM %s: no running domain to destroy (%s)", vm_id, exc)
        except VirtplaneError:
            vm.destroying = False
            raise
        if self._vms.get(vm_id) is vm:
            self._transition(vm, pb.HostVm.STATE_DOWN, pb.HostVm.EXIT_REASON_DESTROYED, "destroyed")

    def _lookup(self, vm_id: str) -> _Vm:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise VmNotFound(vm_id)
        return vm

    async def _launch(self, vm: _Vm) -> None:
        settings = self._settings
        try:
            xml = domxml.to_xml(build_domain(vm.config, settings.virt_type, settings.layout))
            await self._hypervisor.start_transient(xml)
        except VirtplaneError as exc:
            log.warning("VM %s failed to start: %s", vm.vm_id, exc)
            self._down_if_current(vm, pb.HostVm.EXIT_REASON_START_FAILED, str(exc))
            return
        except Exception as exc:  # a bug: the VM must still end DOWN
            log.exception("VM %s failed to start", vm.vm_id)
            self._down_if_current(vm, pb.HostVm.EXIT_REASON_START_FAILED, f"internal error: {exc}")
            return
        vm.launched = True
        log.info("VM %s: domain created", vm.vm_id)

    def _down_if_current(self, vm: _Vm, reason: ExitReason.ValueType, message: str) -> None:
        if self._vms.get(vm.vm_id) is vm:
            self._transition(vm, pb.HostVm.STATE_DOWN, reason, message)

    async def _pump_events(self) -> None:
        async for event in self._hypervisor.events():
            try:
                if isinstance(event, EventsLost):
                    await self._resync()
                else:
                    self._apply(event)
            except Exception:  # the pump outlives any one event
                log.exception("applying hypervisor event %s failed", event)

    def _apply(self, event: LifecycleEvent) -> None:
        vm = self._vms.get(event.uuid)
        state = _STATE_OF_EVENT.get(event.kind)
        if vm is None or state is None:
            return
        if vm.state == pb.HostVm.STATE_WAIT_FOR_LAUNCH and state != pb.HostVm.STATE_RUNNING:
            log.debug("VM %s: ignoring %s before its start", vm.vm_id, event.kind.name)
            return
        if vm.destroying and state == pb.HostVm.STATE_POWERING_DOWN:
            return
        if state == pb.HostVm.STATE_DOWN:
            reason, message = _EXITS[event.reason or StopReason.OTHER]
            self._transition(vm, state, reason, message)
        else:
            self._transition(vm, state)

    async def _resync(self) -> None:
        """Brings every VM in line with libvirt after events were lost."""
        domains = {d.uuid: d for d in await self._hypervisor.list_owned()}
        for vm in list(self._vms.values()):
            if not vm.launched:
                continue  # its start has not returned; createXML will tell
            domain = domains.get(vm.vm_id)
            if domain is None:
                self._transition(vm, pb.HostVm.STATE_DOWN, *_lost_exit(vm))
            else:
                self._transition(vm, _STATE_OF_DOMAIN.get(domain.state, pb.HostVm.STATE_RUNNING))
        for domain in domains.values():
            self._adopt(domain)

    def _adopt(self, domain: OwnedDomain) -> None:
        """Registers a running domain of this hostd's that no VM stands for (recovery).

        Domains another hostd created (another state directory) are left alone.
        """
        vm_id = domain.metadata.vm_id
        state = _STATE_OF_DOMAIN.get(domain.state)
        if vm_id in self._vms or state is None:
            return
        if vm_id != domain.uuid:
            log.warning("domain %s carries the id of VM %s; leaving it alone", domain.uuid, vm_id)
            return
        if domain.metadata.state_dir != str(self._settings.layout.root):
            log.debug(
                "domain %s belongs to the hostd of %s", domain.name, domain.metadata.state_dir
            )
            return
        config = pb.VmConfig()
        try:
            config.ParseFromString(domain.metadata.config)
        except DecodeError:
            log.warning("domain %s: unreadable configuration in its metadata", domain.uuid)
        config.vm_id = vm_id
        vm = _Vm(config=config, launched=True)
        self._vms[vm_id] = vm
        log.info("VM %s: adopted running domain %s", vm_id, domain.name)
        self._transition(vm, state, message="recovered")

    def _transition(
        self,
        vm: _Vm,
        state: State.ValueType,
        reason: ExitReason.ValueType = pb.HostVm.EXIT_REASON_UNSPECIFIED,
        message: str = "",
    ) -> None:
        if vm.state == state:
            return
        vm.state, vm.exit_reason, vm.message = state, reason, message
        self._journal.append_vm_state(vm.as_proto())
        if state == pb.HostVm.STATE_DOWN:
            self._forget(vm)
        elif state in _CHANNEL_STATES and vm.channel_task is None:
            self._open_channel(vm)

    def _forget(self, vm: _Vm) -> None:
        del self._vms[vm.vm_id]
        if vm.channel_task is not None:
            vm.channel_task.cancel()

    def _open_channel(self, vm: _Vm) -> None:
        channel = GuestChannel(
            vm.vm_id,
            self._settings.layout.channel_socket(vm.vm_id),
            self._settings.channel_limits,
            self._on_guest_report,
        )
        vm.channel_task = self._spawn(channel.run(), f"guest channel {vm.vm_id}")

    def _on_guest_report(self, vm_id: str, guest: vm_pb2.GuestInfo) -> None:
        vm = self._vms.get(vm_id)
        if vm is not None:
            vm.guest = guest
            self._journal.append_guest_report(vm_id, guest)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
